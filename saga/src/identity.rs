//! The contract between the gateway and the services behind it: after checking a token, the
//! gateway says who the caller is in these headers, having removed any the client sent. The
//! services trust them, which is why they listen only where the gateway alone can reach them.

use axum::{extract::FromRequestParts, http::request::Parts};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::Problem;

/// Every identity header starts with this; the gateway strips all such headers from clients.
pub const HEADER_PREFIX: &str = "x-oms-";
pub const ROLE_HEADER: &str = "x-oms-role";
pub const CUSTOMER_HEADER: &str = "x-oms-customer-id";
pub const SUBJECT_HEADER: &str = "x-oms-subject";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling, as the gateway vouches in the identity headers. A request without them comes
/// from inside (a tool or another service) and is not scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Internal,
    Admin,
    Customer(Uuid),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        match header(ROLE_HEADER)
            .map(|r| Role::parse(r).ok_or_else(|| Problem::forbidden("Unknown role")))
        {
            None => Ok(Caller::Internal),
            Some(Err(problem)) => Err(problem),
            Some(Ok(Role::Admin)) => Ok(Caller::Admin),
            Some(Ok(Role::User)) => header(CUSTOMER_HEADER)
                .and_then(|c| Uuid::parse_str(c).ok())
                .map(Caller::Customer)
                .ok_or_else(|| Problem::forbidden("The caller has no customer id")),
        }
    }
}

impl Caller {
    /// Whether the caller may see what belongs to `customer_id`.
    pub fn may_see(self, customer_id: Uuid) -> bool {
        match self {
            Caller::Internal | Caller::Admin => true,
            Caller::Customer(own) => own == customer_id,
        }
    }

    /// Whose things a listing covers: a customer's own, whether or not they name themselves
    /// (naming someone else is refused); for admins and tools, whoever they ask for, or all.
    pub fn scope(self, asked: Option<Uuid>) -> Result<Option<Uuid>, Problem> {
        match (self, asked) {
            (Caller::Customer(own), Some(asked)) if asked != own => Err(Problem::forbidden(
                "Customers can only list what is their own",
            )),
            (Caller::Customer(own), _) => Ok(Some(own)),
            (_, asked) => Ok(asked),
        }
    }

    /// Refuses a customer: the action is for admins (and tools inside).
    pub fn require_admin(self) -> Result<(), Problem> {
        match self {
            Caller::Internal | Caller::Admin => Ok(()),
            Caller::Customer(_) => Err(Problem::forbidden("This action is for admins")),
        }
    }
}
