use std::net::SocketAddr;

use oms_saga::config::{DatabaseConfig, LogConfig};
use serde::{Deserialize, Serialize};

/// The registry's settings: the `[registry]` section, or `OMS_REGISTRY__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database: DatabaseConfig::named("oms_registry"),
            log: LogConfig::default(),
            trace: Default::default(),
        }
    }
}

oms_saga::service_config!(RegistryConfig);
