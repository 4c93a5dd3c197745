//! The contract between the gateway and the services behind it: after checking a token, the
//! gateway says who the caller is in these headers, having removed any the client sent. The
//! services trust them, which is why they listen only where the gateway alone can reach them.

use serde::{Deserialize, Serialize};

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
