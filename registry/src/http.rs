//! Confluent's schema registry REST API, served at the root where clients built for Confluent's
//! registry expect it. The gateway routes `/api/schemas/**` here with the prefix removed.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    compat::Level,
    error::{CONTENT_TYPE, Error, Result},
    store::{Store, VersionSpec},
};

#[derive(Debug)]
pub struct AppState {
    pub store: Store,
}

type AppStateRef = State<Arc<AppState>>;

fn api() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_usages))
        .route("/schemas/types", get(|| async { reply(["AVRO"]) }))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
}

/// Schemas are small; a megabyte is far more than any real one.
const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn app(state: Arc<AppState>, tracer: oms_saga::trace::Tracer) -> Router {
    let routes = api().route("/health/ready", get(ready));
    oms_saga::server::standard(routes, MAX_BODY_BYTES, tracer).with_state(state)
}

/// A JSON reply with the registry's content type.
fn reply(body: impl Serialize) -> Response {
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Parses a JSON body whatever its content type: clients send `application/json`, Confluent's
/// own `application/vnd.schemaregistry.v1+json`, or nothing at all.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(e.to_string()))
}

type Params = Query<HashMap<String, String>>;

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A schema in a request. Unknown members (metadata, rule sets) are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaRequest {
    fn avro(bytes: &Bytes) -> Result<String> {
        let request: SchemaRequest = body(bytes)?;
        if let Some(kind) = request
            .schema_type
            .filter(|k| !k.eq_ignore_ascii_case("AVRO"))
        {
            return Err(Error::InvalidSchema(format!(
                "schema type {kind} is not supported; only AVRO"
            )));
        }
        if !request.references.is_empty() {
            return Err(Error::InvalidSchema(
                "schema references are not supported".into(),
            ));
        }
        Ok(request.schema)
    }
}

async fn subjects(State(state): AppStateRef, Query(params): Params) -> Result<Response> {
    Ok(reply(state.store.subjects(flag(&params, "deleted")).await?))
}

async fn versions(
    State(state): AppStateRef,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response> {
    Ok(reply(
        state
            .store
            .versions(&subject, flag(&params, "deleted"))
            .await?,
    ))
}

async fn register(
    State(state): AppStateRef,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let schema = SchemaRequest::avro(&bytes)?;
    let id = state.store.register(&subject, &schema).await?;
    Ok(reply(json!({ "id": id })))
}

async fn version(
    State(state): AppStateRef,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response> {
    Ok(reply(
        state
            .store
            .version(&subject, VersionSpec::parse(&version)?)
            .await?,
    ))
}

async fn version_schema(
    State(state): AppStateRef,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response> {
    let found = state
        .store
        .version(&subject, VersionSpec::parse(&version)?)
        .await?;
    let raw: Value =
        serde_json::from_str(&found.schema).map_err(|e| Error::InvalidSchema(e.to_string()))?;
    Ok(reply(raw))
}

async fn delete_version(
    State(state): AppStateRef,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response> {
    let spec = VersionSpec::parse(&version)?;
    Ok(reply(
        state
            .store
            .delete_version(&subject, spec, flag(&params, "permanent"))
            .await?,
    ))
}

async fn lookup(
    State(state): AppStateRef,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let schema = SchemaRequest::avro(&bytes)?;
    Ok(reply(state.store.lookup(&subject, &schema).await?))
}

async fn delete_subject(
    State(state): AppStateRef,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response> {
    Ok(reply(
        state
            .store
            .delete_subject(&subject, flag(&params, "permanent"))
            .await?,
    ))
}

fn parse_id(id: &str) -> Result<i32> {
    id.parse().map_err(|_| Error::SchemaNotFound(id.to_owned()))
}

async fn schema_by_id(State(state): AppStateRef, Path(id): Path<String>) -> Result<Response> {
    Ok(reply(
        json!({ "schema": state.store.schema(parse_id(&id)?).await? }),
    ))
}

async fn schema_usages(State(state): AppStateRef, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    state.store.schema(id).await?;
    let usages: Vec<Value> = state
        .store
        .usages(id)
        .await?
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(reply(usages))
}

async fn compatibility(
    State(state): AppStateRef,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    bytes: Bytes,
) -> Result<Response> {
    let schema = SchemaRequest::avro(&bytes)?;
    let problems = state
        .store
        .compatible(&subject, VersionSpec::parse(&version)?, &schema)
        .await?;
    let mut answer = json!({ "is_compatible": problems.is_empty() });
    if flag(&params, "verbose") {
        answer["messages"] = json!(problems);
    }
    Ok(reply(answer))
}

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn level_of(bytes: &Bytes) -> Result<Level> {
    let request: ConfigRequest = body(bytes)?;
    Level::parse(&request.compatibility).ok_or(Error::InvalidLevel)
}

async fn global_config(State(state): AppStateRef) -> Result<Response> {
    let level = state.store.level(None).await?.unwrap_or(Level::DEFAULT);
    Ok(reply(json!({ "compatibilityLevel": level })))
}

async fn set_global_config(State(state): AppStateRef, bytes: Bytes) -> Result<Response> {
    let level = level_of(&bytes)?;
    state.store.set_level(None, level).await?;
    Ok(reply(json!({ "compatibility": level })))
}

async fn subject_config(
    State(state): AppStateRef,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response> {
    let level = match state.store.level(Some(&subject)).await? {
        Some(level) => level,
        None if flag(&params, "defaultToGlobal") => {
            state.store.level(None).await?.unwrap_or(Level::DEFAULT)
        }
        None => return Err(Error::SubjectConfigNotFound(subject)),
    };
    Ok(reply(json!({ "compatibilityLevel": level })))
}

async fn set_subject_config(
    State(state): AppStateRef,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let level = level_of(&bytes)?;
    state.store.set_level(Some(&subject), level).await?;
    Ok(reply(json!({ "compatibility": level })))
}

async fn delete_subject_config(
    State(state): AppStateRef,
    Path(subject): Path<String>,
) -> Result<Response> {
    let level = state.store.delete_level(&subject).await?;
    Ok(reply(json!({ "compatibilityLevel": level })))
}

async fn ready(State(state): AppStateRef) -> Response {
    oms_saga::server::Readiness::database(state.store.pool().clone())
        .respond(Default::default())
        .await
}
