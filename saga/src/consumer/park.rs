//! A dead-lettered event holds back the later events of its key.
//!
//! The events of one order apply in the order they were published. When a consumer sets one
//! aside in the dead-letter topic, applying the order's next events would let them overtake it:
//! a notice of SHIPPED before the one of PAID, a release of stock never reserved. So the group
//! that dead-lettered it parks the key: `parked_keys` remembers where the dead letter came from,
//! and each later event of the key is stored in `parked_events`, and acknowledged, instead of
//! applied. Other keys, in the same partition too, go on.
//!
//! An operator releases the key with `oms dlq redrive` or `oms dlq discard`. Either sends the
//! dead letter back to its topic (same key, so same partition) with [`release_header`]s naming
//! the group and the letter's origin. That group applies the letter (redrive) or skips it
//! (discard), then the parked events one at a time in the order they came, then forgets the park.
//! One that fails again is dead-lettered and parks the key anew, where it stood, with the events
//! behind it still parked. Other groups take a redriven letter as the event again (their inbox
//! knows it), and ignore a discarded one.
//!
//! A crash anywhere in a release delivers the release again, since it is acknowledged last: the
//! park is still there, and what was already applied is in the inbox.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::bus::{Delivery, Headers, Message};

use super::dlq_header;

/// Headers of a dead letter sent back to its topic by `oms dlq`.
pub mod release_header {
    /// `redrive` (apply the letter, then what it parked) or `discard` (only what it parked).
    pub const ACTION: &str = "release";
    /// The group that dead-lettered it, the only one whose park it releases.
    pub const GROUP: &str = "release-group";
    /// Where the letter came from in its topic: `<partition>/<offset>`.
    pub const OF: &str = "release-of";
}

/// What `oms dlq` does with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Redrive,
    Discard,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Redrive => "redrive",
            Action::Discard => "discard",
        }
    }
}

/// Where a delivery was in its topic: what a park remembers of its dead letter.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(super) struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Origin {
    pub fn of(delivery: &Delivery) -> Self {
        Self {
            topic: delivery.message.topic.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
        }
    }
}

/// A dead letter sent back for `group`, as a delivery of its topic carries it.
#[derive(Debug)]
pub(super) struct Release {
    pub action: Action,
    /// The letter's origin: the park it releases, if that park is still there.
    pub of: Origin,
}

impl Release {
    /// The release `delivery` carries for `group`, if any.
    pub fn of(delivery: &Delivery, group: &str) -> Option<Self> {
        let headers = &delivery.message.headers;
        if headers.get_str(release_header::GROUP) != Some(group) {
            return None;
        }
        let action = match headers.get_str(release_header::ACTION)? {
            "redrive" => Action::Redrive,
            "discard" => Action::Discard,
            _ => return None,
        };
        let (partition, offset) = headers.get_str(release_header::OF)?.split_once('/')?;
        Some(Self {
            action,
            of: Origin {
                topic: delivery.message.topic.clone(),
                partition: partition.parse().ok()?,
                offset: offset.parse().ok()?,
            },
        })
    }
}

/// Whether `delivery` is a discarded dead letter: the event it carries is never to be applied,
/// by any group.
pub(super) fn is_discarded(delivery: &Delivery) -> bool {
    delivery.message.headers.get_str(release_header::ACTION) == Some(Action::Discard.as_str())
}

/// The message that sends `letter` back to the topic it came from, without its `dlq-*` headers
/// and with the release's, for the group that dead-lettered it.
pub(super) fn released(letter: &Delivery, action: Action) -> Message {
    let dlq = &letter.message.headers;
    let mut message = letter.message.clone();
    message.topic = dlq
        .get_str(dlq_header::ORIGIN_TOPIC)
        .map(str::to_owned)
        .or_else(|| letter.message.topic.strip_suffix(".dlq").map(str::to_owned))
        .unwrap_or_else(|| letter.message.topic.clone());
    let headers = &mut message.headers;
    headers.0.retain(|(name, _)| !name.starts_with("dlq-"));
    headers.insert(release_header::ACTION, action.as_str());
    if let Some(group) = dlq.get_str(dlq_header::CONSUMER) {
        headers.insert(release_header::GROUP, group);
    }
    if let (Some(partition), Some(offset)) = (
        dlq.get_str(dlq_header::ORIGIN_PARTITION),
        dlq.get_str(dlq_header::ORIGIN_OFFSET),
    ) {
        headers.insert(release_header::OF, format!("{partition}/{offset}"));
    }
    message
}

/// What a batch knows of its keys' parks. Parks are rare, so none is read until one is met:
/// until then ([`Parks::Unread`]), each transaction checks the keys of its events in the
/// statement that records them in the inbox, and applies nothing if one is parked. Then every
/// park among the batch's keys is read ([`Parks::Read`]), and the batch goes on around them.
#[derive(Debug)]
pub(super) enum Parks {
    Unread,
    Read(HashMap<String, Origin>),
}

impl Parks {
    /// Whether a transaction must check its keys itself.
    pub fn unread(&self) -> bool {
        matches!(self, Parks::Unread)
    }

    /// The origin of the dead letter `key` is parked behind, as far as is read.
    pub fn get(&self, key: &str) -> Option<&Origin> {
        match self {
            Parks::Unread => None,
            Parks::Read(parked) => parked.get(key),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Notes a park just made; unread, the database has it for the next check.
    pub fn insert(&mut self, key: &str, origin: Origin) {
        if let Parks::Read(parked) = self {
            parked.insert(key.to_owned(), origin);
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Parks::Read(parked) = self {
            parked.remove(key);
        }
    }
}

/// The parks of `consumer` among `keys`: each key's dead letter's origin. Read on the pool, or
/// inside a transaction that must know them before it writes.
pub(super) async fn parked_among(
    db: impl sqlx::PgExecutor<'_>,
    consumer: &str,
    keys: &[&str],
) -> sqlx::Result<HashMap<String, Origin>> {
    let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT key, topic, partition, \"offset\" FROM parked_keys \
         WHERE consumer = $1 AND key = ANY($2)",
    )
    .bind(consumer)
    .bind(keys)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, topic, partition, offset)| {
            (
                key,
                Origin {
                    topic,
                    partition,
                    offset,
                },
            )
        })
        .collect())
}

/// Parks `key` behind the dead letter from `origin`, in place of any earlier park of it; if the
/// letter was itself parked, it leaves the parked events in the same transaction.
pub(super) async fn park_key(
    pool: &PgPool,
    consumer: &str,
    key: &str,
    origin: &Origin,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO parked_keys (consumer, key, topic, partition, \"offset\") \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer, key) DO UPDATE SET \
         topic = excluded.topic, partition = excluded.partition, \"offset\" = excluded.\"offset\", \
         parked_at = now()",
    )
    .bind(consumer)
    .bind(key)
    .bind(&origin.topic)
    .bind(origin.partition)
    .bind(origin.offset)
    .execute(&mut *tx)
    .await?;
    unpark_at(&mut tx, consumer, origin).await?;
    tx.commit().await
}

/// Stores `delivery` behind its key's park.
pub(super) async fn park_event(
    pool: &PgPool,
    consumer: &str,
    delivery: &Delivery,
) -> sqlx::Result<()> {
    let message = &delivery.message;
    let (names, values): (Vec<String>, Vec<Vec<u8>>) = message.headers.0.iter().cloned().unzip();
    sqlx::query(
        "INSERT INTO parked_events (consumer, key, topic, partition, \"offset\", payload, \
         header_names, header_values) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (consumer, topic, partition, \"offset\") DO NOTHING",
    )
    .bind(consumer)
    .bind(&message.key)
    .bind(&message.topic)
    .bind(delivery.partition)
    .bind(delivery.offset)
    .bind(&message.payload)
    .bind(names)
    .bind(values)
    .execute(pool)
    .await?;
    Ok(())
}

/// The first event parked behind `key`, as it was delivered.
pub(super) async fn first_parked(
    pool: &PgPool,
    consumer: &str,
    key: &str,
) -> sqlx::Result<Option<Delivery>> {
    type Row = (String, i32, i64, Vec<u8>, Vec<String>, Vec<Vec<u8>>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT topic, partition, \"offset\", payload, header_names, header_values \
         FROM parked_events WHERE consumer = $1 AND key = $2 ORDER BY seq LIMIT 1",
    )
    .bind(consumer)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(topic, partition, offset, payload, names, values)| Delivery {
            message: Message {
                topic,
                key: key.to_owned(),
                payload,
                headers: Headers(names.into_iter().zip(values).collect()),
            },
            partition,
            offset,
            delivered: 1,
            behind: None,
        },
    ))
}

/// Takes the event from `origin` out of the parked ones, once it has been applied.
pub(super) async fn unpark(pool: &PgPool, consumer: &str, origin: &Origin) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    unpark_at(&mut conn, consumer, origin).await
}

async fn unpark_at(
    conn: &mut sqlx::PgConnection,
    consumer: &str,
    origin: &Origin,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM parked_events WHERE consumer = $1 AND topic = $2 AND partition = $3 \
         AND \"offset\" = $4",
    )
    .bind(consumer)
    .bind(&origin.topic)
    .bind(origin.partition)
    .bind(origin.offset)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the park of `key` behind the dead letter from `origin`, once nothing is parked behind
/// it; a park behind another letter stays.
pub(super) async fn forget(
    pool: &PgPool,
    consumer: &str,
    key: &str,
    origin: &Origin,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM parked_keys WHERE consumer = $1 AND key = $2 AND topic = $3 \
         AND partition = $4 AND \"offset\" = $5 AND NOT EXISTS \
         (SELECT 1 FROM parked_events WHERE consumer = $1 AND key = $2)",
    )
    .bind(consumer)
    .bind(key)
    .bind(&origin.topic)
    .bind(origin.partition)
    .bind(origin.offset)
    .execute(pool)
    .await?;
    Ok(())
}
