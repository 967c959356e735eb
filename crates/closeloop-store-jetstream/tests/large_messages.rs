//! A replica opens on a log of large batch messages. The follower asks for 16 messages a pull:
//! with the client's default of 500, `closeloop-bench jetstream` saw the server cut it off as a
//! slow consumer over and over on a log of 590 messages of 580 KB (too big to rebuild here), so
//! that opening never finished. This smaller log checks large messages are read whole.

use closeloop_domain::{EventType, LoopId};
use closeloop_store::conformance::event;
use closeloop_store::{AppendRequest, EventStore, ExpectedVersion, LoopAppend};
use closeloop_store_jetstream::{JetStreamStore, JetStreamStoreOptions};
use closeloop_testkit::NatsServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_opens_on_a_log_of_large_messages() {
    const APPENDS: usize = 100;
    let server = NatsServer::start();
    let connect = || async { async_nats::connect(server.url()).await.expect("connect") };
    let writer = JetStreamStore::open(connect().await, JetStreamStoreOptions::default())
        .await
        .expect("open");
    // Four stories of 180,000 bytes: one message of about 720 KB per append, 72 MB in all,
    // more than the 64 MiB a client may fall behind before the server cuts it off.
    let story = "x".repeat(180_000);
    for n in 0..APPENDS {
        let loops = (0..4)
            .map(|l| LoopAppend {
                loop_id: LoopId::parse(&format!("big-{n}-{l}")).expect("loop id"),
                expected: ExpectedVersion::NoLoop,
                events: vec![event(
                    "test",
                    &format!("{n}-{l}"),
                    EventType::FeedbackReceived,
                    json!({"org_unit": "rxx/site-a", "channel": "web", "story": story}),
                )],
                requests: Vec::new(),
            })
            .collect();
        writer
            .append(AppendRequest { loops })
            .await
            .expect("append");
    }
    let head = writer.head();
    assert_eq!(head, 4 * APPENDS as u64);

    let started = std::time::Instant::now();
    let reader = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        JetStreamStore::open(connect().await, JetStreamStoreOptions::default()),
    )
    .await
    .expect("the replica opened within 60 s")
    .expect("open");
    assert_eq!(reader.head(), head);
    assert_eq!(reader.read_all(head - 1, 10).await.expect("read").len(), 1);
    println!(
        "opened on {} messages of about 720 KB in {:.2} s",
        APPENDS,
        started.elapsed().as_secs_f64()
    );
}

/// An append is one message, so one whose events together exceed the server's `max_payload` is
/// refused as too large — naming the first event that does not fit — and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_larger_than_one_message_is_refused_whole() {
    let server = NatsServer::start();
    let store = JetStreamStore::open(
        async_nats::connect(server.url()).await.expect("connect"),
        JetStreamStoreOptions::default(),
    )
    .await
    .expect("open");
    // Each event may take about 240 KB once stored: four fit in 1 MiB, the fifth does not.
    let story = "x".repeat(180_000);
    let loops = (0..6)
        .map(|l| LoopAppend {
            loop_id: LoopId::parse(&format!("change-{l}")).expect("loop id"),
            expected: ExpectedVersion::NoLoop,
            events: vec![event(
                "test",
                &format!("change-{l}"),
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx/site-a", "channel": "web", "story": story}),
            )],
            requests: Vec::new(),
        })
        .collect();
    let refused = store
        .append(AppendRequest { loops })
        .await
        .expect_err("too large for one message");
    assert!(
        matches!(
            refused,
            closeloop_store::AppendError::TooLarge { event_index: 4, size, limit }
                if size > limit
        ),
        "{refused:?}"
    );
    assert_eq!(store.head(), 0, "nothing of the append is stored");
}
