//! The saga's progress, read from the events themselves: each order's `OrderPlaced`, the
//! `OrderStatusChanged` to RESERVED and the PAID `NotificationSent` (the stock reserved, the
//! card authorized, the customer told: the saga's work until an admin ships), by the time each
//! producer stamped on it. Nothing polls the API, so measuring costs the stack nothing but a
//! reader of its topics, as any consumer would be.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use oms_saga::{
    bus::EventBus,
    event::{
        Codec, Event, EventRecord, NotificationSent, OrderPlaced, OrderStatus, OrderStatusChanged,
    },
};
use serde::Serialize;
use uuid::Uuid;

use crate::{Percentiles, histogram, record};

#[derive(Debug, Default)]
struct Seen {
    placed: HashMap<Uuid, DateTime<Utc>>,
    reserved: HashMap<Uuid, DateTime<Utc>>,
    notified: HashMap<Uuid, DateTime<Utc>>,
    undecodable: u64,
    /// Bytes and count of the `OrderPlaced` messages read.
    placed_bytes: (usize, usize),
}

/// Reads the orders and notifications topics from their start, for as long as it lives.
#[derive(Debug)]
pub struct Follower {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    pub async fn start(
        bus: Arc<dyn EventBus>,
        codec: Arc<dyn Codec>,
        topics: &[String],
    ) -> crate::Result<Self> {
        let mut subscription = bus.browse(topics).await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let into = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok(delivery) = subscription.next().await {
                let Ok(event) = EventRecord::from_delivery(&delivery, codec.as_ref()).await else {
                    into.lock().expect("lock").undecodable += 1;
                    continue;
                };
                let mut seen = into.lock().expect("lock");
                if event.event_type == OrderPlaced::TYPE {
                    seen.placed_bytes.0 += delivery.message.payload.len();
                    seen.placed_bytes.1 += 1;
                }
                note(&mut seen, &event);
            }
        });
        Ok(Self { seen, task })
    }

    /// The average size of the `OrderPlaced` messages read so far, in bytes.
    pub fn order_placed_size(&self) -> Option<usize> {
        let (bytes, count) = self.seen.lock().expect("lock").placed_bytes;
        bytes.checked_div(count)
    }

    /// Waits until every one of `orders` was told it is paid, or `limit` passed;
    /// then says how the saga went for them.
    pub async fn saga(&self, orders: &[(Uuid, DateTime<Utc>)], limit: Duration) -> Saga {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = {
                let seen = self.seen.lock().expect("lock");
                orders.iter().all(|(id, _)| seen.notified.contains_key(id))
            };
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        summarize(&self.seen.lock().expect("lock"), orders)
    }
}

fn note(seen: &mut Seen, event: &EventRecord) {
    if let Some(Ok(placed)) = event.payload_as::<OrderPlaced>() {
        seen.placed.insert(placed.order_id, event.occurred_at);
    } else if let Some(Ok(changed)) = event.payload_as::<OrderStatusChanged>() {
        if changed.new_status == OrderStatus::Reserved {
            seen.reserved.insert(changed.order_id, event.occurred_at);
        }
    } else if let Some(Ok(sent)) = event.payload_as::<NotificationSent>()
        && sent.kind == "PAID"
    {
        seen.notified.insert(sent.order_id, event.occurred_at);
    }
}

/// How the saga went for a set of orders.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Saga {
    pub orders: u64,
    pub reserved: u64,
    pub notified: u64,
    pub place_to_reserved_ms: Percentiles,
    pub place_to_notified_ms: Percentiles,
    /// Orders placed a second, from the first placement to the last.
    pub placed_per_second: f64,
    /// Orders notified a second, from the first placement to the last notification.
    pub completed_per_second: f64,
    /// The most orders placed and not yet notified at any moment.
    pub max_backlog: u64,
    pub undecodable_events: u64,
}

fn summarize(seen: &Seen, orders: &[(Uuid, DateTime<Utc>)]) -> Saga {
    let (mut to_reserved, mut to_notified) = (histogram(), histogram());
    let mut moments: Vec<(DateTime<Utc>, i64)> = Vec::new();
    let ids: HashSet<Uuid> = orders.iter().map(|(id, _)| *id).collect();
    for id in &ids {
        let Some(placed) = seen.placed.get(id) else {
            continue;
        };
        moments.push((*placed, 1));
        if let Some(reserved) = seen.reserved.get(id) {
            record(&mut to_reserved, between(placed, reserved));
        }
        if let Some(notified) = seen.notified.get(id) {
            record(&mut to_notified, between(placed, notified));
            moments.push((*notified, -1));
        }
    }
    moments.sort();
    let (mut backlog, mut max_backlog) = (0_i64, 0_i64);
    for (_, change) in &moments {
        backlog += change;
        max_backlog = max_backlog.max(backlog);
    }
    let placements: Vec<&DateTime<Utc>> = ids.iter().filter_map(|id| seen.placed.get(id)).collect();
    let first = placements.iter().min().copied();
    let last_placed = placements.iter().max().copied();
    let last_notified = ids.iter().filter_map(|id| seen.notified.get(id)).max();
    let rate =
        |count: u64, from: Option<&DateTime<Utc>>, to: Option<&DateTime<Utc>>| match (from, to) {
            (Some(from), Some(to)) if to > from => count as f64 / between(from, to).as_secs_f64(),
            _ => 0.0,
        };
    Saga {
        orders: ids.len() as u64,
        reserved: to_reserved.len(),
        notified: to_notified.len(),
        place_to_reserved_ms: Percentiles::from(&to_reserved),
        place_to_notified_ms: Percentiles::from(&to_notified),
        placed_per_second: rate(placements.len() as u64, first, last_placed),
        completed_per_second: rate(to_notified.len(), first, last_notified),
        max_backlog: u64::try_from(max_backlog).unwrap_or(0),
        undecodable_events: seen.undecodable,
    }
}

fn between(from: &DateTime<Utc>, to: &DateTime<Utc>) -> Duration {
    (*to - *from).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_backlog_and_rates_come_from_the_event_timestamps() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let ms = |n: i64| t0 + chrono::Duration::milliseconds(n);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut seen = Seen::default();
        // Placed at 0, 100 and 200 ms; reserved 10 ms and notified 300 ms after each, but the
        // third is never notified.
        for (n, id) in ids.iter().enumerate() {
            let placed = ms(100 * n as i64);
            seen.placed.insert(*id, placed);
            seen.reserved
                .insert(*id, placed + chrono::Duration::milliseconds(10));
            if n < 2 {
                seen.notified
                    .insert(*id, placed + chrono::Duration::milliseconds(300));
            }
        }
        let orders: Vec<(Uuid, DateTime<Utc>)> = ids.iter().map(|id| (*id, t0)).collect();
        let saga = summarize(&seen, &orders);
        assert_eq!((saga.orders, saga.reserved, saga.notified), (3, 3, 2));
        assert!(
            (saga.place_to_reserved_ms.p99 - 10.0).abs() < 0.1,
            "{saga:?}"
        );
        assert!(
            (saga.place_to_notified_ms.max - 300.0).abs() < 0.5,
            "{saga:?}"
        );
        // All three are placed before the first is notified at 300 ms.
        assert_eq!(saga.max_backlog, 3);
        // Three placements over 200 ms; two completions from 0 to 400 ms.
        assert!((saga.placed_per_second - 15.0).abs() < 0.01, "{saga:?}");
        assert!((saga.completed_per_second - 5.0).abs() < 0.01, "{saga:?}");
    }
}
