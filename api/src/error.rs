use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use oms_saga::problem::Problem;
use uuid::Uuid;

use crate::domain::{FieldError, IllegalTransition};

/// Everything the order service can refuse or fail with. [`IntoResponse`] is the one place that
/// turns it into problem+json; database text never reaches a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldError>),

    #[error("order {0} not found")]
    NotFound(Uuid),

    #[error("forbidden: {0}")]
    Forbidden(&'static str),

    #[error("order {order_id}: cannot move from {} to {}", .transition.from, .transition.to)]
    IllegalTransition {
        order_id: Uuid,
        transition: IllegalTransition,
    },

    #[error("idempotency key {key:?} was used with a different request")]
    IdempotencyKeyReused { key: String },

    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    #[error(transparent)]
    Saga(#[from] oms_saga::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the order database could not be reached, by the API's own statements or the
    /// shared outbox's.
    pub fn is_database_unavailable(&self) -> bool {
        match self {
            Error::Database(e) | Error::Saga(oms_saga::Error::Database(e)) => {
                oms_saga::database_unavailable(e)
            }
            _ => false,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Validation(errors) => Problem::invalid(errors),
            Error::NotFound(id) => Problem::not_found(format!("No order {id}")),
            Error::Forbidden(why) => Problem::forbidden(*why),
            Error::IllegalTransition {
                order_id,
                transition,
            } => Problem::new(
                StatusCode::CONFLICT,
                "illegal-transition",
                "The order cannot make that move",
            )
            .detail(format!(
                "Order {order_id} is {} and cannot become {}",
                transition.from, transition.to
            ))
            .with("currentStatus", transition.from)
            .with("requestedStatus", transition.to),
            Error::IdempotencyKeyReused { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "The Idempotency-Key was already used with a different request",
            ),
            _ if self.is_database_unavailable() => {
                tracing::error!(error = %self, "database unavailable");
                Problem::unavailable("The order database is unavailable; retry later.")
            }
            Error::Database(_) | Error::Saga(_) => {
                tracing::error!(error = %self, "request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_whichever_statement_met_it() {
        let own = Error::Database(sqlx::Error::PoolTimedOut);
        let outbox = Error::Saga(oms_saga::Error::Database(sqlx::Error::PoolTimedOut));
        let bad_statement = Error::Saga(oms_saga::Error::Database(sqlx::Error::RowNotFound));
        assert!(own.is_database_unavailable() && outbox.is_database_unavailable());
        assert!(!bad_statement.is_database_unavailable());
        assert_eq!(
            outbox.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            bad_statement.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
