//! The catalog: each product's name, price and whether it is for sale. The inventory owns it
//! beside the stock, and every change writes a `ProductPriced` event in the same transaction, so
//! the order service keeps its own copy of the prices and never asks this service for one while
//! an order is placed.

use chrono::{DateTime, SubsecRound, Utc};
use oms_saga::{
    event::{EventRecord, ProductPriced},
    money::Currency,
    outbox,
    problem::FieldError,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};

/// A product as the catalog serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub product_id: String,
    pub name: String,
    /// The price of one unit in the currency's minor units (cents).
    pub price_minor: i64,
    /// The same price as a decimal with the currency's decimals: `"12.00"`.
    #[sqlx(skip)]
    pub price: String,
    /// ISO 4217.
    pub currency: String,
    /// Whether it can be ordered.
    pub active: bool,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl Product {
    fn priced(mut self) -> Self {
        self.price = Currency::parse(&self.currency)
            .map(|c| c.to_decimal(self.price_minor).to_string())
            .unwrap_or_default();
        self
    }
}

/// An admin's `PUT /api/products/{id}`, before validation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetProduct {
    /// 1 to 200 characters.
    #[schema(example = "Mug")]
    pub name: String,
    /// A decimal string with at most as many decimals as the currency has, more than zero.
    #[schema(example = "12.00")]
    pub price: String,
    /// ISO 4217, upper case.
    #[schema(example = "USD")]
    pub currency: String,
    /// Whether it can be ordered; true if left out.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// A valid change to a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductChange {
    pub name: String,
    pub price_minor: i64,
    pub currency: Currency,
    pub active: bool,
}

impl ProductChange {
    /// Checks every field and reports all the problems at once.
    pub fn parse(request: SetProduct) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = request.name.trim().to_owned();
        if !(1..=200).contains(&name.chars().count()) {
            errors.push(FieldError::new("name", "must be 1 to 200 characters"));
        }
        let currency = Currency::parse(&request.currency)
            .map_err(|m| errors.push(FieldError::new("currency", m)))
            .ok();
        let price_minor = currency.and_then(|c| {
            c.parse_price(&request.price)
                .map_err(|m| errors.push(FieldError::new("price", m)))
                .ok()
        });
        match (currency, price_minor) {
            (Some(currency), Some(price_minor)) if errors.is_empty() => Ok(Self {
                name,
                price_minor,
                currency,
                active: request.active,
            }),
            _ => Err(errors),
        }
    }
}

const COLUMNS: &str = "product_id, name, price_minor, currency, active, version, updated_at";

/// Creates or changes a product and writes its `ProductPriced` to `topic`, on `tx`.
pub async fn set(
    tx: &mut PgConnection,
    topic: &str,
    product_id: &str,
    change: &ProductChange,
) -> oms_saga::Result<Product> {
    let product: Product = sqlx::query_as(&format!(
        "INSERT INTO products (product_id, name, price_minor, currency, active) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, \
           price_minor = EXCLUDED.price_minor, currency = EXCLUDED.currency, \
           active = EXCLUDED.active, version = products.version + 1, updated_at = now() \
         RETURNING {COLUMNS}"
    ))
    .bind(product_id)
    .bind(&change.name)
    .bind(change.price_minor)
    .bind(change.currency.code)
    .bind(change.active)
    .fetch_one(&mut *tx)
    .await?;
    let event = ProductPriced {
        product_id: product.product_id.clone(),
        name: product.name.clone(),
        price_minor: product.price_minor,
        currency: product.currency.clone(),
        active: product.active,
        version: product.version,
        at: product.updated_at.trunc_subsecs(3),
    };
    outbox::enqueue(tx, &EventRecord::new(topic, &event)).await?;
    Ok(product.priced())
}

pub async fn list(conn: impl PgExecutor<'_>) -> sqlx::Result<Vec<Product>> {
    let products: Vec<Product> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM products ORDER BY product_id"
    ))
    .fetch_all(conn)
    .await?;
    Ok(products.into_iter().map(Product::priced).collect())
}

pub async fn get(conn: impl PgExecutor<'_>, product_id: &str) -> sqlx::Result<Option<Product>> {
    let product: Option<Product> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM products WHERE product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await?;
    Ok(product.map(Product::priced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, price: &str, currency: &str) -> SetProduct {
        SetProduct {
            name: name.into(),
            price: price.into(),
            currency: currency.into(),
            active: true,
        }
    }

    #[test]
    fn a_product_is_priced_in_minor_units_of_its_currency() {
        let change = ProductChange::parse(request(" Mug ", "12.00", "USD")).expect("valid");
        assert_eq!(change.name, "Mug");
        assert_eq!(change.price_minor, 1200);
        assert_eq!(change.currency.code, "USD");
    }

    #[test]
    fn every_bad_field_of_a_product_is_named() {
        let errors = ProductChange::parse(request("", "0", "USD")).expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "price"]);
        let errors = ProductChange::parse(request("Mug", "12.001", "USD")).expect_err("decimals");
        assert_eq!(errors[0].field, "price");
        let errors = ProductChange::parse(request("Mug", "1", "usd")).expect_err("currency");
        assert_eq!(errors[0].field, "currency");
    }
}
