//! The notification service's HTTP side: a customer's notifications, newest first.

use std::sync::Arc;

use axum::{Router, extract::State, routing::get};
use oms_saga::{
    docs::BearerAuth,
    identity::Caller,
    page::{self, Page},
    plan::PlannedPerCall,
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

/// The notification service's OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "OMS notifications",
        description = "What customers were told about their orders, and whether it went out."
    ),
    paths(list),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "notifications", description = "Customers' notifications"))
)]
pub struct NotificationsDoc;

pub fn app(state: Arc<AppState>, max_body_bytes: usize, tracer: oms_saga::trace::Tracer) -> Router {
    use utoipa::OpenApi as _;
    let routes = Router::new()
        .route("/api/notifications", get(list))
        .merge(oms_saga::docs::routes(NotificationsDoc::openapi()));
    oms_saga::server::standard(routes, max_body_bytes, tracer).with_state(state)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// An admin's filter; a customer sees only their own.
    customer_id: Option<Uuid>,
    /// Only those about this order.
    order_id: Option<Uuid>,
    /// Notifications older than this one (ids are time-ordered).
    after: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// Notifications, newest first, in keyset pages.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(ListParams),
    responses(
        (status = 200, description = "A page of notifications", body = Page<Notification>),
        (status = 400, description = "A bad filter or page size", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another customer's notifications", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Notification>>, Problem> {
    let customer_id = caller.scope(params.customer_id)?;
    let limit = page::limit(params.limit)?;
    let items: Vec<Notification> = sqlx::query_as(
        "SELECT id, event_id, order_id, customer_id, kind, channel, message, audience, state, \
         created_at, sent_at FROM notifications \
         WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::uuid IS NULL OR order_id = $2) \
           AND ($3::uuid IS NULL OR id < $3) AND ($5::text IS NULL OR audience = $5) \
         ORDER BY id DESC LIMIT $4",
    )
    .planned_per_call()
    .bind(customer_id)
    .bind(params.order_id)
    .bind(params.after)
    .bind(limit)
    // What the admins are told is theirs alone.
    .bind(matches!(caller, Caller::Customer(_)).then_some("CUSTOMER"))
    .fetch_all(&state.pool)
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "notifications database failed");
        Problem::unavailable("The notifications database is unavailable; retry later.")
    })?;
    Ok(Json(Page::of(items, limit, |n| n.id)))
}
