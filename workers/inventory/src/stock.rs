//! The inventory's rules on its own database: an order's lines are reserved all at once or not
//! at all; a release returns exactly what the order holds, once; shipping turns held stock into
//! sold stock.
//!
//! Each operation locks the stock rows it touches in product order, so concurrent orders for the
//! same products serialise on those rows (never oversell) and cannot deadlock.

use std::collections::{BTreeMap, BTreeSet};

use oms_saga::{
    event::{ShortLine, StockLine},
    plan::PlannedPerCall,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// One product's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub product_id: String,
    pub available: i32,
    pub reserved: i32,
    pub sold: i32,
}

/// What an order asks for, one entry per product (lines for the same product are summed).
pub fn wanted(lines: impl IntoIterator<Item = (String, u32)>) -> BTreeMap<String, u32> {
    let mut wanted = BTreeMap::new();
    for (product, quantity) in lines {
        *wanted.entry(product).or_insert(0) += quantity;
    }
    wanted
}

/// The outcome of asking for an order's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserved(Vec<StockLine>),
    /// Nothing was reserved; these lines lack stock.
    Rejected(Vec<ShortLine>),
}

/// Reserves, for each order in turn, every product it wants or none, as if the orders came one
/// by one: an order that finds too little is rejected and leaves the stock to those after it.
/// However many orders, their stock is read (and locked) once, updated once, and their
/// reservations written once.
pub async fn reserve_all(
    conn: &mut PgConnection,
    orders: &[(Uuid, BTreeMap<String, u32>)],
) -> sqlx::Result<Vec<Reservation>> {
    let products: BTreeSet<&str> = orders
        .iter()
        .flat_map(|(_, wanted)| wanted.keys().map(String::as_str))
        .collect();
    let products: Vec<&str> = products.into_iter().collect();
    let mut available: BTreeMap<String, i32> = sqlx::query_as::<_, (String, i32)>(
        "SELECT product_id, available FROM stock WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
    )
    .planned_per_call()
    .bind(&products)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut taken: BTreeMap<&str, i32> = BTreeMap::new();
    let (mut held_orders, mut held_products, mut held_quantities) = (vec![], vec![], vec![]);
    let mut outcomes = Vec::with_capacity(orders.len());
    for (order_id, wanted) in orders {
        let short: Vec<ShortLine> = wanted
            .iter()
            .filter_map(|(product, &requested)| {
                let have = available.get(product).copied().unwrap_or(0).max(0) as u32;
                (have < requested).then(|| ShortLine {
                    product_id: product.clone(),
                    requested,
                    available: have,
                })
            })
            .collect();
        if !short.is_empty() {
            outcomes.push(Reservation::Rejected(short));
            continue;
        }
        let mut lines = Vec::with_capacity(wanted.len());
        for (product, &quantity) in wanted {
            let quantity_i32 = quantity as i32;
            if let Some(left) = available.get_mut(product) {
                *left -= quantity_i32;
            }
            *taken.entry(product).or_default() += quantity_i32;
            held_orders.push(*order_id);
            held_products.push(product.as_str());
            held_quantities.push(quantity_i32);
            lines.push(StockLine {
                product_id: product.clone(),
                quantity,
            });
        }
        outcomes.push(Reservation::Reserved(lines));
    }
    if taken.is_empty() {
        return Ok(outcomes);
    }
    let (products, quantities): (Vec<&str>, Vec<i32>) = taken.into_iter().unzip();
    sqlx::query(
        "UPDATE stock SET available = available - t.quantity, reserved = reserved + t.quantity, \
         updated_at = now() FROM unnest($1::text[], $2::int[]) AS t(product_id, quantity) \
         WHERE stock.product_id = t.product_id",
    )
    .planned_per_call()
    .bind(&products)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO reservations (order_id, product_id, quantity, state) \
         SELECT order_id, product_id, quantity, 'HELD' \
         FROM unnest($1::uuid[], $2::text[], $3::int[]) AS r(order_id, product_id, quantity)",
    )
    .bind(&held_orders)
    .bind(&held_products)
    .bind(&held_quantities)
    .execute(&mut *conn)
    .await?;
    Ok(outcomes)
}

/// Moves what `order_id` holds from `HELD` to `to`, adjusting stock with `stock_change` (SQL
/// assignments using `$2` for the quantity). Returns what moved; nothing if it held nothing.
async fn settle(
    conn: &mut PgConnection,
    order_id: Uuid,
    to: &str,
    stock_change: &str,
) -> sqlx::Result<Vec<StockLine>> {
    let held: Vec<(String, i32)> = sqlx::query_as(
        "SELECT product_id, quantity FROM reservations WHERE order_id = $1 AND state = 'HELD' \
         ORDER BY product_id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    for (product, quantity) in &held {
        sqlx::query(&format!(
            "UPDATE stock SET {stock_change}, updated_at = now() WHERE product_id = $1"
        ))
        .bind(product)
        .bind(quantity)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE reservations SET state = $2, updated_at = now() WHERE order_id = $1 AND state = 'HELD'")
        .bind(order_id)
        .bind(to)
        .execute(&mut *conn)
        .await?;
    Ok(held
        .into_iter()
        .map(|(product_id, q)| StockLine {
            product_id,
            quantity: q as u32,
        })
        .collect())
}

/// Returns an order's held stock to available. Releasing twice returns nothing the second time.
pub async fn release(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<StockLine>> {
    settle(
        conn,
        order_id,
        "RELEASED",
        "available = available + $2, reserved = reserved - $2",
    )
    .await
}

/// Turns an order's held stock into sold stock.
pub async fn sell(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<StockLine>> {
    settle(
        conn,
        order_id,
        "SOLD",
        "reserved = reserved - $2, sold = sold + $2",
    )
    .await
}

pub async fn list(conn: impl sqlx::PgExecutor<'_>) -> sqlx::Result<Vec<Stock>> {
    sqlx::query_as("SELECT product_id, available, reserved, sold FROM stock ORDER BY product_id")
        .fetch_all(conn)
        .await
}

pub async fn get(conn: impl sqlx::PgExecutor<'_>, product_id: &str) -> sqlx::Result<Option<Stock>> {
    sqlx::query_as("SELECT product_id, available, reserved, sold FROM stock WHERE product_id = $1")
        .bind(product_id)
        .fetch_optional(conn)
        .await
}

/// Sets how many units are available (a delivery, a count), keeping what is reserved and sold.
/// The difference counts as taken in (a delivery) or written off (a count that came up short).
pub async fn set_available(
    conn: impl sqlx::PgExecutor<'_>,
    product_id: &str,
    available: i32,
) -> sqlx::Result<Stock> {
    sqlx::query_as(
        "INSERT INTO stock (product_id, available, received) VALUES ($1, $2, $2) \
         ON CONFLICT (product_id) DO UPDATE SET available = EXCLUDED.available, \
           received = stock.received + EXCLUDED.available - stock.available, updated_at = now() \
         RETURNING product_id, available, reserved, sold",
    )
    .bind(product_id)
    .bind(available)
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_the_same_product_are_summed_and_ordered() {
        let wanted = wanted([
            ("B".to_owned(), 1),
            ("A".to_owned(), 2),
            ("B".to_owned(), 3),
        ]);
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            [("A".to_owned(), 2), ("B".to_owned(), 4)]
        );
    }
}
