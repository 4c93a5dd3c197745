//! The Kafka adapter, over librdkafka. The only module that names rdkafka types.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rdkafka::{
    ClientConfig, Message as _, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    message::{Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};

use super::{Delivery, EventBus, Headers, Message, Subscription, TopicSpec};
use crate::{Error, Result, config::KafkaConfig};

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a topic's log rolls to a new segment: Kafka deletes whole segments, so a message
/// outlives its retention by at most this.
const SEGMENT: Duration = Duration::from_secs(24 * 3600);

pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.config.brokers)
            .finish()
    }
}

fn bus_err(context: &str) -> impl Fn(KafkaError) -> Error + '_ {
    move |e| Error::Bus(format!("kafka {context}: {e}"))
}

impl KafkaBus {
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let mut producer = Self::client_config(config);
        producer
            // Idempotence keeps per-partition order through retries, and acks=all waits for
            // every in-sync replica, so an acknowledged event survives a broker loss.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            // Never give up on a message: a timed-out message could leave a gap that a later one
            // of the same key jumps. The relay waits instead, and shutdown interrupts the wait.
            .set("message.timeout.ms", "0")
            // Every key is hashed, the empty one too (librdkafka's default scatters empty keys
            // at random, which would break their order), as Java producers hash them.
            .set("partitioner", "murmur2_random");
        let producer = Self::create(producer, config).map_err(bus_err("producer"))?;
        let admin =
            Self::create(Self::client_config(config), config).map_err(bus_err("admin client"))?;
        Ok(Self {
            config: config.clone(),
            producer,
            admin,
        })
    }

    /// A consumer of `topics` in `group`; offsets are committed only if `commit`.
    fn consume(
        &self,
        group: &str,
        topics: &[String],
        commit: bool,
    ) -> Result<Box<dyn Subscription>> {
        let mut consumer = Self::client_config(&self.config);
        consumer
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            // Offsets are stored only by `ack`, after the consumer's work has committed; the
            // background commit then sends only what was stored.
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", commit.to_string())
            .set("auto.commit.interval.ms", "500")
            .set(
                "session.timeout.ms",
                self.config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout.as_millis() / 3)
                    .max(100)
                    .to_string(),
            )
            // A worker may start before the service that creates its topic: notice the topic
            // within seconds, not librdkafka's default five minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // A broker that does not answer a waiting fetch as soon as a message arrives (nisshi
            // does not) holds each message up to this long. With librdkafka's 500 ms, a message
            // took 204 ms p50 from produce to consume on nisshi 0.8.1; with 50 ms, 6 ms. An idle
            // consumer asks 20 times a second instead of twice.
            .set("fetch.wait.max.ms", "50");
        let consumer: StreamConsumer =
            Self::create(consumer, &self.config).map_err(bus_err("consumer"))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(bus_err("subscribe"))?;
        Ok(Box::new(KafkaSubscription {
            consumer: Some(consumer),
            ends: Default::default(),
            producer: self.producer.clone(),
        }))
    }

    fn client_config(config: &KafkaConfig) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", &config.client_id);
        client
    }

    /// Creates a client; the operator's `properties` come last, so they override our defaults.
    fn create<T: rdkafka::config::FromClientConfig>(
        mut client: ClientConfig,
        config: &KafkaConfig,
    ) -> KafkaResult<T> {
        for (key, value) in &config.properties {
            client.set(key, value.expose());
        }
        client.create()
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let retention = self.config.retention.as_millis().to_string();
        let segment = self.config.retention.min(SEGMENT).as_millis().to_string();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
                .set("retention.ms", &retention)
                .set("segment.ms", &segment)
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(bus_err("create topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Bus(format!("creating topic {topic}: {code}")));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        // Enqueue every message first, in order, then wait for the acknowledgements: librdkafka
        // keeps the enqueue order per partition, and batching them is what makes the relay fast.
        let mut pending = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.0.len());
            for (name, value) in &message.headers.0 {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.payload)
                .headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((message, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        return Err(Error::Publish {
                            topic: message.topic.clone(),
                            key: message.key.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        for (message, delivery) in pending {
            let fail = |reason: String| Error::Publish {
                topic: message.topic.clone(),
                key: message.key.clone(),
                reason,
            };
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(fail(e.to_string())),
                Err(_) => return Err(fail("the producer was dropped".into())),
            }
        }
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>> {
        self.consume(group, topics, true)
    }

    async fn browse(&self, topics: &[String]) -> Result<Box<dyn Subscription>> {
        // A group of its own that never commits: Kafka keeps nothing for it.
        let group = format!("oms-browse-{}", uuid::Uuid::new_v4().simple());
        self.consume(&group, topics, false)
    }

    async fn rewind(
        &self,
        group: &str,
        topic: &str,
        back: Option<u64>,
        not_before: SystemTime,
    ) -> Result<u64> {
        let mut client = Self::client_config(&self.config);
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer =
            Self::create(client, &self.config).map_err(bus_err("consumer"))?;
        let (group, topic) = (group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(bus_err("metadata"))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut all = TopicPartitionList::new();
            for partition in &partitions {
                all.add_partition(&topic, *partition);
            }
            let committed = consumer
                .committed_offsets(all, METADATA_TIMEOUT)
                .map_err(bus_err("committed offsets"))?;
            // Where each partition's group is, and where it goes.
            let mut moves = Vec::with_capacity(partitions.len());
            for partition in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                    .map_err(bus_err("watermarks"))?;
                let at = match committed
                    .find_partition(&topic, partition)
                    .map(|p| p.offset())
                {
                    Some(Offset::Offset(at)) => at,
                    _ => high,
                };
                let to = match back {
                    Some(back) => (at - i64::try_from(back).unwrap_or(i64::MAX)).max(low),
                    None => low,
                };
                moves.push((partition, at, to));
            }
            // The first message of each partition published at `not_before` or later; none
            // is that recent where the answer is the end.
            let since = not_before
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let mut times = TopicPartitionList::new();
            for (partition, _, _) in &moves {
                times
                    .add_partition_offset(&topic, *partition, Offset::Offset(since))
                    .map_err(bus_err("rewind"))?;
            }
            let recent = consumer
                .offsets_for_times(times, METADATA_TIMEOUT)
                .map_err(bus_err("offsets for times"))?;
            let mut rewound = TopicPartitionList::new();
            let mut again = 0;
            for (partition, at, to) in moves {
                let first_recent =
                    match recent.find_partition(&topic, partition).map(|p| p.offset()) {
                        Some(Offset::Offset(first)) => first,
                        _ => at,
                    };
                if to < at && to < first_recent {
                    return Err(super::too_far(&group, &topic, partition, not_before));
                }
                again += (at - to).max(0) as u64;
                rewound
                    .add_partition_offset(&topic, partition, Offset::Offset(to))
                    .map_err(bus_err("rewind"))?;
            }
            consumer
                .commit(&rewound, CommitMode::Sync)
                .map_err(bus_err("commit"))?;
            Ok(again)
        })
        .await
        .map_err(|e| Error::Bus(format!("rewind: {e}")))?
    }

    fn retention(&self) -> Duration {
        self.config.retention + self.config.retention.min(SEGMENT)
    }

    async fn kept(&self, topic: &str) -> Result<u64> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let metadata = client
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(bus_err("metadata"))?;
            let mut kept = 0;
            for partition in metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions())
            {
                let (low, high) = client
                    .fetch_watermarks(&topic, partition.id(), METADATA_TIMEOUT)
                    .map_err(bus_err("watermarks"))?;
                kept += u64::try_from(high - low).unwrap_or(0);
            }
            Ok(kept)
        })
        .await
        .map_err(|e| Error::Bus(format!("kafka watermarks: {e}")))?
    }

    async fn ping(&self) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map(|_| ())
        })
        .await
        .map_err(|e| Error::Bus(format!("kafka metadata: {e}")))?
        .map_err(bus_err("metadata"))
    }
}

struct KafkaSubscription {
    /// Taken only to be closed, by `close` or on drop.
    consumer: Option<StreamConsumer>,
    /// The end offset of each partition, as last fetched, and when; for [`Delivery::behind`].
    ends: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, i32), PartitionEnd>>>,
    /// Asks for end offsets: a client outside the group, so that a fetch still in flight never
    /// keeps a closed subscription's group member alive.
    producer: FutureProducer,
}

#[derive(Debug, Clone, Copy)]
struct PartitionEnd {
    offset: Option<i64>,
    asked: std::time::Instant,
}

/// How old a partition's end offset may be before it is asked for again.
const END_REFRESH: Duration = Duration::from_secs(5);

impl KafkaSubscription {
    fn consumer(&self) -> &StreamConsumer {
        self.consumer
            .as_ref()
            .expect("a subscription's consumer is taken only when it closes")
    }

    /// How many messages of the partition follow `offset`, as far as its end offset (fetched in
    /// the background, at most every few seconds, since asking blocks on a round trip) tells.
    fn behind(&self, topic: &str, partition: i32, offset: i64) -> Option<u64> {
        let key = (topic.to_owned(), partition);
        let mut ends = self
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = ends.get(&key).copied();
        if known.is_none_or(|end| end.asked.elapsed() >= END_REFRESH) {
            ends.insert(
                key.clone(),
                PartitionEnd {
                    offset: known.and_then(|end| end.offset),
                    asked: std::time::Instant::now(),
                },
            );
            let (client, ends) = (self.producer.clone(), self.ends.clone());
            tokio::task::spawn_blocking(move || {
                let fetched =
                    client
                        .client()
                        .fetch_watermarks(&key.0, key.1, Duration::from_secs(2));
                if let Ok((_, high)) = fetched {
                    let mut ends = ends
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(end) = ends.get_mut(&key) {
                        end.offset = Some(high);
                    }
                }
            });
        }
        let end = known.and_then(|end| end.offset)?;
        Some(u64::try_from(end - offset - 1).unwrap_or(0))
    }
}

/// How long `close` waits for the broker to confirm that the member left.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Closes `consumer` on a thread of its own, and tells when it is closed. Closing commits the
/// stored offsets and leaves the group, and librdkafka waits for the broker to answer, without
/// limit (rust-rdkafka #509): on a runtime's thread, a broker that hangs would stall every task
/// of the runtime, and its shutdown. A plain thread, not a blocking task, since the runtime
/// waits for those when it shuts down.
fn close_apart(consumer: StreamConsumer) -> tokio::sync::oneshot::Receiver<()> {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to close a consumer on; it closes here");
    }
    done
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            close_apart(consumer);
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Delivery> {
        let message = loop {
            match self.consumer().recv().await {
                Ok(message) => break message,
                // A subscribed topic that does not exist yet is waited for, not an error: the
                // producing service creates it when it starts.
                Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                )) => {
                    tracing::debug!("a subscribed topic does not exist yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(bus_err("receive")(e)),
            }
        };
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let behind = self.behind(message.topic(), message.partition(), message.offset());
        Ok(Delivery {
            message: Message {
                topic: message.topic().to_owned(),
                key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: Headers(headers),
            },
            partition: message.partition(),
            offset: message.offset(),
            delivered: 1,
            behind,
        })
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &delivery.message.topic,
            delivery.partition,
            Offset::Offset(delivery.offset + 1),
        )
        .map_err(bus_err("ack"))?;
        match self.consumer().store_offsets(&list) {
            // The partition went to another member in a rebalance since this delivery came
            // (librdkafka refuses to store offsets of a partition it no longer holds): the new
            // owner delivers it again, from the group's last commit, and finds it handled.
            // Retrying would wait for an assignment that only polling this consumer brings.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                tracing::debug!(topic = %delivery.message.topic, partition = delivery.partition,
                    offset = delivery.offset, "acked a delivery of a partition no longer held");
                Ok(())
            }
            stored => stored.map_err(bus_err("store offset")),
        }
    }

    async fn close(mut self: Box<Self>) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        if tokio::time::timeout(CLOSE_WAIT, close_apart(consumer))
            .await
            .is_err()
        {
            tracing::warn!(wait = ?CLOSE_WAIT, "the broker did not confirm that the consumer left; \
                what it acked since the last commit may come again, to the group's next member");
        }
    }
}
