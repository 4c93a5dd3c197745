//! The order's rules, free of I/O: validated values and the status state machine.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

pub use oms_saga::event::{OrderLine, OrderStatus};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
/// Prices carry at most this many significant decimal places.
pub const MAX_PRICE_SCALE: u32 = 4;
pub const MAX_REASON_LEN: usize = 500;

/// One invalid field, as a 422 lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A decimal exactly as the client wrote it, string or JSON number, never through a float.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalText(pub String);

impl<'de> Deserialize<'de> for DecimalText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde_json's arbitrary_precision keeps a number's original digits.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self(s)),
            serde_json::Value::Number(n) => Ok(Self(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a decimal, found {other}"
            ))),
        }
    }
}

/// The body of `POST /api/orders`, before validation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrder {
    /// Yours, as the gateway knows you; an admin may place for anyone.
    #[schema(format = Uuid)]
    pub customer_id: String,
    pub items: Vec<PlaceOrderLine>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderLine {
    #[schema(example = "SKU-1")]
    pub product_id: String,
    #[schema(minimum = 1)]
    pub quantity: i64,
    /// A decimal, as a string or a JSON number.
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: DecimalText,
}

/// A valid new order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    pub customer_id: Uuid,
    pub items: Vec<OrderLine>,
}

impl NewOrder {
    /// Checks every field and reports all the problems at once.
    pub fn parse(request: PlaceOrder) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let customer_id = Uuid::parse_str(&request.customer_id)
            .map_err(|_| errors.push(FieldError::new("customerId", "must be a UUID")))
            .ok();
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
            let unit_price = parse_price(&line.unit_price.0)
                .map_err(|m| errors.push(FieldError::new(at("unitPrice"), m)))
                .ok();
            if let (Some(product_id), Some(quantity), Some(unit_price)) =
                (product_id, quantity, unit_price)
            {
                items.push(OrderLine {
                    product_id,
                    quantity,
                    unit_price,
                });
            }
        }
        match customer_id {
            Some(customer_id) if errors.is_empty() => Ok(Self { customer_id, items }),
            _ => Err(errors),
        }
    }

    pub fn total(&self) -> Decimal {
        self.items
            .iter()
            .map(|l| l.unit_price * Decimal::from(l.quantity))
            .sum()
    }
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

pub fn parse_price(text: &str) -> Result<Decimal, String> {
    let price = Decimal::from_str_exact(text.trim())
        .map_err(|_| format!("{text:?} is not an exact decimal"))?;
    if price.is_sign_negative() && !price.is_zero() {
        return Err("must be zero or more".into());
    }
    if price.normalize().scale() > MAX_PRICE_SCALE {
        return Err(format!("at most {MAX_PRICE_SCALE} decimal places"));
    }
    if price > Decimal::from(1_000_000_000_000i64) {
        return Err("must be at most 1000000000000".into());
    }
    // The client's scale is kept (4.50 stays 4.50); only significant places are bounded.
    Ok(price)
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
///    │           │         │
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
    fn the_state_machine_allows_exactly_the_happy_path_and_cancellation_before_shipping() {
        let legal = [
            (Created, Reserved),
            (Reserved, Paid),
            (Paid, Shipped),
            (Shipped, Completed),
            (Created, Cancelled),
            (Reserved, Cancelled),
            (Paid, Cancelled),
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
            assert!(transition(Completed, to).is_err());
            assert!(transition(Cancelled, to).is_err());
        }
    }

    fn line(product: &str, quantity: i64, price: &str) -> PlaceOrderLine {
        PlaceOrderLine {
            product_id: product.into(),
            quantity,
            unit_price: DecimalText(price.into()),
        }
    }

    #[test]
    fn a_valid_order_parses_with_exact_prices_and_total() {
        let order = NewOrder::parse(PlaceOrder {
            customer_id: Uuid::nil().to_string(),
            items: vec![line("SKU-1", 3, "0.10"), line("SKU-2", 1, "19.99")],
        })
        .expect("valid");
        assert_eq!(order.total(), Decimal::new(2029, 2));
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let errors = NewOrder::parse(PlaceOrder {
            customer_id: "not-a-uuid".into(),
            items: vec![line("", 0, "-1"), line("SKU 1", 10_001, "1.00001")],
        })
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "customerId",
                "items[0].productId",
                "items[0].quantity",
                "items[0].unitPrice",
                "items[1].productId",
                "items[1].quantity",
                "items[1].unitPrice",
            ]
        );
    }

    #[test]
    fn an_order_needs_one_to_a_hundred_lines() {
        let customer_id = Uuid::nil().to_string();
        let none = NewOrder::parse(PlaceOrder {
            customer_id: customer_id.clone(),
            items: vec![],
        });
        assert_eq!(none.expect_err("empty")[0].field, "items");
        let many = (0..=MAX_LINES).map(|_| line("SKU", 1, "1")).collect();
        let too_many = NewOrder::parse(PlaceOrder {
            customer_id,
            items: many,
        });
        assert_eq!(too_many.expect_err("101 lines")[0].field, "items");
    }

    #[test]
    fn prices_are_exact_and_never_negative() {
        assert_eq!(parse_price("0"), Ok(Decimal::ZERO));
        assert_eq!(
            parse_price("12.5000").map(|p| p.to_string()),
            Ok("12.5000".to_owned())
        );
        assert!(parse_price("-0.01").is_err());
        assert!(parse_price("1e3").is_err());
        assert!(parse_price("NaN").is_err());
        assert!(parse_price("0.00001").is_err());
    }

    #[test]
    fn a_json_number_price_keeps_its_digits() {
        let line: PlaceOrderLine =
            serde_json::from_str(r#"{"productId":"A","quantity":1,"unitPrice":0.1}"#)
                .expect("json");
        assert_eq!(parse_price(&line.unit_price.0), Ok(Decimal::new(1, 1)));
    }
}
