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
    event::{ShortLine, is_product_id},
    identity::Caller,
    problem::{Json, Path, Problem},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::stock::{self, Stock};

#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
}

type AppStateRef = State<Arc<AppState>>;

/// Database failures answer 503 and are logged; their text never reaches a client.
fn unavailable(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "inventory database failed");
    Problem::unavailable("The inventory database is unavailable; retry later.")
}

pub fn app(state: Arc<AppState>, max_body_bytes: usize, tracer: oms_saga::trace::Tracer) -> Router {
    let routes = Router::new()
        .route("/api/inventory", get(list))
        .route("/api/inventory/availability", post(availability))
        .route("/api/inventory/{product_id}", get(one).put(set));
    oms_saga::server::standard(routes, max_body_bytes, tracer).with_state(state)
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    available: u32,
}

async fn set(
    State(state): AppStateRef,
    caller: Caller,
    Path(product_id): Path<String>,
    Json(body): Json<SetStock>,
) -> Result<Json<Stock>, Problem> {
    caller.require_admin()?;
    let product_id = product(&product_id)?;
    stock::set_available(&state.pool, product_id, body.available)
        .await
        .map(Json)
        .map_err(unavailable)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wanted {
    product_id: String,
    quantity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityRequest {
    items: Vec<Wanted>,
}

#[derive(Debug, Serialize)]
struct AvailabilityAnswer {
    available: bool,
    /// The lines that cannot be served right now.
    short: Vec<ShortLine>,
}

/// Whether the lines could be reserved right now. Only a hint: the saga decides.
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
