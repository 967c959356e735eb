//! What only the file log does: one file per UTC day, whole-day pruning on open and when the
//! day changes, torn and damaged lines, restarts, one writer per directory, and refusing
//! records when it cannot keep up or cannot write.

use std::path::{Path, PathBuf};

use closeloop_access::conformance::{TestClock, entry};
use closeloop_access::{
    AccessEntry, AccessLog, AccessLogError, AccessQuery, FileAccessLog, FileAccessLogOptions,
    QueryLimit, What, record_offline,
};
use jiff::{SignedDuration, Timestamp};

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn at(time: &str) -> Timestamp {
    time.parse().expect("a valid time")
}

async fn open(dir: &Path, clock: &TestClock) -> FileAccessLog {
    FileAccessLog::open(dir, options(clock))
        .await
        .expect("open the access log")
}

fn options(clock: &TestClock) -> FileAccessLogOptions {
    FileAccessLogOptions {
        clock: clock.clock(),
        ..FileAccessLogOptions::default()
    }
}

/// The names of the files in `dir`, sorted, the lock file left out.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|item| {
            item.expect("item")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != ".lock")
        .collect();
    names.sort();
    names
}

fn day_file(dir: &Path, day: &str) -> PathBuf {
    dir.join(format!("access-{day}.ndjson"))
}

async fn everything(log: &impl AccessLog) -> Vec<AccessEntry> {
    log.query(AccessQuery {
        limit: QueryLimit::new(1000).expect("limit"),
        ..AccessQuery::default()
    })
    .await
    .expect("query")
}

#[tokio::test]
async fn each_utc_day_has_its_own_file_of_whole_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let log = open(dir.path(), &clock).await;
    let before_midnight = entry(
        at("2026-11-27T23:59:59.999Z"),
        "staff:1",
        Some("loop-a"),
        What::Loop,
    );
    let after_midnight = entry(
        at("2026-11-28T00:00:00Z"),
        "staff:1",
        Some("loop-a"),
        What::Loop,
    );
    let next_day = entry(at("2026-11-28T10:00:00Z"), "auditor:2", None, What::Events);
    log.record(vec![before_midnight.clone(), after_midnight.clone()])
        .await
        .expect("recorded");
    log.record(vec![next_day.clone()]).await.expect("recorded");
    log.close().await.expect("closed");
    assert_eq!(
        files(dir.path()),
        ["access-2026-11-27.ndjson", "access-2026-11-28.ndjson"]
    );
    let lines = |day: &str| -> Vec<AccessEntry> {
        std::fs::read_to_string(day_file(dir.path(), day))
            .expect("read")
            .lines()
            .map(|line| serde_json::from_str(line).expect("an entry a line"))
            .collect()
    };
    assert_eq!(lines("2026-11-27"), [before_midnight]);
    assert_eq!(lines("2026-11-28"), [after_midnight, next_day]);
}

#[tokio::test]
async fn day_files_past_the_retention_go_when_the_log_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let now = clock.now();
    let log = open(dir.path(), &clock).await;
    log.record(vec![
        entry(now - days(401), "staff:1", Some("loop-a"), What::Loop),
        entry(now - days(400), "staff:1", Some("loop-a"), What::Loop),
        entry(now - days(399), "staff:1", Some("loop-a"), What::Loop),
    ])
    .await
    .expect("recorded");
    log.close().await.expect("closed");
    assert_eq!(files(dir.path()).len(), 3);
    // The day 400 days back holds entries on both sides of the cutoff: it stays whole.
    let log = open(dir.path(), &clock).await;
    assert_eq!(
        files(dir.path()),
        ["access-2025-10-23.ndjson", "access-2025-10-24.ndjson"]
    );
    assert_eq!(everything(&log).await.len(), 2);
}

#[tokio::test]
async fn the_writer_prunes_by_itself_when_the_day_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let now = clock.now();
    let log = open(dir.path(), &clock).await;
    log.record(vec![entry(
        now - days(10),
        "staff:1",
        Some("loop-a"),
        What::Loop,
    )])
    .await
    .expect("recorded");
    log.flush().await.expect("flushed");
    assert_eq!(files(dir.path()).len(), 1);
    // 391 days later the entry is 401 days old: the first batch of the new day prunes it
    // (a flush is a batch; so is the writer's tick every second).
    clock.set(now + days(391));
    log.flush().await.expect("flushed");
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[tokio::test]
async fn torn_and_damaged_lines_are_skipped_and_writing_goes_on_after_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let first = entry(
        at("2026-11-27T09:00:00Z"),
        "staff:1",
        Some("loop-a"),
        What::Loop,
    );
    let second = entry(
        at("2026-11-27T09:01:00Z"),
        "staff:2",
        Some("loop-a"),
        What::Loop,
    );
    let mut content = Vec::new();
    for good in [&first, &second] {
        content.extend(serde_json::to_vec(good).expect("json"));
        content.push(b'\n');
    }
    // Damage in the middle, then a line torn by a crash halfway through.
    let torn = serde_json::to_vec(&entry(
        at("2026-11-27T09:02:00Z"),
        "staff:3",
        None,
        What::Events,
    ))
    .expect("json");
    let mut damaged = content.clone();
    damaged.splice(
        serde_json::to_vec(&first).expect("json").len() + 1
            ..serde_json::to_vec(&first).expect("json").len() + 1,
        b"{\"at\": \"garbage\"}\n\x00\x01\xff\n".iter().copied(),
    );
    damaged.extend(&torn[..torn.len() / 2]);
    std::fs::create_dir_all(dir.path()).expect("dir");
    std::fs::write(day_file(dir.path(), "2026-11-27"), &damaged).expect("write");

    let log = open(dir.path(), &clock).await;
    assert_eq!(everything(&log).await, [first.clone(), second.clone()]);
    // The next entry starts a line of its own, after the torn one, and is found.
    let third = entry(
        at("2026-11-27T09:05:00Z"),
        "staff:4",
        Some("loop-b"),
        What::Loop,
    );
    log.record(vec![third.clone()]).await.expect("recorded");
    assert_eq!(everything(&log).await, [first, second, third]);
}

#[tokio::test]
async fn times_keep_increasing_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let t = clock.now();
    let log = open(dir.path(), &clock).await;
    log.record(vec![entry(t, "staff:1", Some("loop-a"), What::Loop)])
        .await
        .expect("recorded");
    log.close().await.expect("closed");
    assert!(matches!(
        log.record(vec![entry(t, "staff:1", None, What::Events)])
            .await,
        Err(AccessLogError::Closed)
    ));
    let log = open(dir.path(), &clock).await;
    // The clock stepped back an hour over the restart.
    log.record(vec![entry(
        t - SignedDuration::from_hours(1),
        "staff:2",
        None,
        What::Events,
    )])
    .await
    .expect("recorded");
    let found = everything(&log).await;
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].at, t + SignedDuration::from_nanos(1));
}

#[tokio::test]
async fn one_process_writes_a_log_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let log = open(dir.path(), &clock).await;
    let second = FileAccessLog::open(dir.path(), options(&clock)).await;
    assert!(
        matches!(second, Err(AccessLogError::Locked(_))),
        "{second:?}"
    );
    let offline = record_offline(
        dir.path(),
        entry(clock.now(), "operator:ops", None, What::Replay),
    )
    .await;
    assert!(
        matches!(offline, Err(AccessLogError::Locked(_))),
        "{offline:?}"
    );
    // Closing lets go of the lock: the log opens again at once.
    log.close().await.expect("closed");
    open(dir.path(), &clock).await;
}

#[tokio::test]
async fn an_offline_record_is_durable_and_ordered_after_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let t = clock.now();
    let log = open(dir.path(), &clock).await;
    log.record(vec![entry(t, "staff:1", Some("loop-a"), What::Loop)])
        .await
        .expect("recorded");
    log.close().await.expect("closed");
    let written = record_offline(dir.path(), entry(t, "operator:ops", None, What::Replay))
        .await
        .expect("recorded once the service let go");
    assert_eq!(written.at, t + SignedDuration::from_nanos(1));
    let log = open(dir.path(), &clock).await;
    assert_eq!(everything(&log).await[1], written);
}

#[tokio::test]
async fn a_failed_write_stops_recording_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let log = open(dir.path(), &clock).await;
    // A directory where the day's file should be: opening it for appending fails.
    std::fs::create_dir(day_file(dir.path(), "2026-11-27")).expect("dir");
    log.record(vec![entry(
        clock.now(),
        "staff:1",
        Some("loop-a"),
        What::Loop,
    )])
    .await
    .expect("queued before the failure");
    let flushed = log.flush().await;
    assert!(
        matches!(flushed, Err(AccessLogError::Failed(_))),
        "{flushed:?}"
    );
    let refused = log
        .record(vec![entry(
            clock.now(),
            "staff:1",
            Some("loop-a"),
            What::Loop,
        )])
        .await;
    let Err(AccessLogError::Failed(reason)) = refused else {
        panic!("recorded after a failed write: {refused:?}");
    };
    assert!(reason.contains("access-2026-11-27.ndjson"), "{reason}");
}
