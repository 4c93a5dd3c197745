//! Statements whose best plan depends on their parameters are planned at each call.
//!
//! sqlx prepares each statement once per connection, and after a prepared statement's fifth run
//! PostgreSQL may settle on a generic plan, made without the parameters' values, which it keeps
//! until something changes the table's statistics. Two kinds of statement get a poor one:
//!
//! - those over a batch (`WHERE id = ANY($1)`, `UPDATE … FROM unnest(…)`): while the table is
//!   small, a sequential scan (or a hash join over one) is the cheaper plan, and settled then it
//!   outlives the small table wherever nothing analyzes it (autovacuum off, or not yet round on a
//!   young database), so that each batch reads the whole table;
//! - lists with optional filters (`$1 IS NULL OR customer_id = $1`), whose one plan has to serve
//!   every combination of filters, and so uses none of their indexes.
//!
//! Measured on the benchmark's stack, where autovacuum is off, planning them at each call cut
//! PostgreSQL's CPU per saga by a quarter over 30 seconds at full load (BENCHMARKS.md), the outbox
//! relay's mark among them.
//! [`PlannedPerCall`] has them planned with the values and table they meet. The price is the
//! planning, and sqlx's extra round trip to describe an unnamed statement, once a batch or a page
//! rather than once an event; a lookup of one row by its key plans the same at every size and
//! keeps its prepared plan.

use sqlx::{
    Postgres,
    postgres::PgArguments,
    query::{Query, QueryAs},
};

/// Marks a statement to be planned at each call, with the parameters and table it meets.
pub trait PlannedPerCall {
    fn planned_per_call(self) -> Self;
}

impl PlannedPerCall for Query<'_, Postgres, PgArguments> {
    fn planned_per_call(self) -> Self {
        self.persistent(false)
    }
}

impl<O> PlannedPerCall for QueryAs<'_, Postgres, O, PgArguments> {
    fn planned_per_call(self) -> Self {
        self.persistent(false)
    }
}
