//! [`AccessQuery`]: which entries an auditor asks for, with its bounds checked on the way in.

use closeloop_domain::LoopId;
use jiff::Timestamp;

use crate::entry::{AccessEntry, Actor, InvalidValue};

/// Fewest entries a query may ask for.
pub const MIN_LIMIT: usize = 1;
/// Most entries one query returns.
pub const MAX_LIMIT: usize = 1000;
/// Entries a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 100;

/// How many entries a query returns at most: [`MIN_LIMIT`] to [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimit(usize);

impl QueryLimit {
    /// A limit, if it is within bounds.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the bounds.
    pub fn new(limit: u64) -> Result<Self, InvalidValue> {
        usize::try_from(limit)
            .ok()
            .filter(|limit| (MIN_LIMIT..=MAX_LIMIT).contains(limit))
            .map(Self)
            .ok_or_else(|| {
                InvalidValue::new(format!(
                    "limit must be {MIN_LIMIT} to {MAX_LIMIT}, got {limit}"
                ))
            })
    }

    /// The limit as a count.
    #[must_use]
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for QueryLimit {
    fn default() -> Self {
        Self(DEFAULT_LIMIT)
    }
}

/// Entries to return, oldest first: those of one loop and/or one actor, recorded strictly
/// after a time, at most `limit` of them. An empty query returns the oldest entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessQuery {
    /// Only reads of this loop.
    pub loop_id: Option<LoopId>,
    /// Only reads by this actor.
    pub actor: Option<Actor>,
    /// Only entries recorded strictly after this time: pass the `at` of the last entry of a
    /// page to get the next page.
    pub after: Option<Timestamp>,
    /// At most this many entries.
    pub limit: QueryLimit,
}

impl AccessQuery {
    /// Whether `entry` is one this query asks for (all but the limit).
    #[must_use]
    pub fn matches(&self, entry: &AccessEntry) -> bool {
        self.after.is_none_or(|after| entry.at > after)
            && self
                .loop_id
                .as_ref()
                .is_none_or(|loop_id| entry.loop_id.as_ref() == Some(loop_id))
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| &entry.actor == actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_one_to_a_thousand_are_refused() {
        assert_eq!(QueryLimit::default().get(), DEFAULT_LIMIT);
        assert_eq!(QueryLimit::new(1).unwrap().get(), 1);
        assert_eq!(QueryLimit::new(1000).unwrap().get(), 1000);
        assert!(QueryLimit::new(0).is_err());
        let err = QueryLimit::new(1001).unwrap_err().to_string();
        assert!(err.contains("1 to 1000"), "{err}");
    }
}
