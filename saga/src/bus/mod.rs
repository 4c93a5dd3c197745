//! The event bus: what a service needs from a broker, and nothing broker-specific.
//!
//! The contract every adapter keeps:
//! - [`EventBus::publish`] returns only once the broker has acknowledged every message, and
//!   messages with the same key are delivered in the order given;
//! - a [`Subscription`] redelivers anything not [`Subscription::ack`]ed, so a consumer acks only
//!   after its work is committed (at-least-once; consumers deduplicate by event id);
//! - the instances of one group share the topics' partitions.
//!
//! Two adapters keep it: [`KafkaBus`] and [`NatsBus`] (JetStream), chosen by `bus.kind`.

mod kafka;
mod nats;

use std::{sync::Arc, time::SystemTime};

use async_trait::async_trait;

use crate::{
    Error, Result,
    config::{BusConfig, BusKind},
};

pub use kafka::KafkaBus;
pub use nats::NatsBus;

/// A message as it travels: a key that orders it, an opaque body and text headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Headers,
}

/// Message headers, in order. A name may repeat; [`Headers::get`] returns the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn insert(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_owned(), value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A message received from a subscription, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    pub partition: i32,
    pub offset: i64,
    /// How many times the broker has delivered this message, this time included, as far as
    /// it tells: JetStream counts, Kafka does not (always 1). Of the messages a member held
    /// when it stopped, only the first, the one it most likely stopped on, keeps its count;
    /// the others count 1 until each is first in turn.
    pub delivered: u32,
    /// How many messages of its partition are behind this one, as the broker last reported;
    /// `None` if it has not. The consumer's lag, per partition.
    pub behind: Option<u64>,
}

/// A topic to create, with its final partition count (partitions cannot be added later on every
/// broker, and adding them would break per-key ordering anyway).
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
        }
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Creates the topics that do not exist yet; existing ones are left as they are.
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()>;

    /// Publishes the messages and waits until the broker has acknowledged all of them.
    /// On error, some may have been delivered: the caller publishes the whole batch again.
    async fn publish(&self, messages: Vec<Message>) -> Result<()>;

    /// Joins `group` on `topics`. A new group starts from the earliest message. A partition's
    /// next message may wait until the one before it is acked.
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>>;

    /// Reads `topics` from their first message as no group: a tool's view (tailing, listing
    /// dead letters) that moves no group and leaves nothing behind. Its acks do nothing.
    async fn browse(&self, topics: &[String]) -> Result<Box<dyn Subscription>>;

    /// The longest a message stays on the topics this bus creates, and so the longest after
    /// which it may still be delivered again (a rewind, a new group).
    fn retention(&self) -> std::time::Duration;

    /// How many messages `topic` keeps now, over all its partitions: as many as a browse from
    /// its start reads before it waits.
    async fn kept(&self, topic: &str) -> Result<u64>;

    /// Whether the broker answers now; for readiness checks.
    async fn ping(&self) -> Result<()>;

    /// Moves `group` back on `topic` by `back` messages in each partition, or to the first
    /// message with `None`, so that its consumers receive them again: a replay, or a drill that
    /// proves redelivery changes nothing. Meant for a group with no consumer running. Returns
    /// how many messages the group will receive again.
    ///
    /// `not_before` is the oldest the group's inbox remembers (now less its `inbox_keep`): a
    /// message published before it may have been applied and forgotten, and would be applied
    /// twice. A rewind that would deliver one again is refused ([`Error::RewindTooFar`]) and
    /// moves nothing.
    async fn rewind(
        &self,
        group: &str,
        topic: &str,
        back: Option<u64>,
        not_before: SystemTime,
    ) -> Result<u64>;
}

#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next message.
    async fn next(&mut self) -> Result<Delivery>;

    /// Marks `delivery`, and everything before it on its partition, as done for the group. If
    /// the partition has gone to another member since, this does nothing and is no error: the
    /// partition's next reader receives the delivery again.
    async fn ack(&mut self, delivery: &Delivery) -> Result<()>;

    /// Leaves the group, handing on what was acked, and waits a few seconds at most for the
    /// broker to confirm. Dropping a subscription leaves too, in the background: neither ever
    /// holds up the caller's thread for a broker that does not answer.
    async fn close(self: Box<Self>) {}
}

/// The refusal of a rewind of `group` on `topic` that would deliver again messages of
/// `partition` published before `not_before`.
pub(crate) fn too_far(group: &str, topic: &str, partition: i32, not_before: SystemTime) -> Error {
    Error::RewindTooFar {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
        not_before: humantime_serde::re::humantime::format_rfc3339_seconds(not_before).to_string(),
    }
}

/// Connects to the configured bus.
pub fn connect(config: &BusConfig) -> Result<Arc<dyn EventBus>> {
    match config.kind {
        BusKind::Kafka => Ok(Arc::new(KafkaBus::new(&config.kafka)?)),
        BusKind::Nats => Ok(Arc::new(NatsBus::new(&config.nats))),
    }
}
