//! The order's rules, free of I/O: validated values and the status state machine.

use std::collections::HashMap;

use oms_saga::money::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::prices::Price;

pub use oms_saga::event::{OrderLine, OrderStatus};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
pub const MAX_REASON_LEN: usize = 500;

pub use oms_saga::problem::FieldError;

/// The body of `POST /api/orders`, before validation. It names what to buy and how to pay; the
/// server sets every price from the catalog, so a price in the body is refused.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrder {
    /// Whose order: yours if left out (the token says who you are); an admin names the customer.
    #[schema(format = Uuid)]
    pub customer_id: Option<String>,
    pub items: Vec<PlaceOrderLine>,
    /// The payment provider's payment method that pays for it: `pm_card_visa`.
    #[schema(example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// Refused with 422: the server computes the total.
    #[schema(ignore)]
    pub total: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderLine {
    #[schema(example = "SKU-1")]
    pub product_id: String,
    #[schema(minimum = 1)]
    pub quantity: i64,
    /// Refused with 422: the server prices every line from the catalog.
    #[schema(ignore)]
    pub unit_price: Option<serde_json::Value>,
}

/// A valid request for an order, not yet priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    /// Whom the body names; the caller decides whether that is allowed, or who it is if none.
    pub customer_id: Option<Uuid>,
    /// Product and quantity, in the client's order.
    pub items: Vec<(String, u32)>,
    pub payment_method: String,
}

/// Why a price in a request is refused.
const SERVER_PRICES: &str = "prices are set by the server";

impl OrderRequest {
    /// Checks every field and reports all the problems at once.
    pub fn parse(request: PlaceOrder) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let customer_id = request
            .customer_id
            .map(|c| {
                Uuid::parse_str(&c)
                    .map_err(|_| errors.push(FieldError::new("customerId", "must be a UUID")))
            })
            .transpose();
        if request.total.is_some() {
            errors.push(FieldError::new("total", SERVER_PRICES));
        }
        if request.items.is_empty() || request.items.len() > MAX_LINES {
            errors.push(FieldError::new(
                "items",
                format!("must hold 1 to {MAX_LINES} lines"),
            ));
        }
        let mut items = Vec::with_capacity(request.items.len());
        for (i, line) in request.items.into_iter().enumerate() {
            let at = |f: &str| format!("items[{i}].{f}");
            let product_id = parse_product_id(&line.product_id)
                .map_err(|m| errors.push(FieldError::new(at("productId"), m)))
                .ok();
            let quantity = parse_quantity(line.quantity)
                .map_err(|m| errors.push(FieldError::new(at("quantity"), m)))
                .ok();
            if line.unit_price.is_some() {
                errors.push(FieldError::new(at("unitPrice"), SERVER_PRICES));
            }
            if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
                items.push((product_id, quantity));
            }
        }
        let payment_method = match request.payment_method.as_deref().map(parse_payment_method) {
            None => {
                errors.push(FieldError::new(
                    "paymentMethod",
                    "required: how the order is paid",
                ));
                None
            }
            Some(Err(m)) => {
                errors.push(FieldError::new("paymentMethod", m));
                None
            }
            Some(Ok(method)) => Some(method),
        };
        match (customer_id, payment_method) {
            (Ok(customer_id), Some(payment_method)) if errors.is_empty() => Ok(Self {
                customer_id,
                items,
                payment_method,
            }),
            _ => Err(errors),
        }
    }

    /// Prices every line from the catalog's prices as the order service knows them. Refuses a
    /// product it does not know or that is not for sale, and lines in more than one currency.
    pub fn price(
        self,
        customer_id: Uuid,
        prices: &HashMap<String, Price>,
    ) -> Result<NewOrder, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut currency: Option<&str> = None;
        let mut items = Vec::with_capacity(self.items.len());
        for (i, (product_id, quantity)) in self.items.into_iter().enumerate() {
            let field = format!("items[{i}].productId");
            let Some(price) = prices.get(&product_id) else {
                errors.push(FieldError::new(
                    field,
                    format!("no product {product_id} in the catalog"),
                ));
                continue;
            };
            if !price.active {
                errors.push(FieldError::new(
                    field,
                    format!("{product_id} is not for sale"),
                ));
                continue;
            }
            match currency {
                None => currency = Some(&price.currency),
                Some(first) if first != price.currency => {
                    errors.push(FieldError::new(
                        "items",
                        format!("lines in more than one currency ({first} and {}): place one order per currency", price.currency),
                    ));
                    continue;
                }
                Some(_) => {}
            }
            match Currency::parse(&price.currency) {
                Ok(c) => items.push(OrderLine {
                    product_id,
                    quantity,
                    unit_price: c.to_decimal(price.price_minor),
                }),
                Err(m) => errors.push(FieldError::new(field, m)),
            }
        }
        match currency {
            Some(currency) if errors.is_empty() => Ok(NewOrder {
                customer_id,
                currency: currency.to_owned(),
                items,
                payment_method: self.payment_method,
            }),
            _ => Err(errors),
        }
    }
}

/// A valid, priced new order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    pub customer_id: Uuid,
    pub items: Vec<OrderLine>,
    /// ISO 4217: the currency of every line.
    pub currency: String,
    pub payment_method: String,
}

impl NewOrder {
    pub fn total(&self) -> Decimal {
        self.items
            .iter()
            .map(|l| l.unit_price * Decimal::from(l.quantity))
            .sum()
    }
}

/// A payment method id: `pm_` and then letters, digits or `_`, at most 255 in all.
pub fn parse_payment_method(text: &str) -> Result<String, String> {
    let valid = text.len() <= 255
        && text.strip_prefix("pm_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    valid
        .then(|| text.to_owned())
        .ok_or_else(|| "must be a payment method id: 'pm_' then letters, digits or '_'".to_owned())
}

/// A product code: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn parse_product_id(text: &str) -> Result<String, String> {
    oms_saga::event::is_product_id(text)
        .then(|| text.to_owned())
        .ok_or_else(|| "must be 1 to 64 letters, digits, '-', '_' or '.'".to_owned())
}

pub fn parse_quantity(quantity: i64) -> Result<u32, String> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(quantity as u32)
    } else {
        Err(format!("must be from 1 to {MAX_QUANTITY}"))
    }
}

/// A status change an admin or a saga step asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// The order state machine: whether an order in `from` may move to `to`.
///
/// ```text
/// CREATED ─▶ RESERVED ─▶ PAID ─▶ SHIPPED ─▶ COMPLETED
///    │           │         │        │           │
///    │           │         │        └───────────┴──▶ REFUNDED
///    └───────────┴─────────┴──▶ CANCELLED
/// ```
pub fn transition(from: OrderStatus, to: OrderStatus) -> Result<OrderStatus, IllegalTransition> {
    use OrderStatus::*;
    let legal = matches!(
        (from, to),
        (Created, Reserved)
            | (Reserved, Paid)
            | (Paid, Shipped)
            | (Shipped, Completed)
            | (Created | Reserved | Paid, Cancelled)
            | (Shipped | Completed, Refunded)
    );
    if legal {
        Ok(to)
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// A cancellation or status-change reason: optional, trimmed, bounded.
pub fn parse_reason(reason: Option<String>) -> Result<Option<String>, FieldError> {
    match reason.map(|r| r.trim().to_owned()) {
        Some(r) if r.len() > MAX_REASON_LEN => Err(FieldError::new(
            "reason",
            format!("at most {MAX_REASON_LEN} characters"),
        )),
        Some(r) if r.is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn the_state_machine_allows_exactly_the_happy_path_cancellation_before_shipping_and_refunds_after()
     {
        let legal = [
            (Created, Reserved),
            (Reserved, Paid),
            (Paid, Shipped),
            (Shipped, Completed),
            (Created, Cancelled),
            (Reserved, Cancelled),
            (Paid, Cancelled),
            (Shipped, Refunded),
            (Completed, Refunded),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(transition(from, to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_statuses_go_nowhere() {
        for to in OrderStatus::ALL {
            assert!(transition(Cancelled, to).is_err());
            assert!(transition(Refunded, to).is_err());
        }
    }

    fn line(product: &str, quantity: i64) -> PlaceOrderLine {
        PlaceOrderLine {
            product_id: product.into(),
            quantity,
            unit_price: None,
        }
    }

    fn request(items: Vec<PlaceOrderLine>) -> PlaceOrder {
        PlaceOrder {
            customer_id: None,
            items,
            payment_method: Some("pm_card_visa".into()),
            total: None,
        }
    }

    fn catalog(prices: &[(&str, i64, &str, bool)]) -> HashMap<String, Price> {
        prices
            .iter()
            .map(|&(product_id, price_minor, currency, active)| {
                let price = Price {
                    product_id: product_id.into(),
                    price_minor,
                    currency: currency.into(),
                    active,
                };
                (product_id.to_owned(), price)
            })
            .collect()
    }

    #[test]
    fn the_server_prices_every_line_from_the_catalog_and_sums_the_total() {
        let order = OrderRequest::parse(request(vec![line("SKU-1", 3), line("SKU-2", 1)]))
            .expect("valid")
            .price(
                Uuid::nil(),
                &catalog(&[("SKU-1", 10, "USD", true), ("SKU-2", 1999, "USD", true)]),
            )
            .expect("priced");
        assert_eq!(order.items[0].unit_price.to_string(), "0.10");
        assert_eq!(order.items[1].unit_price.to_string(), "19.99");
        assert_eq!(order.total(), Decimal::new(2029, 2));
        assert_eq!(order.currency, "USD");
        assert_eq!(order.payment_method, "pm_card_visa");
    }

    #[test]
    fn a_price_or_total_in_the_request_is_refused_by_name() {
        let mut priced = request(vec![line("SKU-1", 1)]);
        priced.items[0].unit_price = Some(serde_json::json!("0.01"));
        priced.total = Some(serde_json::json!(0.01));
        let errors = OrderRequest::parse(priced).expect_err("priced by the client");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["total", "items[0].unitPrice"]);
        assert!(errors.iter().all(|e| e.message == SERVER_PRICES));
    }

    #[test]
    fn unknown_inactive_and_mixed_currency_products_are_refused() {
        let prices = catalog(&[
            ("USD-1", 100, "USD", true),
            ("EUR-1", 100, "EUR", true),
            ("OLD", 100, "USD", false),
        ]);
        let errors = OrderRequest::parse(request(vec![
            line("USD-1", 1),
            line("NOPE", 1),
            line("OLD", 1),
            line("EUR-1", 1),
        ]))
        .expect("valid")
        .price(Uuid::nil(), &prices)
        .expect_err("unpriceable");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["items[1].productId", "items[2].productId", "items"]
        );
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let errors = OrderRequest::parse(PlaceOrder {
            customer_id: Some("not-a-uuid".into()),
            items: vec![line("", 0), line("SKU 1", 10_001)],
            payment_method: None,
            total: None,
        })
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "customerId",
                "items[0].productId",
                "items[0].quantity",
                "items[1].productId",
                "items[1].quantity",
                "paymentMethod",
            ]
        );
    }

    #[test]
    fn an_order_needs_one_to_a_hundred_lines() {
        let none = OrderRequest::parse(request(vec![]));
        assert_eq!(none.expect_err("empty")[0].field, "items");
        let many = (0..=MAX_LINES).map(|_| line("SKU", 1)).collect();
        let too_many = OrderRequest::parse(request(many));
        assert_eq!(too_many.expect_err("101 lines")[0].field, "items");
    }

    #[test]
    fn a_payment_method_is_a_provider_id() {
        assert!(parse_payment_method("pm_card_visa").is_ok());
        assert!(parse_payment_method("pm_1Q0PsIJvEtkwdCNYMSaVuRz6").is_ok());
        for bad in ["", "pm_", "card_visa", "pm_card visa", "pm_<script>"] {
            assert!(parse_payment_method(bad).is_err(), "{bad:?}");
        }
        assert!(parse_payment_method(&format!("pm_{}", "a".repeat(253))).is_err());
    }

    #[test]
    fn a_line_without_a_price_parses_and_one_with_a_price_is_kept_to_refuse() {
        let line: PlaceOrderLine =
            serde_json::from_str(r#"{"productId":"A","quantity":1,"unitPrice":0.1}"#)
                .expect("json");
        assert!(line.unit_price.is_some());
    }
}
