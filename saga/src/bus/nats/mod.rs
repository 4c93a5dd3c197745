//! The NATS JetStream adapter, over async-nats. The only module that names NATS types.
//!
//! Each Kafka concept the bus contract relies on, and its counterpart here:
//! - **A topic with partitions** is a stream named after the topic (dots become `_`), with one
//!   subject per partition: `<topic>.<partition>.<key>`. The key picks the partition by a stable
//!   hash, so one order's events share a partition; the subject count is the partition count.
//! - **A consumer group** is one durable pull consumer per partition, `<group>-p<partition>`.
//! - **A partition assigned to one member** is a lease the members of a group agree on
//!   ([`member`]); the member holding it reads it in batches, with up to `in_flight` deliveries
//!   unacknowledged, and hands them on in the partition's order, redeliveries included
//!   ([`read`]).
//! - **Offsets stored after commit** are explicit acks, sent by the partition's reader for
//!   everything up to what [`Subscription::ack`] names.
//! - **The session timeout** is `ack_wait`: while a member holds a delivery it keeps telling the
//!   server it is in progress, so only a crashed or hung member has its deliveries moved on.
//!   [`Delivery::delivered`] counts the attempts, which the consume loop bounds.
//! - **Headers** are NATS headers, with the same names and values.

mod member;
mod read;

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, Context, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::{ConsumerInfoErrorKind, GetStreamErrorKind},
        response::Response,
        stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    },
};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::{
    sync::{OnceCell, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use self::{
    member::Member,
    read::{Group, Incoming, PartitionReader},
};
use super::{Delivery, EventBus, Headers, Message, Subscription, TopicSpec};
use crate::{Error, Result, config::NatsConfig};

/// How long one JetStream API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a subscription looks again for a stream that does not exist yet.
const MISSING_STREAM_POLL: Duration = Duration::from_millis(200);

pub struct NatsBus {
    config: NatsConfig,
    /// Connected on first use, so that a service starts while the server is away, as it does
    /// with Kafka.
    jetstream: OnceCell<Context>,
    /// Partition counts of the topics published to, read once from their streams.
    partitions: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("client_name", &self.config.client_name)
            .finish_non_exhaustive()
    }
}

fn bus_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Bus(format!("nats {context}: {e}"))
}

/// `name` as a stream or consumer name, which may not contain dots, wildcards or spaces.
fn safe_name(name: &str) -> String {
    name.replace(['.', '*', '>', ' ', '\t'], "_")
}

/// The stream that carries `topic`.
fn stream_name(topic: &str) -> String {
    safe_name(topic)
}

/// A stream's partitions: one subject each.
fn partition_count(stream: &stream::Stream) -> u32 {
    u32::try_from(stream.cached_info().config.subjects.len())
        .unwrap_or(1)
        .max(1)
}

fn partition_subject(topic: &str, partition: u32) -> String {
    format!("{topic}.{partition}.*")
}

/// The durable consumer of `group` on one partition.
fn consumer_name(group: &str, partition: u32) -> String {
    format!("{}-p{partition}", safe_name(group))
}

/// The partition of `key`: FNV-1a, stable across processes and releases.
fn partition_of(key: &str, partitions: u32) -> u32 {
    let hash = key.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % partitions.max(1)
}

/// A key as one subject token: `%`, the separators, wildcards, spaces and control characters
/// are escaped as `%XX`; the empty key is `%`.
fn key_token(key: &str) -> String {
    if key.is_empty() {
        return "%".into();
    }
    let mut token = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'%' | b'.' | b'*' | b'>' | 0..=b' ' | 0x7f.. => {
                token.push_str(&format!("%{byte:02X}"));
            }
            _ => token.push(char::from(byte)),
        }
    }
    token
}

fn key_from_token(token: &str) -> String {
    if token == "%" {
        return String::new();
    }
    let bytes = token.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| token.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                key.push(byte);
                i += 3;
            }
            None => {
                key.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&key).into_owned()
}

/// NATS header values are text on one line: a value that is not UTF-8, or that spans lines,
/// travels lossily.
fn to_nats_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &headers.0 {
        let value = String::from_utf8_lossy(value).replace(['\r', '\n'], " ");
        map.insert(name.as_str(), value);
    }
    map
}

/// Headers in name order: NATS does not keep the order they were written in.
fn from_nats_headers(map: Option<&HeaderMap>) -> Headers {
    let mut headers: Vec<(String, Vec<u8>)> = map
        .into_iter()
        .flat_map(|map| map.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().as_bytes().to_vec()))
        })
        .collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    Headers(headers)
}

impl NatsBus {
    pub fn new(config: &NatsConfig) -> Self {
        Self {
            config: config.clone(),
            jetstream: OnceCell::new(),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    async fn jetstream(&self) -> Result<&Context> {
        self.jetstream
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .name(&self.config.client_name)
                    .retry_on_initial_connect()
                    .request_timeout(Some(REQUEST_TIMEOUT))
                    .connect(self.config.url.expose())
                    .await
                    .map_err(bus_err("connect"))?;
                Ok(jetstream::new(client))
            })
            .await
    }

    fn stream_config(&self, spec: &TopicSpec) -> stream::Config {
        let partitions = u32::try_from(spec.partitions.max(1)).unwrap_or(1);
        stream::Config {
            name: stream_name(&spec.name),
            subjects: (0..partitions)
                .map(|p| partition_subject(&spec.name, p))
                .collect(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            max_age: self.config.max_age,
            max_bytes: self.config.max_bytes,
            discard: DiscardPolicy::New,
            ..Default::default()
        }
    }

    fn group(&self, group: Option<&str>) -> Group {
        Group {
            name: group.map(str::to_owned),
            ack_wait: self.config.ack_wait,
            retention: self.config.group_retention,
            in_flight: self.config.in_flight,
        }
    }

    /// A member of `group` reading `topics`, or a browser of every partition of them.
    fn read(
        &self,
        jetstream: &Context,
        group: Option<&str>,
        topics: &[String],
    ) -> NatsSubscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = match group {
            Some(group) => tokio::spawn(
                Member {
                    jetstream: jetstream.clone(),
                    group: self.group(Some(group)),
                    topics: topics.to_vec(),
                    lease: self.config.lease,
                    replicas: self.config.replicas,
                    sender,
                    stop: stop.clone(),
                }
                .run(),
            ),
            None => tokio::spawn(browse(
                jetstream.clone(),
                self.group(None),
                topics.to_vec(),
                sender,
                stop.clone(),
            )),
        };
        NatsSubscription {
            receiver,
            acks: HashMap::new(),
            stop,
            task: Some(task),
        }
    }

    async fn stream(&self, topic: &str) -> Result<Option<stream::Stream>> {
        match self.jetstream().await?.get_stream(stream_name(topic)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(bus_err("stream")(e)),
        }
    }

    /// The stream of `topic`, which must exist.
    async fn existing_stream(&self, topic: &str) -> Result<stream::Stream> {
        self.stream(topic)
            .await?
            .ok_or_else(|| Error::Bus(format!("nats: no stream for topic {topic}")))
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some(count) = self.cached_partitions(topic) {
            return Ok(count);
        }
        let count = partition_count(&self.existing_stream(topic).await?);
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned(), count);
        Ok(count)
    }

    fn cached_partitions(&self, topic: &str) -> Option<u32> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied()
    }

    /// The stream sequences of `partition`'s messages up to `until`: the last `back` of them,
    /// or all with `None`. Read through a short-lived consumer that fetches headers only.
    async fn sequences_until(
        &self,
        stream: &stream::Stream,
        topic: &str,
        partition: u32,
        until: u64,
        back: Option<u64>,
    ) -> Result<VecDeque<u64>> {
        let reader: PullConsumer = stream
            .create_consumer(pull::Config {
                filter_subject: partition_subject(topic, partition),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                headers_only: true,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(bus_err("rewind reader"))?;
        let keep = back.map_or(usize::MAX, |b| usize::try_from(b).unwrap_or(usize::MAX));
        let mut sequences = VecDeque::new();
        'read: loop {
            let mut batch = reader
                .fetch()
                .max_messages(1000)
                .messages()
                .await
                .map_err(bus_err("rewind read"))?;
            let mut read = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(bus_err("rewind read"))?;
                let sequence = message
                    .info()
                    .map_err(bus_err("rewind read"))?
                    .stream_sequence;
                if sequence > until {
                    break 'read;
                }
                read += 1;
                sequences.push_back(sequence);
                if sequences.len() > keep {
                    sequences.pop_front();
                }
            }
            if read == 0 {
                break;
            }
        }
        Ok(sequences)
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let jetstream = self.jetstream().await?;
        for spec in topics {
            jetstream
                .get_or_create_stream(self.stream_config(spec))
                .await
                .map_err(|e| Error::Bus(format!("creating stream for topic {}: {e}", spec.name)))?;
        }
        Ok(())
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        let jetstream = self.jetstream().await?;
        // Send every message first, in order, then wait for the acknowledgements: one
        // connection keeps the order, and the server stores each in its arrival order.
        let fail = |message: &Message, reason: String| Error::Publish {
            topic: message.topic.clone(),
            key: message.key.clone(),
            reason,
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in &messages {
            let partitions = self
                .partitions(&message.topic)
                .await
                .map_err(|e| fail(message, e.to_string()))?;
            let subject = format!(
                "{}.{}.{}",
                message.topic,
                partition_of(&message.key, partitions),
                key_token(&message.key)
            );
            let ack = jetstream
                .publish_with_headers(
                    subject,
                    to_nats_headers(&message.headers),
                    message.payload.clone().into(),
                )
                .await
                .map_err(|e| fail(message, e.to_string()))?;
            pending.push((message, ack));
        }
        for (message, ack) in pending {
            ack.await.map_err(|e| fail(message, e.to_string()))?;
        }
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>> {
        let jetstream = self.jetstream().await?;
        Ok(Box::new(self.read(jetstream, Some(group), topics)))
    }

    async fn browse(&self, topics: &[String]) -> Result<Box<dyn Subscription>> {
        let jetstream = self.jetstream().await?;
        Ok(Box::new(self.read(jetstream, None, topics)))
    }

    fn retention(&self) -> Duration {
        self.config.max_age
    }

    async fn kept(&self, topic: &str) -> Result<u64> {
        Ok(self
            .existing_stream(topic)
            .await?
            .cached_info()
            .state
            .messages)
    }

    async fn ping(&self) -> Result<()> {
        // The account request proves that JetStream answers. Its body is read loosely: its
        // fields differ between server versions.
        let response: Response<serde_json::Value> = self
            .jetstream()
            .await?
            .request("INFO", &serde_json::json!({}))
            .await
            .map_err(bus_err("account info"))?;
        match response {
            Response::Ok(_) => Ok(()),
            Response::Err { error } => Err(bus_err("account info")(error)),
        }
    }

    async fn rewind(
        &self,
        group: &str,
        topic: &str,
        back: Option<u64>,
        not_before: SystemTime,
    ) -> Result<u64> {
        let stream = self.existing_stream(topic).await?;
        let last = stream.cached_info().state.last_sequence;
        // Where each partition's group is, and what it would receive again; nothing moves
        // before every partition is known to stay within the inbox's memory.
        let mut moves = Vec::new();
        for partition in 0..partition_count(&stream) {
            let name = consumer_name(group, partition);
            // Where the group is: its acknowledged floor, or the end for a group that never
            // read this partition (as Kafka counts a group without a committed offset).
            let at = match stream.consumer_info(&name).await {
                Ok(info) => Some(info.ack_floor.stream_sequence),
                Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
                Err(e) => return Err(bus_err("consumer info")(e)),
            };
            let sequences = self
                .sequences_until(&stream, topic, partition, at.unwrap_or(last), back)
                .await?;
            let Some(&first) = sequences.front() else {
                continue;
            };
            let sent = stream
                .get_raw_message(first)
                .await
                .map_err(bus_err("rewind"))?
                .time;
            if SystemTime::from(sent) < not_before {
                let partition = i32::try_from(partition).unwrap_or(i32::MAX);
                return Err(super::too_far(group, topic, partition, not_before));
            }
            moves.push((name, partition, at, first, sequences.len() as u64));
        }
        let mut again = 0;
        for (name, partition, at, first, count) in moves {
            if at.is_some() {
                stream
                    .delete_consumer(&name)
                    .await
                    .map_err(bus_err("delete consumer"))?;
            }
            stream
                .create_consumer(self.group(Some(group)).consumer(
                    topic,
                    partition,
                    DeliverPolicy::ByStartSequence {
                        start_sequence: first,
                    },
                ))
                .await
                .map_err(bus_err("create consumer"))?;
            again += count;
        }
        Ok(again)
    }
}

/// Browses `topics`: waits for each one's stream, then reads every partition of it.
async fn browse(
    jetstream: Context,
    group: Group,
    topics: Vec<String>,
    sender: mpsc::UnboundedSender<Incoming>,
    stop: CancellationToken,
) {
    let mut readers = tokio::task::JoinSet::new();
    for topic in topics {
        // A topic that does not exist yet is waited for: its producer creates it.
        let stream = loop {
            match jetstream.get_stream(stream_name(&topic)).await {
                Ok(stream) => break stream,
                Err(e) => {
                    tracing::debug!(%topic, error = %e, "waiting for the stream");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(MISSING_STREAM_POLL) => {}
                    }
                }
            }
        };
        for partition in 0..partition_count(&stream) {
            readers.spawn(
                PartitionReader {
                    stream: stream.clone(),
                    topic: topic.clone(),
                    group: group.clone(),
                    partition,
                    sender: sender.clone(),
                    stop: stop.clone(),
                }
                .run(),
            );
        }
    }
    while readers.join_next().await.is_some() {}
}

/// A group's member, or a browser: deliveries from its partitions' readers.
struct NatsSubscription {
    receiver: mpsc::UnboundedReceiver<Incoming>,
    /// Where to acknowledge each partition's deliveries: its reader.
    acks: HashMap<(String, i32), mpsc::UnboundedSender<i64>>,
    stop: CancellationToken,
    /// The member's task, or the browser's readers.
    task: Option<JoinHandle<()>>,
}

impl Drop for NatsSubscription {
    /// Stops the readers, which hand back what they hold; the member gives its partitions up.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Delivery> {
        let incoming = self
            .receiver
            .recv()
            .await
            .ok_or_else(|| Error::Bus("nats: every reader stopped".into()))?;
        let delivery = incoming.delivery;
        self.acks.insert(
            (delivery.message.topic.clone(), delivery.partition),
            incoming.acks,
        );
        Ok(delivery)
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        let key = (delivery.message.topic.clone(), delivery.partition);
        if let Some(acks) = self.acks.get(&key) {
            // The reader may be gone already (the partition moved on); the delivery then comes
            // again to the partition's next reader.
            let _ = acks.send(delivery.offset);
        }
        Ok(())
    }

    async fn close(mut self: Box<Self>) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_one_subject_token_and_back() {
        for key in ["", "4f1c9a0e-2b", "a.b*c>d e%f", "ünï\tcode\n"] {
            let token = key_token(key);
            assert!(!token.is_empty());
            assert!(!token.contains(['.', '*', '>', ' ', '\t', '\n']), "{token}");
            assert_eq!(key_from_token(&token), key);
        }
    }

    #[test]
    fn a_key_always_lands_on_the_same_partition_and_keys_spread() {
        assert_eq!(partition_of("order-1", 6), partition_of("order-1", 6));
        let used: std::collections::HashSet<u32> = (0..100)
            .map(|i| partition_of(&format!("order-{i}"), 6))
            .collect();
        assert_eq!(used.len(), 6);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn names_are_valid_for_nats() {
        assert_eq!(stream_name("orders.dlq"), "orders_dlq");
        assert_eq!(consumer_name("oms.inventory", 2), "oms_inventory-p2");
    }
}
