//! OpenAPI documents, generated from the code with utoipa, and Swagger UI to read them. Each
//! service describes its own routes; the gateway combines those it routes. Swagger UI's files are
//! vendored into the binary: nothing is downloaded at build time or at run time.

use axum::Router;
use utoipa::{
    Modify,
    openapi::{
        OpenApi,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};
use utoipa_swagger_ui::SwaggerUi;

/// Where every service serves its document.
pub const SPEC_PATH: &str = "/api-docs/openapi.json";

/// Where every service serves Swagger UI.
pub const UI_PATH: &str = "/swagger-ui";

/// The name of the security scheme routes refer to: the gateway's bearer JWT.
pub const BEARER: &str = "bearer";

/// Declares [`BEARER`]: `Authorization: Bearer <JWT from POST /auth/login>`. The services behind
/// the gateway see the caller only as the gateway vouches for them.
#[derive(Debug)]
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some("A token from the gateway's POST /auth/login.".to_owned());
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// `GET` [`SPEC_PATH`] and Swagger UI at [`UI_PATH`], showing `spec`.
pub fn routes<S: Clone + Send + Sync + 'static>(spec: OpenApi) -> Router<S> {
    SwaggerUi::new(UI_PATH).url(SPEC_PATH, spec).into()
}
