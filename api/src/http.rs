//! The order API's routes. Handlers parse, call the store, and map results; the rules live in
//! [`crate::domain`] and the persistence in [`crate::store`].

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, request::Parts},
    response::{IntoResponse, Response, sse},
    routing::{get, post, put},
};
use oms_saga::{
    docs::BearerAuth,
    identity::{Caller, SUBJECT_HEADER},
    page::{self, Page},
    problem::{Json, Path, Problem, Query},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    availability::{Availability, Check},
    cache::OrderCache,
    domain::{self, OrderRequest, OrderStatus, PlaceOrder},
    error::{Error, Result},
    prices,
    store::{Changed, IdempotencyKey, ListQuery, Order, Origin, Store},
    timeline,
};
use futures::StreamExt as _;

/// Who made the request and in which trace, for the events it causes.
#[derive(Debug)]
pub struct RequestOrigin(pub Origin);

impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(RequestOrigin(Origin {
            actor: header(SUBJECT_HEADER),
            traceparent: header(oms_saga::event::header::TRACEPARENT),
            cause: None,
        }))
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub cache: OrderCache,
    pub availability: Availability,
    /// What `/health/ready` checks: the database and the broker.
    pub ready: oms_saga::server::Readiness,
    /// How often a live event stream looks for new events.
    pub timeline_poll: std::time::Duration,
}

/// The order API's OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "OMS order API",
        description = "Places orders, serves them, and moves them through their states. Reached \
                       through the gateway, which checks the caller's token."
    ),
    paths(
        place_order,
        list_orders,
        get_order,
        change_status,
        cancel_order,
        order_timeline,
        saga_events
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "orders", description = "Orders and their saga"))
)]
#[derive(Debug)]
pub struct ApiDoc;

pub fn app(state: Arc<AppState>, max_body_bytes: usize, tracer: oms_saga::trace::Tracer) -> Router {
    use utoipa::OpenApi as _;
    let routes = Router::new()
        .route("/api/orders", post(place_order).get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/timeline", get(order_timeline))
        .route("/api/orders/events", get(saga_events))
        .route("/api/orders/{id}/status", put(change_status))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .route("/health/ready", get(ready))
        .merge(oms_saga::docs::routes(ApiDoc::openapi()));
    oms_saga::server::standard(routes, max_body_bytes, tracer).with_state(state)
}

/// The client's Idempotency-Key, with a digest of what it asked for (before pricing, so that a
/// retry after a price change is the same request).
fn idempotency_key(
    headers: &HeaderMap,
    customer_id: Uuid,
    order: &OrderRequest,
) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| {
            Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    let canonical = serde_json::to_vec(&(customer_id, order)).map_err(|_| Problem::internal())?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        request_hash: Sha256::digest(canonical).to_vec(),
    }))
}

/// Places an order at the shop's prices, after asking the inventory whether it can be served
/// (when it answers). The body names products, quantities and the payment method; the server
/// prices each line from the catalog and computes the total.
#[utoipa::path(post, path = "/api/orders", tag = "orders",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Retrying with the same key returns the first answer, never a second order")),
    responses(
        (status = 201, description = "Placed; with a replayed Idempotency-Key, placed before \
            (header `Idempotent-Replayed: true`)", body = Placed),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Placing for another customer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock, or the Idempotency-Key was used for another order", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named in `errors`: a price or total in \
            the body (the server sets them), an unknown or inactive product, lines in more than one \
            currency, no payment method", body = Problem, content_type = "application/problem+json"),
    ))]
async fn place_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestOrigin(origin): RequestOrigin,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> Result<Response, Response> {
    let request = OrderRequest::parse(request).map_err(|e| Error::Validation(e).into_response())?;
    let customer_id = customer(caller, request.customer_id).map_err(IntoResponse::into_response)?;
    let key =
        idempotency_key(&headers, customer_id, &request).map_err(IntoResponse::into_response)?;
    // A retried request gets its first answer, whatever the stock or the prices say now.
    if let Some(key) = &key
        && let Some(first) = state
            .store
            .replay(customer_id, key)
            .await
            .map_err(IntoResponse::into_response)?
    {
        return Ok(placed(first, None, true));
    }
    let products: Vec<&str> = request.items.iter().map(|(p, _)| p.as_str()).collect();
    let prices = prices::lookup(state.store.pool(), &products)
        .await
        .map_err(|e| Error::Database(e).into_response())?;
    let order = request
        .price(customer_id, &prices)
        .map_err(|e| Error::Validation(e).into_response())?;
    let check = state
        .availability
        .check(&order.items, origin.traceparent.as_deref())
        .await;
    let skipped = match check {
        Check::Short(short) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "insufficient-stock",
                "Not enough stock",
            )
            .detail("The inventory cannot serve every line of this order right now.")
            .with("short", short)
            .into_response());
        }
        Check::Available => None,
        Check::Skipped(why) => Some(why),
    };
    let (order, replayed) = state
        .store
        .place(&order, key.as_ref(), &origin)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(placed(order, skipped, replayed))
}

/// Whose order it is: a customer's own (naming another is refused); an admin or a tool inside
/// must name the customer.
fn customer(caller: Caller, named: Option<Uuid>) -> Result<Uuid> {
    match (caller, named) {
        (Caller::Customer(own), Some(named)) if named != own => Err(Error::Forbidden(
            "Orders can only be placed for your own customer id",
        )),
        (Caller::Customer(own), _) => Ok(own),
        (_, Some(named)) => Ok(named),
        (_, None) => Err(Error::Validation(vec![domain::FieldError::new(
            "customerId",
            "required when an admin places an order: whose order it is",
        )])),
    }
}

/// A placed order, saying whether its stock was checked first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Placed {
    #[serde(flatten)]
    order: Order,
    availability: AvailabilityNote,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AvailabilityNote {
    checked: bool,
    /// Why it was not: the order was accepted unchecked, and the saga decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped_because: Option<&'static str>,
}

fn placed(order: Order, skipped: Option<&'static str>, replayed: bool) -> Response {
    let availability = AvailabilityNote {
        checked: skipped.is_none() && !replayed,
        skipped_because: skipped.or(replayed.then_some("a replay of an earlier request")),
    };
    let mut response = (
        StatusCode::CREATED,
        Json(Placed {
            order,
            availability,
        }),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// One order, from the cache when it holds it.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Order>> {
    let order = match state.cache.get(id).await {
        Some(order) => order,
        None => {
            let order = state.store.get(id).await?.ok_or(Error::NotFound(id))?;
            state.cache.put(&order).await;
            order
        }
    };
    // Another customer's order is reported as missing, so ids cannot be probed.
    if caller.may_see(order.customer_id) {
        Ok(Json(order.seen_by(caller)))
    } else {
        Err(Error::NotFound(id))
    }
}

/// Every event of the order's saga, from every topic, in the order they happened.
#[utoipa::path(get, path = "/api/orders/{id}/timeline", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The saga's events, compensations marked", body = Vec<timeline::Entry>),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn order_timeline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<timeline::Entry>>> {
    let order = state.store.get(id).await?.ok_or(Error::NotFound(id))?;
    if !caller.may_see(order.customer_id) {
        return Err(Error::NotFound(id));
    }
    Ok(Json(timeline::of_order(state.store.pool(), id).await?))
}

/// The saga events of every order as they are recorded, as server-sent events (`event: saga`,
/// `id`: the entry's `seq`), for admins. A client that reconnects with `Last-Event-ID` resumes
/// after that event; a new one starts with what comes next.
#[utoipa::path(get, path = "/api/orders/events", tag = "orders",
    params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "A `text/event-stream` of timeline entries", content_type = "text/event-stream", body = timeline::Entry),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn saga_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    caller
        .require_admin()
        .map_err(|_| Error::Forbidden("The event stream is for admins"))?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let start = match resume {
        Some(seq) => seq,
        None => timeline::last_seq(state.store.pool()).await?,
    };
    let batches = futures::stream::unfold(start, move |last| {
        let state = state.clone();
        async move {
            loop {
                match timeline::after(state.store.pool(), last, 100).await {
                    Ok(entries) if !entries.is_empty() => {
                        let last = entries.last().map_or(last, |e| e.seq);
                        return Some((futures::stream::iter(entries), last));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the timeline failed; retrying"),
                }
                tokio::time::sleep(state.timeline_poll).await;
            }
        }
    });
    let events = batches.flatten().map(|entry| {
        sse::Event::default()
            .event("saga")
            .id(entry.seq.to_string())
            .json_data(&entry)
    });
    Ok(sse::Sse::new(events)
        .keep_alive(sse::KeepAlive::default())
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// An admin's filter; a customer sees only their own orders.
    customer_id: Option<Uuid>,
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
    /// The `nextAfter` of the page before.
    after: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// Orders, newest first, in keyset pages.
#[utoipa::path(get, path = "/api/orders", tag = "orders",
    params(ListParams),
    responses(
        (status = 200, description = "A page of orders", body = Page<Order>),
        (status = 400, description = "A bad filter or page size", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another customer's orders", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_orders(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Order>>, Response> {
    let customer_id = caller
        .scope(params.customer_id)
        .map_err(IntoResponse::into_response)?;
    let status = params
        .status
        .map(|s| s.parse::<OrderStatus>())
        .transpose()
        .map_err(|e| Problem::bad_request(e).into_response())?;
    let limit = page::limit(params.limit).map_err(IntoResponse::into_response)?;
    let query = ListQuery {
        customer_id,
        status,
        after: params.after,
        limit,
    };
    let items = state
        .store
        .list(&query)
        .await
        .map_err(IntoResponse::into_response)?;
    let items = items.into_iter().map(|o| o.seen_by(caller)).collect();
    Ok(Json(Page::of(items, limit, |o| o.id)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    #[schema(value_type = OrderStatus)]
    status: String,
    reason: Option<String>,
}

/// Moves an order to another status, if the state machine allows it (admins only). SHIPPED
/// and REFUNDED take the payment step first: shipping a PAID order captures its payment and
/// refunding a SHIPPED or COMPLETED one refunds the capture in full, so those answer 202 with
/// the order where it is; it moves when the payment provider has done it (a failed capture
/// leaves it PAID, with `paymentIssue` saying why). Follow it on the order or its timeline.
#[utoipa::path(put, path = "/api/orders/{id}/status", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The order, moved", body = Order),
        (status = 202, description = "The capture or refund is asked of the payment step; the order, not yet moved", body = Order),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The state machine forbids this move", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown status, or a bad reason", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestOrigin(origin): RequestOrigin,
    Path(id): Path<Uuid>,
    Json(change): Json<StatusChange>,
) -> Result<(StatusCode, Json<Order>)> {
    caller
        .require_admin()
        .map_err(|_| Error::Forbidden("This action is for admins"))?;
    let to: OrderStatus = change.status.parse().map_err(|message| {
        Error::Validation(vec![domain::FieldError {
            field: "status".into(),
            message,
        }])
    })?;
    let reason = domain::parse_reason(change.reason).map_err(|e| Error::Validation(vec![e]))?;
    match state
        .store
        .change_status_as_admin(id, to, reason, &origin)
        .await?
    {
        Changed::Moved(order) => {
            state.cache.put(&order).await;
            Ok((StatusCode::OK, Json(order.seen_by(caller))))
        }
        Changed::Requested(order) => Ok((StatusCode::ACCEPTED, Json(order.seen_by(caller)))),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Cancel {
    reason: Option<String>,
}

/// Cancels an order, releasing what it reserved (admins only).
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    request_body = Cancel,
    responses(
        (status = 200, description = "The order, cancelled", body = Order),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token (at the gateway)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already completed or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason given", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_order(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RequestOrigin(origin): RequestOrigin,
    Path(id): Path<Uuid>,
    Json(cancel): Json<Cancel>,
) -> Result<Json<Order>> {
    caller
        .require_admin()
        .map_err(|_| Error::Forbidden("This action is for admins"))?;
    let reason = domain::parse_reason(cancel.reason)
        .map_err(|e| Error::Validation(vec![e]))?
        .ok_or_else(|| {
            Error::Validation(vec![domain::FieldError {
                field: "reason".into(),
                message: "a cancellation needs a reason".into(),
            }])
        })?;
    let order = state
        .store
        .change_status(id, OrderStatus::Cancelled, Some(reason), &origin)
        .await?;
    state.cache.put(&order).await;
    Ok(Json(order))
}

/// Ready when the database and the broker answer; the body says which one does not.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    // The inventory is not needed to be ready (orders are accepted unchecked); its breaker is
    // shown for operators.
    let breaker = state.availability.breaker.state().as_str();
    let extra = serde_json::Map::from_iter([("inventoryBreaker".to_owned(), breaker.into())]);
    state.ready.respond(extra).await
}
