//! The payment step of the order saga. It owns the conversation with the payment provider:
//! Stripe's REST API, or any server that speaks it (localstripe here and in CI).
//!
//! - [`stripe`]: a small typed client of the calls the step makes: a PaymentIntent authorized
//!   with manual capture, then captured or cancelled, and refunds. Every call carries an
//!   Idempotency-Key derived from the order and the step, and its outcome is one of three kinds
//!   the step treats differently: a decline (the customer's card said no), a refusal (the request
//!   itself is wrong: retrying cannot help) and an unavailable provider (retry later).

pub mod stripe;

pub use stripe::{Stripe, StripeConfig, StripeError};
