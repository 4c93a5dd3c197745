//! The plumbing every OMS service shares, written once so that each service reads as its own rules.
//!
//! - [`config`]: layered configuration (defaults, a TOML file, `OMS_` environment variables, flags).
//! - [`telemetry`]: logging set-up and the Prometheus recorder.
//! - [`trace`]: each service's tracer: spans across HTTP and the bus, exported to Zipkin.
//! - [`problem`]: RFC 9457 problem+json errors and extractors that reject with them.
//! - [`event`]: the envelope every event travels in, and the codec seam that turns it into bytes.
//! - [`schemas`] and [`avro`]: the events' Avro schemas, and the codec that writes them in the
//!   Confluent wire format with a schema registry.
//! - [`bus`]: the [`bus::EventBus`] trait. Kafka is its first adapter; nothing outside `bus::kafka`
//!   names a broker client type, so a second bus can be added without touching a service.
//! - [`outbox`]: the transactional outbox: services write events in their own database transaction,
//!   and the relay publishes them, in order, once the broker acknowledges.
//! - [`consumer`]: the consume loop every worker shares: decode, deduplicate in the inbox, handle
//!   and commit, then acknowledge; retries with backoff, dead letters, redrive.
//! - [`money`]: currencies and prices in integer minor units.
//! - [`page`]: keyset pages for list endpoints.
//! - [`plan`]: statements PostgreSQL plans at each call: those over a batch, and filtered lists.
//! - [`docs`]: OpenAPI documents and Swagger UI.
//! - [`identity`]: the headers in which the gateway tells services who the caller is.
//! - [`retry`]: the backoff policy.
//! - [`service`]: a service binary's `main`: flags, config, logging, migrate or serve.
//! - [`schedule`]: jobs on a clock (deadlines, sending), repeated until shutdown.
//! - [`worker`]: running a saga worker: consumer, relay and HTTP side together.
//! - [`server`]: serving a router on a bound listener with a shutdown future.
//! - `testing` (feature `testing`): helpers that give each test its own database, topics and brokers.

pub mod avro;
pub mod bus;
pub mod config;
pub mod consumer;
pub mod docs;
mod error;
pub mod event;
pub mod identity;
pub mod money;
pub mod outbox;
pub mod page;
pub mod plan;
pub mod problem;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod schemas;
pub mod server;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod worker;

pub use error::{Error, Result, database_unavailable};
