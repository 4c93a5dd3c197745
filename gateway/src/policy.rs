//! Which routes need which role. The services check again (defence in depth), but the gateway
//! refuses first, so a user's admin request never reaches a service.

use axum::http::Method;

/// Whether `method path` is an admin action.
pub fn requires_admin(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match segments.as_slice() {
        ["", "api", "orders", _, "status"] => method == Method::PUT,
        ["", "api", "orders", _, "cancel"] => method == Method::POST,
        // Every saga's events, live.
        ["", "api", "orders", "events"] => true,
        ["", "api", "inventory", product] => method == Method::PUT && *product != "availability",
        ["", "api", "products", _] => method == Method::PUT,
        // Anyone logged in may browse schemas (and look one up, or test compatibility); changing
        // the registry (registering, config, deleting) is for admins.
        ["", "api", "schemas", "subjects", _, "versions"] => method == Method::POST,
        ["", "api", "schemas", ..] => method == Method::PUT || method == Method::DELETE,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_and_cancellations_are_for_admins() {
        assert!(requires_admin(&Method::PUT, "/api/orders/1/status"));
        assert!(requires_admin(&Method::POST, "/api/orders/1/cancel/"));
        assert!(requires_admin(&Method::GET, "/api/orders/events"));
        assert!(!requires_admin(&Method::GET, "/api/orders/1/timeline"));
    }

    #[test]
    fn browsing_the_catalog_is_for_everyone_and_pricing_for_admins() {
        assert!(requires_admin(&Method::PUT, "/api/products/SKU-1"));
        assert!(!requires_admin(&Method::GET, "/api/products/SKU-1"));
        assert!(!requires_admin(&Method::GET, "/api/products"));
    }

    #[test]
    fn browsing_schemas_is_for_everyone_and_changing_the_registry_for_admins() {
        assert!(!requires_admin(&Method::GET, "/api/schemas/subjects"));
        assert!(!requires_admin(
            &Method::GET,
            "/api/schemas/subjects/s/versions/latest"
        ));
        assert!(!requires_admin(&Method::POST, "/api/schemas/subjects/s"));
        assert!(!requires_admin(
            &Method::POST,
            "/api/schemas/compatibility/subjects/s/versions/1"
        ));
        assert!(requires_admin(
            &Method::POST,
            "/api/schemas/subjects/s/versions"
        ));
        assert!(requires_admin(&Method::PUT, "/api/schemas/config"));
        assert!(requires_admin(&Method::PUT, "/api/schemas/config/s"));
        assert!(requires_admin(&Method::DELETE, "/api/schemas/subjects/s"));
        assert!(requires_admin(
            &Method::DELETE,
            "/api/schemas/subjects/s/versions/1"
        ));
    }

    #[test]
    fn setting_stock_is_for_admins_and_reading_it_for_everyone() {
        assert!(requires_admin(&Method::PUT, "/api/inventory/SKU-1"));
        assert!(!requires_admin(&Method::GET, "/api/inventory/SKU-1"));
        assert!(!requires_admin(&Method::GET, "/api/inventory"));
        assert!(!requires_admin(
            &Method::POST,
            "/api/inventory/availability"
        ));
    }

    #[test]
    fn placing_reading_and_listing_are_for_every_user() {
        assert!(!requires_admin(&Method::POST, "/api/orders"));
        assert!(!requires_admin(&Method::GET, "/api/orders"));
        assert!(!requires_admin(&Method::GET, "/api/orders/1"));
        assert!(!requires_admin(&Method::GET, "/api/orders/1/status"));
    }
}
