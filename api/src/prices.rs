//! The order service's read model of the catalog's prices. The status worker applies the
//! inventory's `ProductPriced` events to it; placing an order reads it, so a price is always the
//! shop's and never waits on the inventory. An event applies only if it is newer than what is
//! kept (the catalog's version), so a redelivered or late event cannot roll a price back.

use std::collections::HashMap;

use oms_saga::{event::ProductPriced, plan::PlannedPerCall};
use sqlx::{PgConnection, PgExecutor};

/// A product's price as the order service knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Price {
    pub product_id: String,
    pub price_minor: i64,
    pub currency: String,
    pub active: bool,
}

/// Keeps each product's newest price among `events` and what is kept already.
pub async fn apply_all(conn: &mut PgConnection, events: &[ProductPriced]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // One row per product: the newest of the batch (a statement cannot touch a row twice).
    let mut newest: HashMap<&str, &ProductPriced> = HashMap::with_capacity(events.len());
    for event in events {
        let kept = newest.entry(&event.product_id).or_insert(event);
        if event.version > kept.version {
            *kept = event;
        }
    }
    let mut newest: Vec<&ProductPriced> = newest.into_values().collect();
    // In key order, so that two batches over the same products cannot deadlock.
    newest.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    sqlx::query(
        "INSERT INTO product_prices (product_id, name, price_minor, currency, active, version, updated_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bool[], \
           $6::bigint[], $7::timestamptz[]) \
         ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, \
           price_minor = EXCLUDED.price_minor, currency = EXCLUDED.currency, \
           active = EXCLUDED.active, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at \
         WHERE product_prices.version < EXCLUDED.version",
    )
    .planned_per_call()
    .bind(newest.iter().map(|e| e.product_id.as_str()).collect::<Vec<_>>())
    .bind(newest.iter().map(|e| e.name.as_str()).collect::<Vec<_>>())
    .bind(newest.iter().map(|e| e.price_minor).collect::<Vec<_>>())
    .bind(newest.iter().map(|e| e.currency.as_str()).collect::<Vec<_>>())
    .bind(newest.iter().map(|e| e.active).collect::<Vec<_>>())
    .bind(newest.iter().map(|e| e.version).collect::<Vec<_>>())
    .bind(newest.iter().map(|e| e.at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The prices of `product_ids` that the order service knows, by product.
pub async fn lookup(
    conn: impl PgExecutor<'_>,
    product_ids: &[&str],
) -> sqlx::Result<HashMap<String, Price>> {
    let prices: Vec<Price> = sqlx::query_as(
        "SELECT product_id, price_minor, currency, active FROM product_prices \
         WHERE product_id = ANY($1)",
    )
    .bind(product_ids)
    .fetch_all(conn)
    .await?;
    Ok(prices
        .into_iter()
        .map(|p| (p.product_id.clone(), p))
        .collect())
}
