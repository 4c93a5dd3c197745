//! Logging and metrics set-up, the same for every service.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    Error, Result,
    config::{LogConfig, LogFormat},
};

/// Installs the global subscriber: human-readable by default, JSON lines when configured.
pub fn init_logging(config: &LogConfig) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .map_err(|e| Error::Config(format!("log.filter: {e}")))?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.format {
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
    installed.map_err(|e| Error::Telemetry(e.to_string()))
}

/// The process-wide Prometheus recorder. Installed on first use, so that several services started
/// in one test process share it instead of fighting over the global slot.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is already installed, and then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
