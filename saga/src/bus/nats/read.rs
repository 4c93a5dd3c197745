//! Reading a partition: many deliveries in flight, handed on in the partition's order.
//!
//! A group's member pulls a partition's durable consumer in batches and holds up to
//! `in_flight` deliveries unacknowledged, so a busy partition is never one round trip per
//! message. Order is the hard part: JetStream redelivers a message whose ack wait ran out (its
//! holder crashed) only after that wait, in no particular order, and meanwhile hands out later
//! messages of the same partition. A member that takes a partition over therefore waits out
//! the ack wait, holds back everything it receives until every delivery the consumer counted
//! as pending is in its hands, and hands those on in stream order, one at a time ([`InHand`]).
//! From then on the server delivers in stream order. A redelivered message never overtakes a
//! later one, and a message that crashes its members is the only one whose count grows.
//!
//! Only one member reads a partition at a time ([`super::member`] leases it); the inbox makes
//! the rare overlap (a member that stalled past its lease) harmless, and the hold-back above
//! keeps its order.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{bus_err, consumer_name, key_from_token, partition_subject};
use crate::{
    Error, Result,
    bus::{Delivery, Message},
};

/// How long one pull request waits for messages before the reader asks again.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// How often a member taking a partition over asks whether all its earlier deliveries came.
const SYNC_CHECK: Duration = Duration::from_millis(200);

/// A consumer group, as its durable consumers are configured; no name for a browser.
#[derive(Clone)]
pub(super) struct Group {
    pub name: Option<String>,
    pub ack_wait: Duration,
    pub retention: Duration,
    pub in_flight: i64,
}

impl Group {
    /// The consumer on `partition`, delivering from `start` when it is new: durable for a
    /// group, ephemeral and never acked for a browser.
    pub fn consumer(&self, topic: &str, partition: u32, start: DeliverPolicy) -> pull::Config {
        let filter_subject = partition_subject(topic, partition);
        let Some(name) = &self.name else {
            return pull::Config {
                filter_subject,
                deliver_policy: start,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            };
        };
        pull::Config {
            durable_name: Some(consumer_name(name, partition)),
            filter_subject,
            deliver_policy: start,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // Unbounded: the consume loop dead-letters an event delivered too often, so the
            // server never drops one silently.
            max_deliver: -1,
            max_ack_pending: self.in_flight,
            inactive_threshold: self.retention,
            ..Default::default()
        }
    }
}

/// A delivery handed to the subscription, with where to send its acknowledgement: the reader
/// of its partition, which acknowledges it and everything before it.
pub(super) struct Incoming {
    pub delivery: Delivery,
    pub acks: mpsc::UnboundedSender<i64>,
}

/// Reads one partition and hands its deliveries to the subscription, in order.
pub(super) struct PartitionReader {
    pub stream: stream::Stream,
    pub topic: String,
    pub group: Group,
    pub partition: u32,
    pub sender: mpsc::UnboundedSender<Incoming>,
    pub stop: CancellationToken,
}

impl PartitionReader {
    /// Reads until stopped or the subscription is gone; a failing consumer is read again after
    /// a backoff.
    pub async fn run(self) {
        let mut delays = crate::retry::backoff(Duration::from_millis(200), Duration::from_secs(5));
        let mut browsed = None;
        loop {
            let read = match &self.group.name {
                Some(name) => self.read_group(name).await,
                None => self.browse(&mut browsed).await,
            };
            let Err(e) = read else { return };
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e,
                retry_in = ?delay, "reading a partition failed; retrying");
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The group's durable consumer of this partition, created if new (from the first
    /// message, as with Kafka) and allowed `in_flight` deliveries if it was made with another
    /// limit.
    async fn group_consumer(&self, name: &str) -> Result<PullConsumer> {
        let config = self
            .group
            .consumer(&self.topic, self.partition, DeliverPolicy::All);
        let consumer: PullConsumer = self
            .stream
            .get_or_create_consumer(&consumer_name(name, self.partition), config)
            .await
            .map_err(bus_err("consumer"))?;
        let current = &consumer.cached_info().config;
        if current.max_ack_pending == self.group.in_flight {
            return Ok(consumer);
        }
        // The start it was made with stays; the rest is this group's configuration.
        let config = self
            .group
            .consumer(&self.topic, self.partition, current.deliver_policy);
        self.stream
            .create_consumer(config)
            .await
            .map_err(bus_err("consumer update"))
    }

    /// Reads the partition for the group until stopped. A member that takes the partition over
    /// from one that left deliveries unacknowledged (it crashed, or stopped) first waits until
    /// their ack wait has run out, so that the server offers them again at once.
    async fn read_group(&self, name: &str) -> Result<()> {
        let mut consumer = self.group_consumer(name).await?;
        let info = consumer.cached_info();
        let mut hand = InHand::new(info.num_ack_pending, info.delivered.stream_sequence);
        if !hand.synced {
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.group.ack_wait) => {}
            }
        }
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(usize::try_from(self.group.in_flight).unwrap_or(1).max(1))
            .expires(PULL_WAIT)
            .messages()
            .await
            .map_err(bus_err("pull"))?;
        let (acks, mut acked) = mpsc::unbounded_channel();
        let mut progress =
            tokio::time::interval((self.group.ack_wait / 3).max(Duration::from_millis(10)));
        let mut sync = tokio::time::interval(SYNC_CHECK);
        let result = loop {
            let ready = hand.ready();
            if self
                .hand_on(hand.newest(ready), Some(&hand), &acks)
                .is_err()
            {
                break Ok(());
            }
            tokio::select! {
                _ = self.stop.cancelled() => break Ok(()),
                message = messages.next() => match message {
                    Some(Ok(message)) => {
                        if let Err(e) = hand.take(message) {
                            break Err(e);
                        }
                    }
                    Some(Err(e)) => break Err(bus_err("receive")(e)),
                    None => break Err(Error::Bus("nats: the pull ended".into())),
                },
                Some(upto) = acked.recv() => {
                    if let Err(e) = hand.acked(upto).await {
                        break Err(e);
                    }
                }
                // Until it is acknowledged, each delivery in hand is in progress, so that it
                // is redelivered only if this member stops.
                _ = progress.tick() => hand.in_progress().await,
                _ = sync.tick(), if !hand.synced => match consumer.info().await {
                    Ok(info) => hand.sync(info.num_ack_pending),
                    Err(e) => break Err(bus_err("consumer info")(e)),
                },
            }
        };
        // What was acked is acked. What it holds is left to the ack wait, after which the
        // partition's next reader has it. Handing several back at once with NAKs is faster,
        // but nats-server 2.9.10 then delivered one of them again as new (its count back at
        // 1) and another only after the ack wait, counted twice: a count the consume loop
        // dead-letters by must not drift.
        while let Ok(upto) = acked.try_recv() {
            if hand.acked(upto).await.is_err() {
                break;
            }
        }
        result
    }

    /// Hands deliveries to the subscription; an error when it is gone. A group's `hand` says
    /// whose delivery count stands; a browser's always does.
    fn hand_on<'m>(
        &self,
        ready: impl Iterator<Item = &'m jetstream::Message>,
        hand: Option<&InHand>,
        acks: &mpsc::UnboundedSender<i64>,
    ) -> Result<()> {
        for message in ready {
            let mut delivery = self.delivery(message)?;
            if hand.is_some_and(|hand| !hand.counts(delivery.offset)) {
                delivery.delivered = 1;
            }
            let incoming = Incoming {
                delivery,
                acks: acks.clone(),
            };
            self.sender
                .send(incoming)
                .map_err(|_| Error::Bus("nats: the subscription is gone".into()))?;
        }
        Ok(())
    }

    /// Reads as no group, from the first message or after the last one `browsed`.
    async fn browse(&self, browsed: &mut Option<u64>) -> Result<()> {
        let start = match *browsed {
            Some(last) => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            None => DeliverPolicy::All,
        };
        let consumer: PullConsumer = self
            .stream
            .create_consumer(self.group.consumer(&self.topic, self.partition, start))
            .await
            .map_err(bus_err("consumer"))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(100)
            .expires(PULL_WAIT)
            .messages()
            .await
            .map_err(bus_err("pull"))?;
        let (acks, _) = mpsc::unbounded_channel();
        loop {
            let message = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                message = messages.next() => message
                    .ok_or_else(|| Error::Bus("nats: the pull ended".into()))?
                    .map_err(bus_err("receive"))?,
            };
            let sequence = message
                .info()
                .map_err(bus_err("message info"))?
                .stream_sequence;
            if self
                .hand_on(std::iter::once(&message), None, &acks)
                .is_err()
            {
                return Ok(());
            }
            *browsed = Some(sequence);
        }
    }

    fn delivery(&self, message: &jetstream::Message) -> Result<Delivery> {
        let info = message.info().map_err(bus_err("message info"))?;
        let key = message
            .subject
            .get(self.topic.len() + 1..)
            .and_then(|rest| rest.split_once('.'))
            .map(|(_, token)| key_from_token(token))
            .unwrap_or_default();
        Ok(Delivery {
            message: Message {
                topic: self.topic.clone(),
                key,
                payload: message.payload.to_vec(),
                headers: super::from_nats_headers(message.headers.as_ref()),
            },
            partition: i32::try_from(self.partition).unwrap_or(i32::MAX),
            offset: i64::try_from(info.stream_sequence).unwrap_or(i64::MAX),
            delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
            behind: Some(info.pending),
        })
    }
}

/// The deliveries of one partition a member holds, and the rule that hands them on in order.
///
/// A member that takes a partition over holds everything back until every delivery the
/// consumer counted as pending (the earlier member's) has come again, in whatever order the
/// server redelivers them, and is in its hands: none can come later, and every message not
/// delivered yet is later in the stream. It then hands the earlier ones on one at a time,
/// each acknowledged before the next, so that one that crashes its member is the only one in
/// hand when it does. Only the first of them, the one most likely handled when the earlier
/// member stopped, keeps the server's delivery count; the others count 1, so that the
/// consume loop dead-letters the message that crashes its members and not its neighbours.
struct InHand {
    /// Whether every earlier delivery has come; until then, nothing is handed on.
    synced: bool,
    /// The last stream sequence delivered before the member started: the earlier deliveries
    /// are this one and those before it.
    boundary: u64,
    /// The first earlier delivery handed on, which keeps its count.
    head: Option<u64>,
    /// Received and not handed on yet, by stream sequence.
    waiting: BTreeMap<u64, jetstream::Message>,
    /// Handed on and not acknowledged yet, in order.
    handed: VecDeque<(u64, jetstream::Message)>,
    /// The last stream sequence handed on.
    last: u64,
}

impl InHand {
    /// The deliveries of a partition whose consumer counts `pending` unacknowledged ones, the
    /// last of them `boundary`.
    fn new(pending: usize, boundary: u64) -> Self {
        Self {
            synced: pending == 0,
            boundary,
            head: None,
            waiting: BTreeMap::new(),
            handed: VecDeque::new(),
            last: 0,
        }
    }

    /// Takes a delivery, to be handed on by [`InHand::ready`].
    fn take(&mut self, message: jetstream::Message) -> Result<()> {
        let sequence = message
            .info()
            .map_err(bus_err("message info"))?
            .stream_sequence;
        // One handed on already was redelivered (its ack wait ran out): the first copy stands.
        if sequence > self.last {
            self.waiting.entry(sequence).or_insert(message);
        }
        Ok(())
    }

    /// Ends the hold-back once the consumer counts no more pending deliveries than are held.
    fn sync(&mut self, pending: usize) {
        self.synced = self.synced || self.waiting.len() >= pending;
    }

    /// Hands on what may be now; returns how many, the last of [`InHand::handed`].
    fn ready(&mut self) -> usize {
        if !self.synced {
            return 0;
        }
        let earlier = |sequence: u64| sequence <= self.boundary;
        if self.waiting.keys().next().is_some_and(|s| earlier(*s)) {
            if !self.handed.is_empty() {
                return 0;
            }
            let (sequence, message) = self.waiting.pop_first().expect("first");
            self.head.get_or_insert(sequence);
            return self.hand([(sequence, message)]);
        }
        let waiting = std::mem::take(&mut self.waiting);
        self.hand(waiting)
    }

    /// Whether the server's delivery count of `sequence` stands: for every delivery but the
    /// earlier ones after the first.
    fn counts(&self, sequence: i64) -> bool {
        let sequence = u64::try_from(sequence).unwrap_or(0);
        sequence > self.boundary || self.head == Some(sequence)
    }

    fn hand(&mut self, messages: impl IntoIterator<Item = (u64, jetstream::Message)>) -> usize {
        let before = self.handed.len();
        for (sequence, message) in messages {
            self.last = sequence;
            self.handed.push_back((sequence, message));
        }
        self.handed.len() - before
    }

    /// The last `count` deliveries handed on.
    fn newest(&self, count: usize) -> impl Iterator<Item = &jetstream::Message> {
        self.handed
            .range(self.handed.len() - count..)
            .map(|(_, message)| message)
    }

    /// Acknowledges what was handed on up to `upto`, a stream sequence.
    async fn acked(&mut self, upto: i64) -> Result<()> {
        let upto = u64::try_from(upto).unwrap_or(0);
        while let Some((sequence, _)) = self.handed.front() {
            if *sequence > upto {
                break;
            }
            let (_, message) = self.handed.pop_front().expect("front");
            message.ack().await.map_err(bus_err("ack"))?;
        }
        Ok(())
    }

    fn held(&self) -> impl Iterator<Item = &jetstream::Message> {
        self.handed
            .iter()
            .map(|(_, m)| m)
            .chain(self.waiting.values())
    }

    async fn in_progress(&self) {
        for message in self.held() {
            if let Err(e) = message.ack_with(AckKind::Progress).await {
                tracing::warn!(error = %e, "cannot extend a delivery's ack wait");
                return;
            }
        }
    }
}
