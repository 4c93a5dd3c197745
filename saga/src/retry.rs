//! The one retry policy of the plumbing: exponential backoff with jitter, without end. Callers
//! that must not skip work (the relay, the consumer, dead-lettering) wait as long as it takes.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays from `min` doubling up to `max`, each jittered, forever.
pub fn backoff(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    let delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build();
    // `without_max_times` never ends; the fallback only satisfies the type.
    delays.chain(std::iter::repeat(max))
}
