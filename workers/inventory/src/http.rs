//! The inventory's HTTP side: stock levels, setting them (admin), and an availability check the
//! order service asks before accepting an order.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use oms_saga::{
    docs::BearerAuth,
    event::{ShortLine, is_product_id},
    identity::Caller,
    problem::{Json, Path, Problem},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{
    catalog::{self, Product, ProductChange, SetProduct},
    stock::{self, Stock},
};

#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
    /// Where the catalog's changes are written: the service's own topic.
    pub topic: String,
}

type AppStateRef = State<Arc<AppState>>;

/// Database failures answer 503 and are logged; their text never reaches a client.
fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "inventory database failed");
    Problem::unavailable("The inventory database is unavailable; retry later.")
}

/// The inventory's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "OMS inventory",
        description = "The catalog (each product's name, price and whether it is for sale) and the \
                       stock per product: what is available, reserved and sold. The saga reserves \
                       and releases stock; admins set prices and what is available."
    ),
    paths(list, one, set, availability, products, product_one, set_product),
    components(schemas(Problem, oms_saga::problem::FieldError)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "inventory", description = "Stock levels"),
        (name = "catalog", description = "Products and their prices")
    )
)]
pub struct InventoryDoc;

pub fn app(state: Arc<AppState>, max_body_bytes: usize, tracer: oms_saga::trace::Tracer) -> Router {
    use utoipa::OpenApi as _;
    let routes = Router::new()
        .route("/api/inventory", get(list))
        .route("/api/inventory/availability", post(availability))
        .route("/api/inventory/{product_id}", get(one).put(set))
        .route("/api/products", get(products))
        .route(
            "/api/products/{product_id}",
            get(product_one).put(set_product),
        )
        .merge(oms_saga::docs::routes(InventoryDoc::openapi()));
    oms_saga::server::standard(routes, max_body_bytes, tracer).with_state(state)
}

/// Every product's stock.
#[utoipa::path(get, path = "/api/inventory", tag = "inventory",
    responses(
        (status = 200, description = "Stock per product", body = Vec<Stock>),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(State(state): AppStateRef) -> Result<Json<Vec<Stock>>, Problem> {
    stock::list(&state.pool)
        .await
        .map(Json)
        .map_err(unavailable)
}

fn product(product_id: &str) -> Result<&str, Problem> {
    if is_product_id(product_id) {
        Ok(product_id)
    } else {
        Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid product id",
        )
        .detail("A product id is 1 to 64 letters, digits, '-', '_' or '.'"))
    }
}

/// One product's stock.
#[utoipa::path(get, path = "/api/inventory/{product_id}", tag = "inventory",
    params(("product_id" = String, Path, description = "1 to 64 letters, digits, '-', '_' or '.'")),
    responses(
        (status = 200, description = "Its stock", body = Stock),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a product id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn one(
    State(state): AppStateRef,
    Path(product_id): Path<String>,
) -> Result<Json<Stock>, Problem> {
    let product_id = product(&product_id)?;
    stock::get(&state.pool, product_id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("No product {product_id}")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetStock {
    /// At most 2147483647; what the product has ever taken in must stay within it too.
    #[schema(maximum = 2147483647)]
    available: u32,
}

/// A count the stock columns cannot hold.
fn out_of_range() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        "Stock count out of range",
    )
    .detail("available, and all a product has ever taken in, are at most 2147483647")
}

/// Sets how many of a product are available (admins only); reserved and sold stay.
#[utoipa::path(put, path = "/api/inventory/{product_id}", tag = "inventory",
    params(("product_id" = String, Path, description = "1 to 64 letters, digits, '-', '_' or '.'")),
    request_body = SetStock,
    responses(
        (status = 200, description = "Its stock now", body = Stock),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a product id, or a bad count", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set(
    State(state): AppStateRef,
    caller: Caller,
    Path(product_id): Path<String>,
    Json(body): Json<SetStock>,
) -> Result<Json<Stock>, Problem> {
    caller.require_admin()?;
    let product_id = product(&product_id)?;
    let available = i32::try_from(body.available).map_err(|_| out_of_range())?;
    stock::set_available(&state.pool, product_id, available)
        .await
        .map(Json)
        .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
            // numeric_value_out_of_range: `received` would overflow.
            Some(code) if code == "22003" => out_of_range(),
            _ => unavailable(e),
        })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wanted {
    product_id: String,
    quantity: u32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AvailabilityRequest {
    items: Vec<Wanted>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AvailabilityAnswer {
    available: bool,
    /// The lines that cannot be served right now.
    short: Vec<ShortLine>,
}

/// Whether the lines could be reserved right now. Only a hint: the saga decides.
#[utoipa::path(post, path = "/api/inventory/availability", tag = "inventory",
    request_body = AvailabilityRequest,
    responses(
        (status = 200, description = "Whether every line can be served, and which cannot", body = AvailabilityAnswer),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a product id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn availability(
    State(state): AppStateRef,
    Json(request): Json<AvailabilityRequest>,
) -> Result<Json<AvailabilityAnswer>, Problem> {
    for line in &request.items {
        product(&line.product_id)?;
    }
    let wanted = stock::wanted(
        request
            .items
            .into_iter()
            .map(|l| (l.product_id, l.quantity)),
    );
    let mut short = Vec::new();
    for (product_id, requested) in wanted {
        let have = stock::get(&state.pool, &product_id)
            .await
            .map_err(unavailable)?
            .map_or(0, |s| s.available.max(0) as u32);
        if have < requested {
            short.push(ShortLine {
                product_id,
                requested,
                available: have,
            });
        }
    }
    Ok(Json(AvailabilityAnswer {
        available: short.is_empty(),
        short,
    }))
}

/// Every product in the catalog, active or not.
#[utoipa::path(get, path = "/api/products", tag = "catalog",
    responses(
        (status = 200, description = "The catalog, by product id", body = Vec<Product>),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn products(State(state): AppStateRef) -> Result<Json<Vec<Product>>, Problem> {
    catalog::list(&state.pool)
        .await
        .map(Json)
        .map_err(unavailable)
}

/// One product of the catalog.
#[utoipa::path(get, path = "/api/products/{product_id}", tag = "catalog",
    params(("product_id" = String, Path, description = "1 to 64 letters, digits, '-', '_' or '.'")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a product id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn product_one(
    State(state): AppStateRef,
    Path(product_id): Path<String>,
) -> Result<Json<Product>, Problem> {
    let product_id = product(&product_id)?;
    catalog::get(&state.pool, product_id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("No product {product_id}")))
}

/// Creates a product or changes its name, price or whether it is for sale (admins only). Orders
/// already placed keep the price they were placed at; stock is set apart, under
/// `/api/inventory/{product_id}`.
#[utoipa::path(put, path = "/api/products/{product_id}", tag = "catalog",
    params(("product_id" = String, Path, description = "1 to 64 letters, digits, '-', '_' or '.'")),
    request_body = SetProduct,
    responses(
        (status = 200, description = "The product now", body = Product),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a product id, or invalid fields, each named in `errors`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_product(
    State(state): AppStateRef,
    caller: Caller,
    Path(product_id): Path<String>,
    Json(body): Json<SetProduct>,
) -> Result<Json<Product>, Problem> {
    caller.require_admin()?;
    let product_id = product(&product_id)?;
    let change = ProductChange::parse(body).map_err(|errors| Problem::invalid(&errors))?;
    let mut tx = state.pool.begin().await.map_err(unavailable)?;
    let product = catalog::set(&mut tx, &state.topic, product_id, &change)
        .await
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(Json(product))
}
