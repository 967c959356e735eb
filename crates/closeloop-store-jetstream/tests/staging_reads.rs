//! The writer never holds the log across a NATS round trip. A repeated idempotency key is
//! confirmed by reading the message that holds the original; with the log locked for that
//! read, the follower applying another replica's write waited for the lock on the runtime's
//! thread while the read waited for that thread to drive the connection: on a single-threaded
//! runtime nothing moved again (CI saw a conformance test hang for 480 s).

use std::sync::mpsc;
use std::time::Duration;

use closeloop_domain::{EventType, LoopId};
use closeloop_store::conformance::event;
use closeloop_store::{AppendRequest, EventStore, ExpectedVersion, LoopAppend};
use closeloop_store_jetstream::{JetStreamStore, JetStreamStoreOptions};
use closeloop_testkit::NatsServer;
use serde_json::json;

const ROUNDS: usize = 300;

fn feedback(loop_id: &str, key: &str) -> AppendRequest {
    AppendRequest {
        loops: vec![LoopAppend {
            loop_id: LoopId::parse(loop_id).expect("loop id"),
            expected: ExpectedVersion::Any,
            events: vec![event(
                "test",
                key,
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx/site-a", "channel": "web"}),
            )],
            requests: Vec::new(),
        }],
    }
}

/// Replica `a` answers repeats (each a read from the server: no cache) while replica `b`
/// writes, so `a`'s follower applies `b`'s messages during `a`'s staging reads.
async fn repeats_while_another_replica_writes(url: String) -> (u64, usize) {
    let no_cache = JetStreamStoreOptions {
        cache_bytes: 0,
        ..JetStreamStoreOptions::default()
    };
    let a = JetStreamStore::open(
        async_nats::connect(&url).await.expect("connect"),
        no_cache.clone(),
    )
    .await
    .expect("open a");
    let b = JetStreamStore::open(async_nats::connect(&url).await.expect("connect"), no_cache)
        .await
        .expect("open b");
    let original = a
        .append(feedback("repeated", "original"))
        .await
        .expect("original");
    let writes = async {
        for n in 0..ROUNDS {
            b.append(feedback(&format!("other-{n}"), &format!("other-{n}")))
                .await
                .expect("b writes");
        }
    };
    let repeats = async {
        let mut answered = 0;
        for _ in 0..ROUNDS {
            let repeat = a
                .append(feedback("repeated", "original"))
                .await
                .expect("a repeat");
            assert!(repeat.duplicate, "a repeat stores nothing");
            assert_eq!(repeat.committed, original.committed);
            answered += 1;
        }
        answered
    };
    let ((), answered) = tokio::join!(writes, repeats);
    let head = b.head();
    (head, answered)
}

#[test]
fn repeats_are_confirmed_while_another_replica_writes_on_one_thread() {
    let server = NatsServer::start();
    let url = server.url();
    let (done, finished) = mpsc::channel();
    // A deadlock blocks the runtime's only thread, so no timer inside it could fire: the test
    // waits from outside.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = done.send(runtime.block_on(repeats_while_another_replica_writes(url)));
    });
    let (head, answered) = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the repeats and the other replica's writes finished within 120 s");
    assert_eq!(answered, ROUNDS);
    assert_eq!(
        head,
        1 + ROUNDS as u64,
        "the original and every other write"
    );
}
