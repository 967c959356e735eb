//! Crash safety: a child process appends as fast as it can and is killed with SIGKILL at a
//! random moment, many times over the same directory. After every kill the store must hold
//! every append the child heard succeed, at the position it was told, with gapless positions
//! and verifying chains.
//!
//! The child seals personal data as `closeloop serve` does, with keys from a file key store
//! given from a small pool (refilled often): after every kill each acknowledged feedback's
//! story must still open with its loop's key.
//!
//! The child is this same test binary, running the ignored `crash_child` test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use closeloop_domain::{LoopEvent, LoopId};
use closeloop_keys::{FileKeyStore, KeyStore, MasterKey};
use closeloop_store::conformance::{acknowledgement, feedback};
use closeloop_store::record::Reveal;
use closeloop_store::{
    AppendRequest, EventStore, ExpectedVersion, KeyHandle, SledStore, SledStoreOptions, verify,
};
use rand::Rng;

const DIR_VAR: &str = "CLOSELOOP_CRASH_DIR";
const ROUND_VAR: &str = "CLOSELOOP_CRASH_ROUND";
const ROUNDS: usize = 25;
const CHILD_WRITERS: usize = 16;

/// The store as the child and the checks open it: keys in `dir/keys`, a pool of 8.
fn open_store(dir: &Path) -> (SledStore, Arc<FileKeyStore>) {
    let master = MasterKey::from_bytes([7; 32]);
    let keys = Arc::new(FileKeyStore::open(&dir.join("keys"), Some(&master)).expect("key store"));
    let options = SledStoreOptions {
        keys: Some(KeyHandle(Arc::clone(&keys) as Arc<dyn KeyStore>)),
        key_pool: 8,
        ..SledStoreOptions::default()
    };
    let store = SledStore::open(dir, &options).expect("open the store");
    (store, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let mut rng = rand::rng();
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.random_range(5..300));
        let heard = run_child_until_killed(dir.path(), round, kill_after);
        assert!(
            !heard.is_empty(),
            "round {round}: the child acknowledged nothing before the kill"
        );
        acknowledged.extend(heard);

        let (store, keys) = open_store(dir.path());
        let report = verify(&store, None).await.expect("verify");
        assert!(report.ok, "round {round}: {report:?}");
        let head = store.head();
        let all = store
            .read_all(0, usize::try_from(head).unwrap())
            .await
            .expect("read all");
        let mut stored: HashMap<String, u64> = HashMap::new();
        for entry in &all {
            let event = entry
                .event_as(Reveal::With(keys.as_ref()))
                .expect("decodes with its loop's key");
            if let LoopEvent::FeedbackReceived(data) = &event.payload {
                assert_eq!(
                    data.story.as_deref(),
                    Some("Test feedback"),
                    "round {round}: a story does not open at position {}",
                    entry.position
                );
            }
            stored.insert(event.event_id, entry.position);
        }
        for (event_id, position) in &acknowledged {
            assert_eq!(
                stored.get(event_id),
                Some(position),
                "round {round}: acknowledged event {event_id} at position {position} is not stored there"
            );
        }
        store.close().await;
    }
    eprintln!(
        "{ROUNDS} kills survived: {} acknowledged appends all present and verified",
        acknowledged.len()
    );
}

/// Starts the child, collects the appends it reports as acknowledged, and kills it with
/// SIGKILL `kill_after` its first acknowledgement.
fn run_child_until_killed(dir: &Path, round: usize, kill_after: Duration) -> HashMap<String, u64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(ROUND_VAR, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut heard = HashMap::new();
    let mut record = |line: String| {
        // Only whole lines count: a line cut by the kill has no newline and never arrives.
        if let Some(rest) = line.strip_prefix("acked ") {
            let (event_id, position) = rest.split_once(' ').expect("acked <id> <position>");
            heard.insert(event_id.to_owned(), position.parse().expect("position"));
        }
    };
    // Wait for the first acknowledgement (the test harness prints a header first).
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("child starts appending");
        let started = line.starts_with("acked ");
        record(line);
        if started {
            break;
        }
    }
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap child");
    reader.join().expect("reader thread");
    for line in lines.try_iter() {
        record(line);
    }
    heard
}

/// The child: appends from many tasks until killed, printing each acknowledged append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs only as the child of acknowledged_appends_survive_sigkill"]
async fn crash_child() {
    let dir = std::env::var(DIR_VAR).expect("crash_child runs only as a child process");
    let round = std::env::var(ROUND_VAR).expect("round");
    let (store, _keys) = open_store(Path::new(&dir));
    let store = &store;
    let writers = (0..CHILD_WRITERS).map(|writer| {
        let round = round.clone();
        async move {
            for n in 0.. {
                let id = format!("r{round}-w{writer}-{n}");
                let loop_id =
                    LoopId::parse(&format!("r{round}-w{writer}-{}", n / 4)).expect("loop id");
                let event = if n % 4 == 0 {
                    feedback("crash", &id)
                } else {
                    acknowledgement("crash", &id)
                };
                let outcome = store
                    .append(AppendRequest::single(
                        loop_id,
                        ExpectedVersion::Any,
                        vec![event],
                    ))
                    .await
                    .expect("append");
                let mut out = std::io::stdout().lock();
                writeln!(out, "acked {id} {}", outcome.committed[0].position).expect("stdout");
                out.flush().expect("stdout");
            }
        }
    });
    futures::future::join_all(writers).await;
}
