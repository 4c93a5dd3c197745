//! A group's member: which partitions it reads, leased so that only one member reads each.
//!
//! Kafka assigns a group's partitions to its members; JetStream (2.9) has no such thing, so the
//! members agree through a small stream of their own, `OMS_GROUPS`, whose messages expire after
//! the lease time:
//! - each member publishes `oms-groups.m.<group>.<member>` every third of a lease, so the
//!   members alive are the subjects present;
//! - a partition's lease is `oms-groups.l.<group>.<stream>.<partition>`, published only if it
//!   has no message (taken) or if its last one is the member's own (kept), through JetStream's
//!   expected-last-subject-sequence check; it is purged when given up, and expires when its
//!   member stops keeping it;
//! - each member holds its fair share, the partitions divided by the members (rounded up),
//!   taking free ones and giving up the ones above its share, so that partitions spread over
//!   the members and move when members come and go.
//!
//! A member runs a [`PartitionReader`] on each partition it holds and stops it as soon as it
//! gives the lease up or finds it lost.

use std::{collections::HashMap, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{
        Context,
        context::PublishErrorKind,
        stream::{self, DiscardPolicy, StorageType},
    },
};
use futures::StreamExt;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    bus_err, partition_count,
    read::{Group, Incoming, PartitionReader},
    safe_name, stream_name,
};
use crate::Result;

const STREAM: &str = "OMS_GROUPS";
const PREFIX: &str = "oms-groups";
/// How often a member looks for free partitions while it holds fewer than its share.
const TAKE_EVERY: Duration = Duration::from_secs(1);

/// The stream the members of every group agree through.
fn stream_config(lease: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{PREFIX}.>")],
        max_age: lease,
        max_messages_per_subject: 1,
        storage: StorageType::Memory,
        num_replicas: replicas,
        discard: DiscardPolicy::Old,
        ..Default::default()
    }
}

/// A partition a member holds, with its lease's last sequence and its reader.
struct Held {
    revision: u64,
    stop: CancellationToken,
    reader: JoinHandle<()>,
}

/// One member of a group, over `topics`.
pub(super) struct Member {
    pub jetstream: Context,
    pub group: Group,
    pub topics: Vec<String>,
    pub lease: Duration,
    pub replicas: usize,
    pub sender: mpsc::UnboundedSender<Incoming>,
    pub stop: CancellationToken,
}

impl Member {
    /// Takes and keeps its share of the partitions until stopped, then gives them up.
    pub async fn run(self) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let group = safe_name(self.group.name.as_deref().unwrap_or_default());
        let mut state = State {
            member_subject: format!("{PREFIX}.m.{group}.{id}"),
            group,
            id,
            groups: None,
            streams: HashMap::new(),
            held: HashMap::new(),
            members: 1,
            renewed: None,
            lease: self.lease,
        };
        let mut delays = crate::retry::backoff(Duration::from_millis(200), Duration::from_secs(5));
        // A zero lease (a misconfiguration) must not make a zero period, which tokio refuses.
        let mut tick = tokio::time::interval(
            TAKE_EVERY
                .min(self.lease / 3)
                .max(Duration::from_millis(10)),
        );
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.round(&mut state).await {
                // The stream may be gone with a restarted server (it lives in memory).
                state.groups = None;
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "keeping the group's partitions failed");
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        self.leave(&mut state).await;
    }

    /// One round: keeps what it holds (every third of a lease), counts the members, and takes
    /// or gives up partitions to hold its share.
    async fn round(&self, state: &mut State) -> Result<()> {
        let groups = match &state.groups {
            Some(groups) => groups.clone(),
            None => {
                let groups = self
                    .jetstream
                    .get_or_create_stream(stream_config(self.lease, self.replicas))
                    .await
                    .map_err(bus_err("groups stream"))?;
                // Whoever made the stream set how long its messages live, which is how long a
                // lease lasts unrenewed: a member renewing at a third of a longer lease of its
                // own would lose its leases at every turn.
                let kept = groups.cached_info().config.max_age;
                if kept != self.lease {
                    tracing::warn!(configured = ?self.lease, kept = ?kept,
                        "the groups stream keeps leases for another time than bus.nats.lease \
                         says (another service on this server set it); renewing by the stream's");
                }
                state.lease = kept;
                groups
            }
        };
        state.groups = Some(groups.clone());
        self.find_streams(state).await;
        let due = state
            .renewed
            .is_none_or(|at| at.elapsed() >= state.lease / 3);
        if due {
            self.publish(&state.member_subject, &state.id, None).await?;
            state.renewed = Some(tokio::time::Instant::now());
            let keys: Vec<(String, u32)> = state.held.keys().cloned().collect();
            for key in keys {
                self.renew(state, &key).await;
            }
            state.members = groups
                .info_with_subjects(format!("{PREFIX}.m.{}.*", state.group))
                .await
                .map_err(bus_err("group members"))?
                .count()
                .await
                .max(1);
        }
        let partitions: Vec<(String, u32)> = state.partitions();
        let share = partitions.len().div_ceil(state.members);
        while state.held.len() > share {
            let key = state.held.keys().next().cloned().expect("held");
            self.give_up(state, &key, &groups).await;
        }
        // Free partitions are tried from a place of the member's own, so that members starting
        // together do not all reach for the same ones first.
        let start = state.id.bytes().map(usize::from).sum::<usize>() % partitions.len().max(1);
        for key in partitions.iter().cycle().skip(start).take(partitions.len()) {
            if state.held.len() >= share {
                break;
            }
            if !state.held.contains_key(key) {
                self.take(state, key).await?;
            }
        }
        Ok(())
    }

    /// Learns the partition counts of the topics whose streams exist now; a topic that does not
    /// exist yet is waited for, not an error: the producing service creates it when it starts.
    async fn find_streams(&self, state: &mut State) {
        for topic in &self.topics {
            if state.streams.contains_key(topic) {
                continue;
            }
            if let Ok(stream) = self.jetstream.get_stream(stream_name(topic)).await {
                state.streams.insert(topic.clone(), stream);
            }
        }
    }

    fn lease_subject(state: &State, (topic, partition): &(String, u32)) -> String {
        format!(
            "{PREFIX}.l.{}.{}.{partition}",
            state.group,
            stream_name(topic)
        )
    }

    /// Publishes `value` on `subject`; with `after`, only if the subject's last message has that
    /// sequence (0: none). Returns the new sequence, or `None` if the check failed.
    async fn publish(&self, subject: &str, value: &str, after: Option<u64>) -> Result<Option<u64>> {
        let mut headers = HeaderMap::new();
        if let Some(after) = after {
            headers.insert("Nats-Expected-Last-Subject-Sequence", after.to_string());
        }
        let ack = self
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, value.to_owned().into())
            .await
            .map_err(bus_err("lease"))?;
        match ack.await {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(bus_err("lease")(e)),
        }
    }

    async fn take(&self, state: &mut State, key: &(String, u32)) -> Result<()> {
        let subject = Self::lease_subject(state, key);
        let Some(revision) = self.publish(&subject, &state.id, Some(0)).await? else {
            return Ok(());
        };
        tracing::debug!(topic = %key.0, partition = key.1, "took a partition");
        let stop = self.stop.child_token();
        let reader = PartitionReader {
            stream: state.streams[&key.0].clone(),
            topic: key.0.clone(),
            group: self.group.clone(),
            partition: key.1,
            sender: self.sender.clone(),
            stop: stop.clone(),
        };
        let reader = tokio::spawn(reader.run());
        state.held.insert(
            key.clone(),
            Held {
                revision,
                stop,
                reader,
            },
        );
        Ok(())
    }

    /// Keeps a lease for another lease time; one that another member holds now is lost, and
    /// its reader stopped.
    async fn renew(&self, state: &mut State, key: &(String, u32)) {
        let subject = Self::lease_subject(state, key);
        let revision = state.held[key].revision;
        match self.publish(&subject, &state.id, Some(revision)).await {
            Ok(Some(revision)) => {
                state.held.get_mut(key).expect("held").revision = revision;
            }
            Ok(None) => {
                tracing::warn!(topic = %key.0, partition = key.1, "lost a partition's lease");
                let held = state.held.remove(key).expect("held");
                stop_reader(held).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew a lease; trying again"),
        }
    }

    /// Stops reading a partition, and then frees its lease for another member, if the lease
    /// is still its own (it may have expired and been taken while the member was stalled, or
    /// gone with a restarted server).
    async fn give_up(&self, state: &mut State, key: &(String, u32), groups: &stream::Stream) {
        let held = state.held.remove(key).expect("held");
        let held_revision = held.revision;
        stop_reader(held).await;
        let subject = Self::lease_subject(state, key);
        let ours = groups
            .get_last_raw_message_by_subject(&subject)
            .await
            .is_ok_and(|last| {
                last.sequence == held_revision && last.payload == state.id.as_bytes()
            });
        if ours && let Err(e) = groups.purge().filter(subject).await {
            tracing::debug!(error = %e, "cannot free a lease; it expires");
        }
    }

    /// Gives every partition up and leaves the group.
    async fn leave(&self, state: &mut State) {
        let Some(groups) = state.groups.clone() else {
            return;
        };
        let keys: Vec<(String, u32)> = state.held.keys().cloned().collect();
        for key in keys {
            self.give_up(state, &key, &groups).await;
        }
        let _ = groups.purge().filter(state.member_subject.clone()).await;
    }
}

/// What a member knows and holds.
struct State {
    group: String,
    id: String,
    member_subject: String,
    /// The stream the members agree through, once found or made.
    groups: Option<stream::Stream>,
    streams: HashMap<String, stream::Stream>,
    held: HashMap<(String, u32), Held>,
    members: usize,
    renewed: Option<tokio::time::Instant>,
    /// How long a lease lasts unrenewed: the groups stream's `max_age`.
    lease: Duration,
}

impl State {
    /// Every partition of the topics found so far, in a stable order.
    fn partitions(&self) -> Vec<(String, u32)> {
        let mut partitions: Vec<(String, u32)> = self
            .streams
            .iter()
            .flat_map(|(topic, stream)| (0..partition_count(stream)).map(|p| (topic.clone(), p)))
            .collect();
        partitions.sort();
        partitions
    }
}

/// Stops a partition's reader and waits (a few seconds at most) until it has handed back what
/// it held.
async fn stop_reader(held: Held) {
    held.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), held.reader).await;
}
