//! The 3-node cluster fixture against the real thing: an R3 stream keeps taking messages with
//! one node killed (quorum 2 of 3) and keeps every one of them once the node is back.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use closeloop_testkit::NatsCluster;

const STREAM: &str = "CLUSTER_TEST";
const SUBJECT: &str = "cluster.test";
/// How long the cluster may take to answer again after losing a node (a new stream leader
/// is elected in 4 to 9 s on nats-server 2.9).
const RECOVERY: Duration = Duration::from_secs(30);

/// Publishes message `n` until JetStream acknowledges it, for up to [`RECOVERY`]; returns how
/// many attempts it took. Each carries a message id, so a retry of one that was stored but
/// not acknowledged is not stored twice.
async fn publish(js: &jetstream::Context, n: u32) -> u32 {
    let deadline = Instant::now() + RECOVERY;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let message = jetstream::message::PublishMessage::build()
            .payload(format!("message {n}").into())
            .message_id(format!("m-{n}"));
        let attempt = async { js.send_publish(SUBJECT, message).await?.await };
        let outcome = tokio::time::timeout(Duration::from_secs(3), attempt).await;
        if let Ok(Ok(_)) = outcome {
            return attempts;
        }
        assert!(
            Instant::now() < deadline,
            "message {n} not acknowledged within {RECOVERY:?}: {outcome:?}"
        );
        // While a new leader is elected the stream does not answer: ask again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn info(js: &jetstream::Context) -> stream::Info {
    let mut stream = js.get_stream(STREAM).await.expect("the stream");
    stream.info().await.expect("stream info").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_takes_and_keeps_every_message_while_one_node_is_down() {
    let test_started = Instant::now();
    let started = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("cluster started");
    eprintln!("3-node cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.urls().split(',').count(), 3);
    assert_ne!(cluster.store_dir(0), cluster.store_dir(1));

    let client = async_nats::connect(cluster.url_list())
        .await
        .expect("connect to the cluster");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![SUBJECT.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        allow_direct: true,
        ..stream::Config::default()
    })
    .await
    .expect("an R3 stream");
    for n in 0..50 {
        assert_eq!(publish(&js, n).await, 1, "message {n} taken at once");
    }

    // Kill the stream's leader, the node that has to be replaced.
    let leader = info(&js)
        .await
        .cluster
        .and_then(|cluster| cluster.leader)
        .expect("the stream has a leader");
    let killed = (0..3)
        .find(|&i| NatsCluster::server_name(i) == leader)
        .expect("the leader is one of the nodes");
    cluster.kill(killed);
    assert!(!cluster.is_running(killed));
    let killed_at = Instant::now();
    let mut attempts = 0;
    for n in 50..100 {
        attempts += publish(&js, n).await;
    }
    eprintln!(
        "50 messages taken by the other two nodes {:?} after the leader {leader} was killed \
         ({attempts} attempts while a new leader was elected)",
        killed_at.elapsed()
    );

    let restarted = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(killed));
    let deadline = Instant::now() + RECOVERY;
    loop {
        let state = info(&js).await;
        let replicas = state.cluster.map(|c| c.replicas).unwrap_or_default();
        let caught_up = replicas.len() == 2 && replicas.iter().all(|peer| peer.current);
        if state.state.messages == 100 && caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up within {RECOVERY:?}: {} messages, replicas {replicas:?}",
            state.state.messages
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{leader} restarted and current in {:?}",
        restarted.elapsed()
    );

    // Read every message back through the restarted node: a direct get is answered by the
    // replica nearest the client when it has the stream.
    let local = jetstream::new(
        async_nats::connect(cluster.url(killed))
            .await
            .expect("connect to the restarted node"),
    );
    let stream = local.get_stream(STREAM).await.expect("the stream");
    for n in 0..100_u32 {
        let message = stream
            .direct_get(u64::from(n) + 1)
            .await
            .expect("every message is there");
        assert_eq!(message.payload, format!("message {n}").as_bytes());
    }
    let elapsed = test_started.elapsed();
    eprintln!("cluster test took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
