//! Starts a real status worker for a test, beside the test's order API: the API's database,
//! cache, bus and orders topic, consuming the given inventory topic.

use oms_api::ApiConfig;
use oms_saga::testing::{self, TestService};

use crate::StatusConfig;

#[derive(Debug)]
pub struct TestStatus {
    pub service: TestService,
    pub config: StatusConfig,
}

impl TestStatus {
    /// A status worker for the API configured by `api`, after `customise` adjusted its config.
    pub async fn spawn(
        api: &ApiConfig,
        inventory_topic: &str,
        customise: impl FnOnce(&mut StatusConfig),
    ) -> Self {
        let mut config = StatusConfig {
            database: api.database.clone(),
            cache: api.cache.clone(),
            bus: api.bus.clone(),
            orders_topic: api.topics.orders.clone(),
            orders_partitions: api.topics.partitions,
            ..StatusConfig::default()
        };
        config.consumer.group = testing::unique("order-status");
        config.consumer.topics = vec![inventory_topic.to_owned()];
        config.trace = oms_saga::testing::trace_config();
        customise(&mut config);
        let run = config.clone();
        let service = TestService::start(move |listener, shutdown| {
            crate::run(run.clone(), listener, shutdown)
        })
        .await;
        Self { service, config }
    }
}
