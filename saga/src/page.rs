//! Keyset pages, as every list endpoint serves them: newest first, at most [`MAX`] items, and
//! the id to pass as `after` for the next page.

use serde::Serialize;
use uuid::Uuid;

use crate::problem::Problem;

pub const DEFAULT: i64 = 50;
pub const MAX: i64 = 200;

/// The page size a request asked for, [`DEFAULT`] if none; 400 outside 1 to [`MAX`].
pub fn limit(asked: Option<i64>) -> Result<i64, Problem> {
    let limit = asked.unwrap_or(DEFAULT);
    if (1..=MAX).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX}"
        )))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Uuid>,
}

impl<T> Page<T> {
    /// The page of `items` read with `limit`: a full page may have a next one, after its last.
    pub fn of(items: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Self {
        let next_after = (items.len() as i64 == limit)
            .then(|| items.last().map(id))
            .flatten();
        Self { items, next_after }
    }
}
