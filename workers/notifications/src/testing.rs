//! Starts a real notification service for a test, with a sender that counts what it sends.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use oms_saga::{
    config::BusConfig,
    testing::{self, TestService},
};
use uuid::Uuid;

use crate::{
    NotificationsConfig,
    send::{Notification, Sender},
};

/// Counts the messages it is asked to send, per causing event; refuses those to the customers
/// it is told to.
#[derive(Debug, Default)]
pub struct CountingSender {
    sent: Mutex<HashMap<Uuid, usize>>,
    refused: Mutex<HashSet<Uuid>>,
}

/// Why [`CountingSender`] refuses a message.
pub const REFUSAL: &str = "the customer's mailbox is full";

impl CountingSender {
    /// Refuses every message to `customer_id` from now on.
    pub fn refuse(&self, customer_id: Uuid) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.insert(customer_id);
        }
    }

    /// How often a message was sent for `event_id`.
    pub fn sent_for(&self, event_id: Uuid) -> usize {
        self.sent
            .lock()
            .map_or(0, |s| s.get(&event_id).copied().unwrap_or(0))
    }

    /// How many messages were sent for each event: all must be 1.
    pub fn counts(&self) -> Vec<usize> {
        self.sent
            .lock()
            .map(|s| s.values().copied().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Sender for CountingSender {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        if self
            .refused
            .lock()
            .map_err(|e| e.to_string())?
            .contains(&n.customer_id)
        {
            return Err(REFUSAL.into());
        }
        let mut sent = self.sent.lock().map_err(|e| e.to_string())?;
        *sent.entry(n.event_id).or_default() += 1;
        Ok(())
    }
}

#[derive(Debug)]
pub struct TestNotifications {
    pub service: TestService,
    pub config: NotificationsConfig,
    pub db: testing::TestDatabase,
    pub sender: Arc<CountingSender>,
}

impl TestNotifications {
    /// A notification service on `bus` (whose registry must be up) reacting to `orders_topic`.
    pub async fn spawn(bus: BusConfig, orders_topic: &str) -> Self {
        Self::spawn_writing(bus, &[orders_topic], testing::unique("notifications")).await
    }

    /// A notification service reacting to `topics` (the orders', and the payments'), writing
    /// to `topic`.
    pub async fn spawn_writing(bus: BusConfig, topics: &[&str], topic: String) -> Self {
        let db = testing::database(&crate::MIGRATOR).await;
        let mut config = NotificationsConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        config.bus = bus;
        config.topic = topic;
        config.partitions = 3;
        config.consumer.group = testing::unique("notifications");
        config.consumer.topics = topics.iter().map(|t| (*t).to_owned()).collect();
        let sender = Arc::new(CountingSender::default());
        config.trace = oms_saga::testing::trace_config();
        let (run, counting) = (config.clone(), sender.clone());
        let service = TestService::start(move |listener, shutdown| {
            crate::run_with(run.clone(), counting.clone(), listener, shutdown)
        })
        .await;
        Self {
            service,
            config,
            db,
            sender,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }
}
