//! The test suite every [`EventStore`] implementation must pass.
//!
//! Each check is an `async fn` taking a fresh, empty store. [`conformance_tests!`] turns them
//! into one `#[tokio::test]` each for a backend:
//!
//! ```ignore
//! async fn fresh_store() -> (SledStore, tempfile::TempDir) { ... }
//! closeloop_store::conformance_tests!(fresh_store);
//! ```
//!
//! [`conformance_tests!`]: crate::conformance_tests

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use closeloop_domain::{Event, EventType, LoopEvent, LoopId};
use futures::future::join_all;
use serde_json::json;

use crate::merkle::root_of;
use crate::{
    AppendError, AppendRequest, EventStore, ExpectedVersion, Hash, LoopAppend, RequestDigest,
    verify,
};

/// Expands to one `#[tokio::test]` per conformance check. `$make` is an async fn returning
/// `(store, guard)`: a fresh empty store and whatever must live as long as it (a temp dir).
///
/// `conformance_tests!(sealed $make)` is for a store that seals personal data with a key
/// store: every check but `reads_see_every_acknowledged_append`, which compares a story read
/// back without its key (sealed, it reads `[encrypted]`).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(sealed $make);
        $crate::conformance_tests!(@each $make, [reads_see_every_acknowledged_append]);
    };
    (sealed $make:path) => {
        $crate::conformance_tests!(@each $make, [
            conflicts_are_detected,
            repeated_idempotency_keys_store_nothing,
            reused_keys_for_new_events_are_refused,
            appends_across_loops_are_all_or_nothing,
            positions_stay_gapless_under_64_concurrent_writers,
            exactly_one_of_many_racing_writers_wins,
            chains_and_merkle_head_verify,
            malformed_requests_are_refused,
            idempotency_keys_can_be_looked_up,
            records_too_large_to_publish_are_refused,
            keys_bound_to_another_request_are_refused,
        ]);
    };
    (@each $make:path, [$($check:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let (store, _guard) = $make().await;
                $crate::conformance::$check(&store).await;
            }
        )*
    };
}

/// A `feedback.received` event with the given idempotency key.
#[must_use]
pub fn feedback(source: &str, event_id: &str) -> Event {
    let data = json!({"org_unit": "rxx/site-a/ward-7", "channel": "web", "story": "Test feedback", "ratings": {"fft": 1}});
    event(source, event_id, EventType::FeedbackReceived, data)
}

/// One append that opens each loop with its event (every loop expected to be new).
#[must_use]
pub fn opening(loops: impl IntoIterator<Item = (LoopId, Event)>) -> AppendRequest {
    AppendRequest {
        loops: loops
            .into_iter()
            .map(|(loop_id, event)| LoopAppend {
                loop_id,
                expected: ExpectedVersion::NoLoop,
                events: vec![event],
                requests: Vec::new(),
            })
            .collect(),
    }
}

/// A `loop.acknowledged` event with the given idempotency key.
#[must_use]
pub fn acknowledgement(source: &str, event_id: &str) -> Event {
    event(
        source,
        event_id,
        EventType::Acknowledged,
        json!({"by": "pals"}),
    )
}

/// An event of `event_type` with `data`, read as stored data: the store checks no field rules,
/// so tests may build events today's rules would refuse (as events stored before them were).
///
/// # Panics
/// When `data` does not have the type's shape at all.
#[must_use]
pub fn event(
    source: &str,
    event_id: &str,
    event_type: EventType,
    data: serde_json::Value,
) -> Event {
    Event {
        event_id: event_id.to_owned(),
        source: source.to_owned(),
        time: "2026-11-27T09:30:00Z".parse().expect("valid timestamp"),
        payload: LoopEvent::from_stored_data(event_type, data).expect("data of the type's shape"),
        actor: None,
    }
}

fn loop_id(raw: &str) -> LoopId {
    LoopId::parse(raw).expect("valid loop id")
}

fn single(id: &str, expected: ExpectedVersion, events: Vec<Event>) -> AppendRequest {
    AppendRequest::single(loop_id(id), expected, events)
}

/// Expected versions are enforced, and a loop's events get versions 1, 2, ….
pub async fn conflicts_are_detected<S: EventStore>(store: &S) {
    let first = store
        .append(single(
            "a",
            ExpectedVersion::NoLoop,
            vec![feedback("t", "1")],
        ))
        .await
        .expect("first append");
    assert_eq!(
        (first.committed[0].version, first.committed[0].position),
        (1, 1)
    );

    let err = store
        .append(single(
            "a",
            ExpectedVersion::NoLoop,
            vec![acknowledgement("t", "2")],
        ))
        .await
        .expect_err("the loop exists");
    assert!(
        matches!(err, AppendError::Conflict { actual: 1, .. }),
        "{err}"
    );

    let err = store
        .append(single(
            "a",
            ExpectedVersion::Exactly(3),
            vec![acknowledgement("t", "2")],
        ))
        .await
        .expect_err("the loop is at version 1");
    assert!(
        matches!(err, AppendError::Conflict { actual: 1, .. }),
        "{err}"
    );

    let second = store
        .append(single(
            "a",
            ExpectedVersion::Exactly(1),
            vec![acknowledgement("t", "2")],
        ))
        .await
        .expect("expected version matches");
    assert_eq!(second.committed[0].version, 2);
    let any = store
        .append(single(
            "a",
            ExpectedVersion::Any,
            vec![acknowledgement("t", "3")],
        ))
        .await
        .expect("any version");
    assert_eq!(any.committed[0].version, 3);
    assert_eq!(store.head(), 3, "rejected appends store nothing");
}

/// Appending an already stored (source, event id) returns the original and stores nothing.
pub async fn repeated_idempotency_keys_store_nothing<S: EventStore>(store: &S) {
    let request = single("b", ExpectedVersion::NoLoop, vec![feedback("kiosk", "42")]);
    let original = store.append(request.clone()).await.expect("first append");
    assert!(!original.duplicate);
    // The repeat carries a stale expectation (the loop now exists): a duplicate is recognised
    // before versions are checked, as a redelivered message would be.
    let repeat = store.append(request).await.expect("repeat is not an error");
    assert!(repeat.duplicate);
    assert_eq!(repeat.committed, original.committed);
    // The same event id from another source is a different event.
    let other = store
        .append(single(
            "b",
            ExpectedVersion::Any,
            vec![acknowledgement("other", "42")],
        ))
        .await
        .expect("different source");
    assert!(!other.duplicate);
    assert_eq!(store.head(), 2);
    assert_eq!(store.read_loop(&loop_id("b")).await.expect("read").len(), 2);
}

/// A request mixing stored and new idempotency keys is refused whole.
pub async fn reused_keys_for_new_events_are_refused<S: EventStore>(store: &S) {
    store
        .append(single(
            "c",
            ExpectedVersion::NoLoop,
            vec![feedback("t", "1")],
        ))
        .await
        .expect("first append");
    let err = store
        .append(single(
            "c",
            ExpectedVersion::Any,
            vec![acknowledgement("t", "2"), acknowledgement("t", "1")],
        ))
        .await
        .expect_err("key t/1 is taken");
    assert!(
        matches!(err, AppendError::IdempotencyMismatch { .. }),
        "{err}"
    );
    assert_eq!(store.head(), 1);
}

/// An append across loops stores everything or nothing.
pub async fn appends_across_loops_are_all_or_nothing<S: EventStore>(store: &S) {
    for (id, key) in [("x", "x1"), ("y", "y1")] {
        store
            .append(single(
                id,
                ExpectedVersion::NoLoop,
                vec![feedback("t", key)],
            ))
            .await
            .expect("setup");
    }
    let change = |id: &str, expected, key: &str| LoopAppend {
        loop_id: loop_id(id),
        expected,
        events: vec![acknowledgement("t", key)],
        requests: Vec::new(),
    };
    let err = store
        .append(AppendRequest {
            loops: vec![
                change("x", ExpectedVersion::Exactly(1), "x2"),
                change("y", ExpectedVersion::Exactly(5), "y2"),
            ],
        })
        .await
        .expect_err("y is not at version 5");
    assert!(
        matches!(&err, AppendError::Conflict { loop_id, .. } if loop_id.as_str() == "y"),
        "{err}"
    );
    assert_eq!(store.head(), 2, "x must not be written when y conflicts");
    assert_eq!(store.read_loop(&loop_id("x")).await.expect("read").len(), 1);

    let done = store
        .append(AppendRequest {
            loops: vec![
                change("x", ExpectedVersion::Exactly(1), "x2"),
                change("y", ExpectedVersion::Exactly(1), "y2"),
            ],
        })
        .await
        .expect("both at version 1");
    let positions: Vec<u64> = done.committed.iter().map(|c| c.position).collect();
    assert_eq!(positions, [3, 4]);
}

/// 64 concurrent writers: positions 1..=n with no gap or repeat, versions gapless per loop.
pub async fn positions_stay_gapless_under_64_concurrent_writers<S: EventStore>(store: &S) {
    const WRITERS: usize = 64;
    const APPENDS: usize = 20;
    let tasks = (0..WRITERS).map(|writer| async move {
        let id = format!("w{writer}");
        for n in 0..APPENDS {
            let event = if n == 0 {
                feedback("t", &format!("{id}-{n}"))
            } else {
                acknowledgement("t", &format!("{id}-{n}"))
            };
            // Every writer appends to its own loop and, every fourth time, to a shared one.
            let target = if n % 4 == 3 {
                "shared".to_owned()
            } else {
                id.clone()
            };
            store
                .append(single(&target, ExpectedVersion::Any, vec![event]))
                .await
                .expect("append");
        }
    });
    join_all(tasks).await;
    let total = WRITERS * APPENDS;
    let all = store.read_all(0, total + 10).await.expect("read all");
    assert_eq!(all.len(), total);
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (index, entry) in all.iter().enumerate() {
        assert_eq!(
            entry.position,
            index as u64 + 1,
            "positions must be gapless"
        );
        let last = versions
            .entry(entry.loop_id.as_str().to_owned())
            .or_default();
        assert_eq!(
            entry.version,
            *last + 1,
            "versions of {} must be gapless",
            entry.loop_id
        );
        *last = entry.version;
    }
    assert_eq!(store.head(), total as u64);
}

/// Of many writers expecting the same version of one loop, exactly one succeeds.
pub async fn exactly_one_of_many_racing_writers_wins<S: EventStore>(store: &S) {
    store
        .append(single(
            "race",
            ExpectedVersion::NoLoop,
            vec![feedback("t", "0")],
        ))
        .await
        .expect("setup");
    let wins = Arc::new(AtomicUsize::new(0));
    let tasks = (0..64).map(|n| {
        let wins = Arc::clone(&wins);
        async move {
            match store
                .append(single(
                    "race",
                    ExpectedVersion::Exactly(1),
                    vec![acknowledgement("t", &format!("r{n}"))],
                ))
                .await
            {
                Ok(_) => {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
                Err(AppendError::Conflict { actual: 2, .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
    });
    join_all(tasks).await;
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    assert_eq!(store.head(), 2);
}

/// Every entry chains to its loop's previous one, hashes recompute, and the Merkle head
/// matches an independent computation.
pub async fn chains_and_merkle_head_verify<S: EventStore>(store: &S) {
    for n in 0..10 {
        let id = format!("m{}", n % 3);
        let event = if n < 3 {
            feedback("t", &n.to_string())
        } else {
            acknowledgement("t", &n.to_string())
        };
        store
            .append(single(&id, ExpectedVersion::Any, vec![event]))
            .await
            .expect("append");
    }
    let all = store.read_all(0, 100).await.expect("read all");
    let mut last: HashMap<String, Hash> = HashMap::new();
    for entry in &all {
        let prev = last
            .get(entry.loop_id.as_str())
            .copied()
            .unwrap_or(Hash::ZERO);
        assert_eq!(entry.prev_hash, prev, "position {}", entry.position);
        assert_eq!(
            entry.recomputed_hash(),
            entry.hash,
            "position {}",
            entry.position
        );
        last.insert(entry.loop_id.as_str().to_owned(), entry.hash);
    }
    let hashes: Vec<Hash> = all.iter().map(|e| e.hash).collect();
    let report = verify(store, None).await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 10);
    assert_eq!(report.head_hash, root_of(&hashes));
    let prefix = verify(store, Some(4)).await.expect("verify prefix");
    assert_eq!(prefix.head_hash, root_of(&hashes[..4]));
}

/// After an append returns, the head, the global log and the loop's stream all show it, and
/// subscribers have seen the head move.
pub async fn reads_see_every_acknowledged_append<S: EventStore>(store: &S) {
    let mut head = store.subscribe();
    assert_eq!(*head.borrow_and_update(), 0);
    assert!(
        store
            .read_loop(&loop_id("nobody"))
            .await
            .expect("read")
            .is_empty()
    );
    let event = feedback("t", "seen");
    let outcome = store
        .append(single(
            "seen",
            ExpectedVersion::NoLoop,
            vec![event.clone(), acknowledgement("t", "seen-2")],
        ))
        .await
        .expect("append");
    assert_eq!(outcome.committed.len(), 2);
    assert!(head.has_changed().expect("store alive"));
    assert_eq!(*head.borrow_and_update(), 2);
    let stream = store.read_loop(&loop_id("seen")).await.expect("read loop");
    assert_eq!(stream.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(stream[0].event().expect("decodes"), event);
    assert_eq!(
        store.read_all(1, 10).await.expect("read all")[0].position,
        2
    );
    assert!(store.read_all(2, 10).await.expect("read all").is_empty());
}

/// Empty requests, a loop named twice, or one key twice are refused before anything is stored.
pub async fn malformed_requests_are_refused<S: EventStore>(store: &S) {
    let empty = store
        .append(AppendRequest::default())
        .await
        .expect_err("empty");
    assert!(matches!(empty, AppendError::Invalid(_)), "{empty}");
    let twice = LoopAppend {
        loop_id: loop_id("d"),
        expected: ExpectedVersion::Any,
        events: vec![feedback("t", "d1")],
        requests: Vec::new(),
    };
    let err = store
        .append(AppendRequest {
            loops: vec![
                twice.clone(),
                LoopAppend {
                    events: vec![feedback("t", "d2")],
                    ..twice
                },
            ],
        })
        .await
        .expect_err("loop twice");
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
    let err = store
        .append(single(
            "d",
            ExpectedVersion::Any,
            vec![feedback("t", "d1"), acknowledgement("t", "d1")],
        ))
        .await
        .expect_err("key twice");
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
    assert_eq!(store.head(), 0);
}

/// `lookup` finds a stored event by its idempotency key, and nothing for an unused key.
pub async fn idempotency_keys_can_be_looked_up<S: EventStore>(store: &S) {
    assert_eq!(store.lookup("t", "l1").await.expect("lookup"), None);
    let outcome = store
        .append(single(
            "l",
            ExpectedVersion::NoLoop,
            vec![feedback("t", "l1"), acknowledgement("t", "l2")],
        ))
        .await
        .expect("append");
    assert_eq!(
        store.lookup("t", "l2").await.expect("lookup"),
        Some(outcome.committed[1].clone())
    );
    assert_eq!(store.lookup("other", "l2").await.expect("lookup"), None);
}

/// An event whose record would exceed [`MAX_RECORD_BYTES`](crate::record::MAX_RECORD_BYTES)
/// is refused, naming which event of the request it is; nothing of the request is stored and
/// the store keeps working.
pub async fn records_too_large_to_publish_are_refused<S: EventStore>(store: &S) {
    let big = "x".repeat(crate::record::MAX_RECORD_BYTES);
    let oversized = event(
        "t",
        "big",
        EventType::Acknowledged,
        json!({"by": "pals", "note": big}),
    );
    let err = store
        .append(AppendRequest {
            loops: vec![
                LoopAppend {
                    loop_id: loop_id("small"),
                    expected: ExpectedVersion::NoLoop,
                    events: vec![feedback("t", "small")],
                    requests: Vec::new(),
                },
                LoopAppend {
                    loop_id: loop_id("big"),
                    expected: ExpectedVersion::NoLoop,
                    events: vec![feedback("t", "big-fb"), oversized],
                    requests: Vec::new(),
                },
            ],
        })
        .await
        .expect_err("too large");
    assert!(
        matches!(err, AppendError::TooLarge { event_index: 2, size, limit }
            if size > limit && limit == crate::record::MAX_RECORD_BYTES),
        "{err}"
    );
    assert_eq!(store.head(), 0, "nothing of the request is stored");
    assert!(
        store.ready().is_ok(),
        "a refused request does not stop the store"
    );
    store
        .append(single(
            "small",
            ExpectedVersion::NoLoop,
            vec![feedback("t", "small")],
        ))
        .await
        .expect("the store keeps working");
}

/// An idempotency key bound to a request ([`RequestDigest`]) answers a repeat of the same
/// request with the original and refuses another request; lookups report the binding; a key
/// stored without a binding is a repeat whatever the request.
pub async fn keys_bound_to_another_request_are_refused<S: EventStore>(store: &S) {
    let digest = |body: &str| RequestDigest::of(&["POST", "/v1/feedback"], &json!({"b": body}));
    let append = |key: &str, request: Option<RequestDigest>| AppendRequest {
        loops: vec![LoopAppend {
            loop_id: loop_id(key),
            expected: ExpectedVersion::Any,
            events: vec![feedback("t", key)],
            requests: vec![request],
        }],
    };
    let first = store
        .append(append("bound", Some(digest("one"))))
        .await
        .expect("first");
    assert_eq!(first.committed[0].request, Some(digest("one")));
    let repeat = store
        .append(append("bound", Some(digest("one"))))
        .await
        .expect("repeat");
    assert!(repeat.duplicate);
    assert_eq!(repeat.committed, first.committed);
    let err = store
        .append(append("bound", Some(digest("two"))))
        .await
        .expect_err("another request");
    assert!(
        matches!(&err, AppendError::IdempotencyMismatch { event_id, .. } if event_id == "bound"),
        "{err}"
    );
    assert_eq!(
        store.lookup("t", "bound").await.expect("lookup"),
        first.committed.into_iter().next()
    );
    // Unbound on either side: a repeat.
    store.append(append("free", None)).await.expect("unbound");
    assert!(
        store
            .append(append("free", Some(digest("any"))))
            .await
            .expect("repeat")
            .duplicate
    );
    assert_eq!(store.head(), 2);
    let mismatched = AppendRequest {
        loops: vec![LoopAppend {
            requests: vec![None, None],
            ..append("pairs", None).loops.remove(0)
        }],
    };
    let err = store
        .append(mismatched)
        .await
        .expect_err("two digests, one event");
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
}
