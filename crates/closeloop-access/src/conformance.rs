//! The test suite every [`AccessLog`] implementation must pass.
//!
//! Each check is an `async fn` taking a fresh, empty log with the default retention (400
//! days) whose clock is the given [`TestClock`]. [`access_conformance_tests!`] turns them into
//! one `#[tokio::test]` each for a backend:
//!
//! ```ignore
//! async fn fresh_log(clock: Clock) -> (FileAccessLog, tempfile::TempDir) { ... }
//! closeloop_access::access_conformance_tests!(fresh_log);
//! ```
//!
//! [`access_conformance_tests!`]: crate::access_conformance_tests

use std::sync::{Arc, Mutex};

use closeloop_domain::LoopId;
use jiff::{SignedDuration, Timestamp};

use crate::{AccessEntry, AccessLog, AccessQuery, Actor, Clock, QueryLimit, RoleName, What};

/// Expands to one `#[tokio::test]` per conformance check. `$make` is an async fn taking a
/// [`Clock`] and returning `(log, guard)`: a fresh empty log with the default retention and
/// that clock, and whatever must live as long as it (a temp dir).
#[macro_export]
macro_rules! access_conformance_tests {
    ($make:path) => {
        $crate::access_conformance_tests!(@each $make, [
            recorded_entries_come_back_oldest_first,
            queries_filter_by_loop_and_actor,
            after_is_exclusive_and_pages_lose_nothing,
            times_strictly_increase_when_the_clock_steps_back,
            the_limit_bounds_the_answer,
            entries_across_days_come_back_in_order,
            entries_past_the_retention_are_pruned,
            flushed_entries_stay,
        ]);
    };
    (@each $make:path, [$($check:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let clock = $crate::conformance::TestClock::default();
                let (log, _guard) = $make(clock.clock()).await;
                $crate::conformance::$check(&log, &clock).await;
            }
        )*
    };
}

/// A clock the test sets; it starts at [`START`].
#[derive(Debug, Clone)]
pub struct TestClock(Arc<Mutex<Timestamp>>);

/// Where a [`TestClock`] starts: a Friday morning.
pub const START: &str = "2026-11-27T09:30:00Z";

impl Default for TestClock {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(START.parse().expect("a valid time"))))
    }
}

impl TestClock {
    /// The time now.
    ///
    /// # Panics
    /// When a test panicked while setting it.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock")
    }

    /// Sets the time.
    ///
    /// # Panics
    /// When a test panicked while setting it.
    pub fn set(&self, now: Timestamp) {
        *self.0.lock().expect("clock") = now;
    }

    /// The clock to hand to a log.
    #[must_use]
    pub fn clock(&self) -> Clock {
        let shared = Arc::clone(&self.0);
        Arc::new(move || *shared.lock().expect("clock"))
    }
}

/// An entry of `actor` (a staff credential) reading `loop_id` at `at`.
///
/// # Panics
/// When `actor` or `loop_id` is not valid.
#[must_use]
pub fn entry(at: Timestamp, actor: &str, loop_id: Option<&str>, what: What) -> AccessEntry {
    AccessEntry {
        at,
        actor: Actor::parse(actor).expect("a valid actor"),
        role: RoleName::parse("staff").expect("a valid role"),
        loop_id: loop_id.map(|id| LoopId::parse(id).expect("a valid loop id")),
        what,
    }
}

fn query() -> AccessQuery {
    AccessQuery {
        limit: QueryLimit::new(1000).expect("within bounds"),
        ..AccessQuery::default()
    }
}

async fn record(log: &impl AccessLog, entries: Vec<AccessEntry>) {
    log.record(entries).await.expect("recorded");
}

async fn find(log: &impl AccessLog, query: AccessQuery) -> Vec<AccessEntry> {
    log.query(query).await.expect("query answered")
}

fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

/// Entries recorded in two batches come back in recording order, unchanged.
pub async fn recorded_entries_come_back_oldest_first(log: &impl AccessLog, clock: &TestClock) {
    let t = clock.now();
    let first = vec![
        entry(t, "staff:1", Some("loop-a"), What::Loop),
        entry(t + minutes(1), "auditor:2", None, What::Events),
    ];
    let second = vec![entry(
        t + minutes(2),
        "staff:1",
        Some("loop-b"),
        What::Timeline,
    )];
    record(log, first.clone()).await;
    record(log, second.clone()).await;
    record(log, Vec::new()).await;
    let mut expected = first;
    expected.extend(second);
    assert_eq!(find(log, query()).await, expected);
}

/// `loop_id` and `actor` narrow the answer, alone and together.
pub async fn queries_filter_by_loop_and_actor(log: &impl AccessLog, clock: &TestClock) {
    let t = clock.now();
    let entries = vec![
        entry(t, "staff:1", Some("loop-a"), What::Loop),
        entry(t + minutes(1), "staff:2", Some("loop-a"), What::Loop),
        entry(t + minutes(2), "staff:1", Some("loop-b"), What::Loop),
        entry(t + minutes(3), "auditor:3", None, What::Events),
    ];
    record(log, entries.clone()).await;
    let by_loop = find(
        log,
        AccessQuery {
            loop_id: Some(LoopId::parse("loop-a").expect("id")),
            ..query()
        },
    )
    .await;
    assert_eq!(by_loop, entries[..2]);
    let by_actor = find(
        log,
        AccessQuery {
            actor: Some(Actor::parse("staff:1").expect("actor")),
            ..query()
        },
    )
    .await;
    assert_eq!(by_actor, vec![entries[0].clone(), entries[2].clone()]);
    let both = find(
        log,
        AccessQuery {
            loop_id: Some(LoopId::parse("loop-b").expect("id")),
            actor: Some(Actor::parse("staff:2").expect("actor")),
            ..query()
        },
    )
    .await;
    assert!(both.is_empty(), "{both:?}");
}

/// Paging with `after` = the last `at` of a page returns every entry once, even when many
/// were read at the same instant.
pub async fn after_is_exclusive_and_pages_lose_nothing(log: &impl AccessLog, clock: &TestClock) {
    let t = clock.now();
    let same_instant: Vec<AccessEntry> = (0..25)
        .map(|i| entry(t, &format!("staff:{i}"), Some("loop-a"), What::Loop))
        .collect();
    record(log, same_instant).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = find(
            log,
            AccessQuery {
                after,
                limit: QueryLimit::new(10).expect("limit"),
                ..AccessQuery::default()
            },
        )
        .await;
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.at);
        seen.extend(page);
    }
    let actors: Vec<String> = seen.iter().map(|e| e.actor.to_string()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("staff:{i}")).collect();
    assert_eq!(actors, expected, "every entry once, in order");
    assert!(seen.windows(2).all(|pair| pair[0].at < pair[1].at));
    let last = seen.last().expect("entries").at;
    let after_last = find(
        log,
        AccessQuery {
            after: Some(last),
            ..query()
        },
    )
    .await;
    assert!(after_last.is_empty(), "after is exclusive");
}

/// An entry read "before" the previous one (a clock that stepped back) is stamped just after
/// it, so the log's order is its time order.
pub async fn times_strictly_increase_when_the_clock_steps_back(
    log: &impl AccessLog,
    clock: &TestClock,
) {
    let t = clock.now();
    record(log, vec![entry(t, "staff:1", Some("loop-a"), What::Loop)]).await;
    record(
        log,
        vec![entry(
            t - minutes(30),
            "staff:2",
            Some("loop-a"),
            What::Loop,
        )],
    )
    .await;
    let found = find(log, query()).await;
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].at, t);
    assert_eq!(found[1].at, t + SignedDuration::from_nanos(1));
    assert_eq!(found[1].actor.as_str(), "staff:2");
}

/// A query returns at most its limit, the oldest matching entries.
pub async fn the_limit_bounds_the_answer(log: &impl AccessLog, clock: &TestClock) {
    let t = clock.now();
    let entries: Vec<AccessEntry> = (0..30)
        .map(|i| entry(t + minutes(i), "staff:1", Some("loop-a"), What::Loop))
        .collect();
    record(log, entries.clone()).await;
    let one = find(
        log,
        AccessQuery {
            limit: QueryLimit::new(1).expect("limit"),
            ..AccessQuery::default()
        },
    )
    .await;
    assert_eq!(one, entries[..1]);
    let default = find(log, AccessQuery::default()).await;
    assert_eq!(default, entries, "the default limit (100) is above 30");
}

/// Entries over several UTC days come back in order, and `after` in a later day skips the
/// earlier ones.
pub async fn entries_across_days_come_back_in_order(log: &impl AccessLog, clock: &TestClock) {
    let midnight: Timestamp = "2026-11-28T00:00:00Z".parse().expect("time");
    let entries = vec![
        entry(midnight - minutes(1), "staff:1", Some("loop-a"), What::Loop),
        entry(midnight, "staff:1", Some("loop-a"), What::Loop),
        entry(midnight + minutes(1), "staff:1", Some("loop-b"), What::Loop),
        entry(
            midnight + SignedDuration::from_hours(49),
            "staff:2",
            None,
            What::Events,
        ),
    ];
    clock.set(midnight + SignedDuration::from_hours(50));
    record(log, entries[..2].to_vec()).await;
    record(log, entries[2..].to_vec()).await;
    assert_eq!(find(log, query()).await, entries);
    let later = find(
        log,
        AccessQuery {
            after: Some(midnight),
            ..query()
        },
    )
    .await;
    assert_eq!(later, entries[2..]);
    let by_loop = find(
        log,
        AccessQuery {
            loop_id: Some(LoopId::parse("loop-a").expect("id")),
            after: Some(midnight - minutes(1)),
            ..query()
        },
    )
    .await;
    assert_eq!(by_loop, entries[1..2]);
}

/// With the default retention (400 days), pruning forgets entries a year and a half old and
/// keeps those of last week and today.
pub async fn entries_past_the_retention_are_pruned(log: &impl AccessLog, clock: &TestClock) {
    let now = clock.now();
    let days = |n: i64| SignedDuration::from_hours(24 * n);
    let old = entry(now - days(550), "staff:1", Some("loop-a"), What::Loop);
    let older_than_retention = entry(now - days(402), "staff:1", Some("loop-a"), What::Loop);
    let recent = entry(now - days(7), "staff:1", Some("loop-a"), What::Loop);
    let today = entry(now, "staff:2", None, What::Events);
    record(
        log,
        vec![old, older_than_retention, recent.clone(), today.clone()],
    )
    .await;
    log.prune().await.expect("pruned");
    assert_eq!(
        find(log, query()).await,
        vec![recent.clone(), today.clone()]
    );
    // 400 days on, last week's entry has gone too; today's, exactly 400 days old, stays.
    clock.set(now + days(400));
    log.prune().await.expect("pruned");
    assert_eq!(find(log, query()).await, vec![today]);
}

/// A flush succeeds and changes nothing a query sees.
pub async fn flushed_entries_stay(log: &impl AccessLog, clock: &TestClock) {
    let t = clock.now();
    let entries = vec![entry(t, "staff:1", Some("loop-a"), What::Loop)];
    record(log, entries.clone()).await;
    log.flush().await.expect("flushed");
    log.flush().await.expect("flushed again, with nothing new");
    assert_eq!(find(log, query()).await, entries);
}
