//! The notification service's HTTP side: a customer's notifications, newest first.

use std::sync::Arc;

use axum::{Router, extract::State, routing::get};
use oms_saga::{
    identity::Caller,
    page::{self, Page},
    problem::{Json, Problem, Query},
};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::send::Notification;

#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
}

type AppStateRef = State<Arc<AppState>>;

pub fn app(state: Arc<AppState>, max_body_bytes: usize, tracer: oms_saga::trace::Tracer) -> Router {
    let routes = Router::new().route("/api/notifications", get(list));
    oms_saga::server::standard(routes, max_body_bytes, tracer).with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListParams {
    customer_id: Option<Uuid>,
    order_id: Option<Uuid>,
    /// Notifications older than this one (ids are time-ordered).
    after: Option<Uuid>,
    limit: Option<i64>,
}

async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Notification>>, Problem> {
    let customer_id = caller.scope(params.customer_id)?;
    let limit = page::limit(params.limit)?;
    let items: Vec<Notification> = sqlx::query_as(
        "SELECT id, event_id, order_id, customer_id, kind, channel, message, state, created_at, \
         sent_at FROM notifications \
         WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::uuid IS NULL OR order_id = $2) \
           AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(customer_id)
    .bind(params.order_id)
    .bind(params.after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "notifications database failed");
        Problem::unavailable("The notifications database is unavailable; retry later.")
    })?;
    Ok(Json(Page::of(items, limit, |n| n.id)))
}
