//! The NATS access log: the conformance suite every implementation passes, and what only a log
//! shared by several processes must do. Each test starts its own `nats-server`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use closeloop_access::conformance::{TestClock, entry};
use closeloop_access::{
    AccessEntry, AccessLog, AccessLogError, AccessQuery, Clock, DEFAULT_STREAM, NatsAccessLog,
    NatsAccessLogOptions, QueryLimit, Retention, What,
};
use closeloop_testkit::{NatsCluster, NatsServer};
use jiff::{SignedDuration, Timestamp};

mod conformance {
    use super::*;

    async fn fresh_log(clock: Clock) -> (NatsAccessLog, NatsServer) {
        let server = start_server().await;
        let log = open(&server, options(clock)).await;
        (log, server)
    }

    closeloop_access::access_conformance_tests!(fresh_log);
}

async fn start_server() -> NatsServer {
    tokio::task::spawn_blocking(NatsServer::start)
        .await
        .expect("nats-server started")
}

async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("connect to nats-server")
}

fn options(clock: Clock) -> NatsAccessLogOptions {
    NatsAccessLogOptions {
        clock,
        ..NatsAccessLogOptions::default()
    }
}

/// A log on its own connection, as another process would have.
async fn open(server: &NatsServer, options: NatsAccessLogOptions) -> NatsAccessLog {
    NatsAccessLog::open(connect(server).await, options)
        .await
        .expect("open the access log")
}

fn all() -> AccessQuery {
    AccessQuery {
        limit: QueryLimit::new(1000).expect("limit"),
        ..AccessQuery::default()
    }
}

/// Every entry of the log, a page of 1000 at a time, or the first error.
async fn try_every_entry(log: &NatsAccessLog) -> Result<Vec<AccessEntry>, AccessLogError> {
    let mut seen: Vec<AccessEntry> = Vec::new();
    loop {
        let found = log
            .query(AccessQuery {
                after: seen.last().map(|e| e.at),
                ..all()
            })
            .await?;
        if found.is_empty() {
            return Ok(seen);
        }
        seen.extend(found);
    }
}

/// Every entry of the log, read a page of `page` at a time with `after`.
async fn every_entry(log: &NatsAccessLog, page: u64) -> Vec<AccessEntry> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let found = log
            .query(AccessQuery {
                after,
                limit: QueryLimit::new(page).expect("limit"),
                ..AccessQuery::default()
            })
            .await
            .expect("query answered");
        let Some(last) = found.last() else {
            return seen;
        };
        after = Some(last.at);
        seen.extend(found);
    }
}

async fn stream_info(server: &NatsServer, name: &str) -> jetstream::stream::Info {
    jetstream::new(connect(server).await)
        .get_stream(name)
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("stream info")
        .clone()
}

fn now() -> Timestamp {
    TestClock::default().now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_recording_at_once_share_one_strictly_increasing_log() {
    let server = start_server().await;
    let clock = TestClock::default();
    let logs = [
        open(&server, options(clock.clock())).await,
        open(&server, options(clock.clock())).await,
    ];
    let t = clock.now();
    // Four writers on each log, every entry read "at the same instant": the two logs keep
    // losing the fence to each other and must stamp after whatever the other appended.
    let writers = logs.iter().enumerate().flat_map(|(l, log)| {
        (0..4).map(move |w| async move {
            for i in 0..40 {
                let actor = format!("staff:{l}-{w}");
                let recorded = entry(t, &actor, Some(&format!("loop-{i}")), What::Loop);
                log.record(vec![recorded]).await.expect("recorded");
            }
        })
    });
    futures::future::join_all(writers).await;
    let seen = every_entry(&logs[1], 37).await;
    assert_eq!(seen.len(), 2 * 4 * 40, "every entry once");
    assert!(
        seen.windows(2).all(|pair| pair[0].at < pair[1].at),
        "times strictly increase across both processes"
    );
    for l in 0..2 {
        for w in 0..4 {
            let actor = format!("staff:{l}-{w}");
            let order: Vec<String> = seen
                .iter()
                .filter(|e| e.actor.as_str() == actor)
                .map(|e| e.loop_id.as_ref().expect("loop").to_string())
                .collect();
            let expected: Vec<String> = (0..40).map(|i| format!("loop-{i}")).collect();
            assert_eq!(order, expected, "{actor} in the order it recorded");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_process_records_the_next_query_of_another_sees() {
    let server = start_server().await;
    let clock = TestClock::default();
    let writer = open(&server, options(clock.clock())).await;
    let reader = open(&server, options(clock.clock())).await;
    for i in 0..20 {
        let recorded = entry(
            clock.now() + SignedDuration::from_mins(i),
            "staff:1",
            Some("loop-a"),
            What::Loop,
        );
        writer
            .record(vec![recorded.clone()])
            .await
            .expect("recorded");
        let found = reader
            .query(AccessQuery {
                after: Some(recorded.at - SignedDuration::from_nanos(1)),
                ..all()
            })
            .await
            .expect("query answered");
        assert_eq!(
            found,
            vec![recorded],
            "seen at once through the other process"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_opened_later_stamps_after_what_is_in_the_stream() {
    let server = start_server().await;
    let clock = TestClock::default();
    let t = clock.now();
    let first = open(&server, options(clock.clock())).await;
    first
        .record(vec![entry(t, "staff:1", Some("loop-a"), What::Loop)])
        .await
        .expect("recorded");
    // Another replica, whose clock is half an hour behind.
    let second = open(&server, options(clock.clock())).await;
    second
        .record(vec![entry(
            t - SignedDuration::from_mins(30),
            "staff:2",
            Some("loop-a"),
            What::Loop,
        )])
        .await
        .expect("recorded");
    let times: Vec<Timestamp> = first
        .query(all())
        .await
        .expect("query answered")
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(times, vec![t, t + SignedDuration::from_nanos(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_last_message_was_deleted_the_next_is_stamped_after_the_newest_left() {
    let server = start_server().await;
    let clock = TestClock::default();
    let t = clock.now();
    let first = open(&server, options(clock.clock())).await;
    for (minutes, actor) in [(0, "staff:1"), (60, "staff:2")] {
        first
            .record(vec![entry(
                t + SignedDuration::from_mins(minutes),
                actor,
                Some("loop-a"),
                What::Loop,
            )])
            .await
            .expect("recorded");
    }
    jetstream::new(connect(&server).await)
        .get_stream(DEFAULT_STREAM)
        .await
        .expect("the stream")
        .delete_message(2)
        .await
        .expect("deleted by hand");
    let second = open(&server, options(clock.clock())).await;
    second
        .record(vec![entry(
            t - SignedDuration::from_mins(30),
            "staff:3",
            Some("loop-a"),
            What::Loop,
        )])
        .await
        .expect("recorded");
    let found = first.query(all()).await.expect("query answered");
    let seen: Vec<(&str, Timestamp)> = found.iter().map(|e| (e.actor.as_str(), e.at)).collect();
    assert_eq!(
        seen,
        vec![
            ("staff:1", t),
            ("staff:3", t + SignedDuration::from_nanos(1))
        ],
        "the deleted message is skipped, and the new one follows the newest entry left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_over_many_messages_lose_nothing_and_after_finds_its_place() {
    let server = start_server().await;
    let clock = TestClock::default();
    let log = open(&server, options(clock.clock())).await;
    let t = clock.now();
    let entries: Vec<AccessEntry> = (0..150)
        .map(|i| {
            entry(
                t + SignedDuration::from_secs(i),
                &format!("staff:{}", i % 7),
                Some("loop-a"),
                What::Loop,
            )
        })
        .collect();
    // One record each: 150 messages for the search to find its place in.
    for recorded in &entries {
        log.record(vec![recorded.clone()]).await.expect("recorded");
    }
    assert_eq!(
        stream_info(&server, DEFAULT_STREAM).await.state.messages,
        150
    );
    assert_eq!(every_entry(&log, 7).await, entries);
    for cut in [0, 1, 74, 148, 149] {
        let found = log
            .query(AccessQuery {
                after: Some(entries[cut].at),
                ..all()
            })
            .await
            .expect("query answered");
        assert_eq!(found, entries[cut + 1..], "after entry {cut}");
    }
    let staff_3: Vec<AccessEntry> = entries
        .iter()
        .filter(|e| e.actor.as_str() == "staff:3")
        .cloned()
        .collect();
    let found = log
        .query(AccessQuery {
            actor: Some(closeloop_access::Actor::parse("staff:3").expect("actor")),
            after: Some(entries[40].at),
            limit: QueryLimit::new(5).expect("limit"),
            ..AccessQuery::default()
        })
        .await
        .expect("query answered");
    let expected: Vec<AccessEntry> = staff_3
        .into_iter()
        .filter(|e| e.at > entries[40].at)
        .take(5)
        .collect();
    assert_eq!(found, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_a_message_spans_several_in_order() {
    let server = start_server().await;
    let clock = TestClock::default();
    let log = open(
        &server,
        NatsAccessLogOptions {
            max_message_bytes: 1024,
            ..options(clock.clock())
        },
    )
    .await;
    let t = clock.now();
    let entries: Vec<AccessEntry> = (0..100)
        .map(|i| entry(t, &format!("staff:{i}"), Some("loop-a"), What::Loop))
        .collect();
    log.record(entries.clone()).await.expect("recorded");
    let found = log.query(all()).await.expect("query answered");
    let actors: Vec<&str> = found.iter().map(|e| e.actor.as_str()).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("staff:{i}")).collect();
    assert_eq!(actors, expected);
    let messages = stream_info(&server, DEFAULT_STREAM).await.state.messages;
    assert!(
        messages > 5,
        "split over {messages} messages of at most 1 KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_the_messages_whose_entries_are_all_past_the_retention() {
    let server = start_server().await;
    let clock = TestClock::default();
    let log = open(&server, options(clock.clock())).await;
    let now = clock.now();
    let days = |n: i64| SignedDuration::from_hours(24 * n);
    for age in [500, 450, 401, 10, 0] {
        log.record(vec![entry(
            now - days(age),
            "staff:1",
            Some("loop-a"),
            What::Loop,
        )])
        .await
        .expect("recorded");
    }
    log.prune().await.expect("pruned");
    let info = stream_info(&server, DEFAULT_STREAM).await;
    assert_eq!(
        info.state.messages, 2,
        "three messages past 400 days purged"
    );
    let found = log.query(all()).await.expect("query answered");
    assert_eq!(
        found.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![now - days(10), now]
    );
    // Pruning again removes nothing more.
    log.prune().await.expect("pruned");
    assert_eq!(stream_info(&server, DEFAULT_STREAM).await.state.messages, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_file_backed_and_its_max_age_follows_the_retention() {
    let server = start_server().await;
    let clock = TestClock::default();
    let log = open(&server, options(clock.clock())).await;
    let config = stream_info(&server, DEFAULT_STREAM).await.config;
    assert_eq!(config.storage, jetstream::stream::StorageType::File);
    assert_eq!(config.subjects, vec!["closeloop.access".to_owned()]);
    assert_eq!(config.max_age, Duration::from_secs(401 * 24 * 3600));
    drop(log);
    let shorter = NatsAccessLogOptions {
        retention: Retention::days(30).expect("retention"),
        ..options(clock.clock())
    };
    let _log = open(&server, shorter).await;
    let config = stream_info(&server, DEFAULT_STREAM).await.config;
    assert_eq!(config.max_age, Duration::from_secs(31 * 24 * 3600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_take_the_subject_is_refused_with_what_to_do() {
    let server = start_server().await;
    jetstream::new(connect(&server).await)
        .create_stream(jetstream::stream::Config {
            name: DEFAULT_STREAM.to_owned(),
            subjects: vec!["something.else".to_owned()],
            ..jetstream::stream::Config::default()
        })
        .await
        .expect("created");
    let refused = NatsAccessLog::open(
        connect(&server).await,
        options(TestClock::default().clock()),
    )
    .await
    .expect_err("refused");
    let message = refused.to_string();
    assert!(
        matches!(refused, AccessLogError::Unavailable(_)),
        "{refused:?}"
    );
    assert!(message.contains("closeloop.access"), "{message}");
    assert!(message.contains("another stream name"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_record_is_refused_in_bounded_time_and_works_again_after() {
    let mut server = start_server().await;
    let clock = TestClock::default();
    let ack_timeout = Duration::from_millis(500);
    let log = open(
        &server,
        NatsAccessLogOptions {
            ack_timeout,
            ..options(clock.clock())
        },
    )
    .await;
    let one = || vec![entry(now(), "staff:1", Some("loop-a"), What::Loop)];
    log.record(one()).await.expect("recorded while NATS runs");
    server.stop();
    let started = Instant::now();
    let refused = log.record(one()).await;
    assert!(
        matches!(refused, Err(AccessLogError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < ack_timeout * 2 + Duration::from_millis(500),
        "refused after {:?}",
        started.elapsed()
    );
    server.restart();
    // The client reconnects on its own; recording resumes once it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match log.record(one()).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                assert!(matches!(err, AccessLogError::Unavailable(_)), "{err:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("still refused 20 s after NATS came back: {err}"),
        }
    }
    log.flush().await.expect("flushed");
    let found = log.query(all()).await.expect("query answered");
    assert!(
        found.len() >= 2,
        "the entries before and after the outage: {found:?}"
    );
    assert!(found.windows(2).all(|pair| pair[0].at < pair[1].at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_refuses_records() {
    let server = start_server().await;
    let clock = TestClock::default();
    let log = open(&server, options(clock.clock())).await;
    log.record(vec![entry(clock.now(), "staff:1", None, What::Events)])
        .await
        .expect("recorded");
    log.close().await.expect("closed");
    let refused = log
        .record(vec![entry(clock.now(), "staff:1", None, What::Events)])
        .await;
    assert!(
        matches!(refused, Err(AccessLogError::Closed)),
        "{refused:?}"
    );
    assert_eq!(log.query(all()).await.expect("query answered").len(), 1);
}

/// What one writer of the cluster test recorded: acknowledged and refused entry numbers.
#[derive(Debug, Default)]
struct Outcome {
    acknowledged: Vec<usize>,
    refused: Vec<usize>,
}

/// Records entry after entry as `actor` until 20 have been acknowledged after `killed` was
/// set, noting which were acknowledged and which refused.
async fn write_through_a_failure(
    log: &NatsAccessLog,
    actor: &str,
    t: Timestamp,
    acknowledged: &AtomicUsize,
    killed: &AtomicBool,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut after_kill = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "{actor}: only {after_kill} records acknowledged after the kill in 40 s"
        );
        let recorded = entry(t, actor, Some(&format!("loop-{i}")), What::Loop);
        let was_killed = killed.load(Ordering::SeqCst);
        match log.record(vec![recorded]).await {
            Ok(()) => {
                outcome.acknowledged.push(i);
                acknowledged.fetch_add(1, Ordering::SeqCst);
                if was_killed {
                    after_kill += 1;
                    if after_kill == 20 {
                        return outcome;
                    }
                }
            }
            Err(err) => {
                assert!(matches!(err, AccessLogError::Unavailable(_)), "{err:?}");
                outcome.refused.push(i);
                // A short pause before the next read, as a client told to retry would make.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    unreachable!("the loop returns or panics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_every_acknowledged_record_survives_losing_the_stream_leader() {
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("cluster started");
    let clock = TestClock::default();
    let mut logs = Vec::new();
    for _ in 0..2 {
        let client = async_nats::connect(cluster.url_list())
            .await
            .expect("connect to the cluster");
        let log = NatsAccessLog::open(
            client,
            NatsAccessLogOptions {
                replicas: 3,
                ack_timeout: Duration::from_secs(1),
                ..options(clock.clock())
            },
        )
        .await
        .expect("open the access log");
        logs.push(log);
    }
    let t = clock.now();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let writers = logs.iter().enumerate().flat_map(|(l, log)| {
        let (acknowledged, killed) = (Arc::clone(&acknowledged), Arc::clone(&killed));
        (0..2).map(move |w| {
            let (acknowledged, killed) = (Arc::clone(&acknowledged), Arc::clone(&killed));
            async move {
                let actor = format!("staff:{l}-{w}");
                let outcome = write_through_a_failure(log, &actor, t, &acknowledged, &killed).await;
                (actor, outcome)
            }
        })
    });
    let urls = cluster.url_list();
    let kill_the_leader = async {
        while acknowledged.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let leader = stream_info_on(&urls, DEFAULT_STREAM)
            .await
            .cluster
            .and_then(|c| c.leader)
            .expect("the stream has a leader");
        let node = (0..3)
            .find(|&i| NatsCluster::server_name(i) == leader)
            .expect("the leader is a node");
        killed.store(true, Ordering::SeqCst);
        node
    };
    let (outcomes, node) = tokio::join!(futures::future::join_all(writers), async {
        let node = kill_the_leader.await;
        tokio::task::block_in_place(|| cluster.kill(node));
        node
    });
    tokio::task::block_in_place(|| cluster.restart(node));

    // A query needs the stream's leader; give the cluster a moment to settle after the node
    // rejoins, as an auditor retrying would.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        match try_every_entry(&logs[0]).await {
            Ok(seen) => break seen,
            Err(err) if Instant::now() < deadline => {
                eprintln!("query not answered yet: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no answer 20 s after the node came back: {err}"),
        }
    };
    assert!(
        seen.windows(2).all(|pair| pair[0].at < pair[1].at),
        "times strictly increase"
    );
    let mut copies: HashMap<(String, String), usize> = HashMap::new();
    for e in &seen {
        let key = (
            e.actor.to_string(),
            e.loop_id.as_ref().expect("loop").to_string(),
        );
        *copies.entry(key).or_default() += 1;
    }
    let mut refused = 0;
    for (actor, outcome) in &outcomes {
        for i in &outcome.acknowledged {
            let key = (actor.clone(), format!("loop-{i}"));
            assert_eq!(
                copies.get(&key),
                Some(&1),
                "{key:?} acknowledged: in the log once"
            );
        }
        for i in &outcome.refused {
            let key = (actor.clone(), format!("loop-{i}"));
            assert!(
                copies.get(&key).is_none_or(|n| *n == 1),
                "{key:?} refused: at most once"
            );
        }
        refused += outcome.refused.len();
        let order: Vec<usize> = seen
            .iter()
            .filter(|e| e.actor.as_str() == actor)
            .map(|e| {
                e.loop_id.as_ref().expect("loop").as_str()["loop-".len()..]
                    .parse()
                    .expect("a number")
            })
            .collect();
        assert!(
            order.windows(2).all(|p| p[0] < p[1]),
            "{actor} in its order"
        );
    }
    eprintln!(
        "{} entries in the log, {refused} records refused while the leader was replaced",
        seen.len()
    );
}

async fn stream_info_on(urls: &[String], name: &str) -> jetstream::stream::Info {
    let client = async_nats::connect(urls).await.expect("connect");
    jetstream::new(client)
        .get_stream(name)
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("stream info")
        .clone()
}
