//! `closeloop replay` and `closeloop verify`, checked the way an auditor would (hashes and the
//! Merkle head are recomputed here from the contract's definitions, not with the service's
//! code); and `closeloop demo` on the JetStream store.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{run_cli, seed};

const LINE_KEYS: [&str; 11] = [
    "position",
    "loop_id",
    "version",
    "event_id",
    "source",
    "type",
    "time",
    "data",
    "record",
    "prev_hash",
    "hash",
];

fn replay(dir: &Path, args: &[&str]) -> Vec<Value> {
    let output = run_cli(dir, &[&["replay"], args].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

/// SHA-256(position ‖ version ‖ len(loop_id) ‖ loop_id ‖ prev_hash ‖ record), contract §3.
fn contract_hash(line: &Value) -> String {
    let loop_id = line["loop_id"].as_str().expect("loop_id");
    let mut hasher = Sha256::new();
    hasher.update(line["position"].as_u64().expect("position").to_be_bytes());
    hasher.update(line["version"].as_u64().expect("version").to_be_bytes());
    hasher.update(
        u32::try_from(loop_id.len())
            .expect("short id")
            .to_be_bytes(),
    );
    hasher.update(loop_id.as_bytes());
    hasher.update(hex(line["prev_hash"].as_str().expect("prev_hash")));
    hasher.update(
        BASE64
            .decode(line["record"].as_str().expect("record"))
            .expect("base64"),
    );
    to_hex(&hasher.finalize())
}

/// RFC 6962 §2.1 Merkle Tree Hash over entry hashes.
pub fn merkle_tree_hash(leaves: &[Vec<u8>]) -> Vec<u8> {
    let sha = |parts: &[&[u8]]| {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().to_vec()
    };
    match leaves.len() {
        0 => sha(&[]),
        1 => sha(&[&[0x00], &leaves[0]]),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            sha(&[
                &[0x01],
                &merkle_tree_hash(&leaves[..k]),
                &merkle_tree_hash(&leaves[k..]),
            ])
        }
    }
}

pub fn hex(raw: &str) -> Vec<u8> {
    (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn replay_prints_every_event_in_the_contract_line_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 3).await;
    let lines = replay(dir.path(), &[]);
    assert_eq!(lines.len(), 6);
    let mut last_hash: HashMap<String, String> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        let keys: Vec<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, LINE_KEYS, "line {index}");
        assert_eq!(line["position"], index as u64 + 1);
        let loop_id = line["loop_id"].as_str().expect("loop_id").to_owned();
        let expected_prev = last_hash
            .get(&loop_id)
            .cloned()
            .unwrap_or_else(|| "0".repeat(64));
        assert_eq!(line["prev_hash"], expected_prev.as_str(), "line {index}");
        assert_eq!(line["hash"], contract_hash(line).as_str(), "line {index}");
        last_hash.insert(loop_id, line["hash"].as_str().expect("hash").to_owned());
    }
    let first = &lines[0];
    assert_eq!(first["type"], "org.closeloop.feedback.received");
    assert_eq!(first["version"], 1);
    assert_eq!(
        first["data"]["story"], "Test feedback",
        "personal data is merged back into data"
    );
    assert_eq!(lines[3]["type"], "org.closeloop.loop.acknowledged");
    assert_eq!(lines[3]["version"], 2);

    let tail = replay(dir.path(), &["--after", "4"]);
    assert_eq!(
        tail.iter()
            .map(|l| l["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [5, 6]
    );
}

#[tokio::test]
async fn verify_prints_the_merkle_head_an_auditor_computes() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 4).await;
    let leaves: Vec<Vec<u8>> = replay(dir.path(), &[])
        .iter()
        .map(|line| hex(line["hash"].as_str().expect("hash")))
        .collect();

    let output = run_cli(dir.path(), &["verify"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], 8);
    assert_eq!(report["first_bad_position"], Value::Null);
    assert_eq!(
        report["head_hash"],
        to_hex(&merkle_tree_hash(&leaves)).as_str()
    );

    let output = run_cli(dir.path(), &["verify", "--upto", "5"]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["events"], 5);
    assert_eq!(
        report["head_hash"],
        to_hex(&merkle_tree_hash(&leaves[..5])).as_str()
    );
}

/// Alters the sled database under the service's feet, as an attacker with disk access would.
fn tamper(dir: &Path, change: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir).expect("open sled");
    let tree = db.open_tree("events").expect("events tree");
    change(&tree);
    db.flush().expect("flush");
}

fn entry_key(position: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&position.to_be_bytes());
    key
}

fn check_verify_fails_at(dir: &Path, position: u64) {
    let output = run_cli(dir, &["verify"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "verify must fail on a tampered log"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], position);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("first bad position {position}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn verify_names_the_first_position_whose_record_was_altered() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 3).await;
    tamper(dir.path(), |tree| {
        let mut value = tree
            .get(entry_key(4))
            .expect("read")
            .expect("entry 4")
            .to_vec();
        // Change one character of the record (the last byte is its closing brace).
        let at = value.len() - 3;
        value[at] ^= 0x01;
        tree.insert(entry_key(4), value).expect("write");
    });
    check_verify_fails_at(dir.path(), 4);
}

#[tokio::test]
async fn verify_notices_a_deleted_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 3).await;
    tamper(dir.path(), |tree| {
        tree.remove(entry_key(2)).expect("remove");
    });
    check_verify_fails_at(dir.path(), 2);
}

#[test]
fn commands_that_read_the_log_refuse_a_data_directory_without_a_store() {
    let parent = tempfile::tempdir().expect("temp dir");
    let typo = parent.path().join("typo");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("empty dir");
    for dir in [&typo, &empty] {
        for command in [&["verify"][..], &["replay"], &["rebuild"]] {
            let output = run_cli(dir, command);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(4), "{command:?}: {stderr}");
            assert!(
                stderr.contains("holds no event store"),
                "{command:?}: {stderr}"
            );
            assert!(stderr.contains("--data-dir"), "{command:?}: {stderr}");
            assert!(output.stdout.is_empty(), "{command:?}");
        }
    }
    assert!(!typo.exists(), "no directory was created");
    assert_eq!(
        std::fs::read_dir(&empty).expect("read dir").count(),
        0,
        "no store was created"
    );
}

#[tokio::test]
async fn verify_upto_beyond_the_head_says_so_and_is_not_called_tampering() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 4).await;
    let output = run_cli(dir.path(), &["verify", "--upto", "9"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("beyond the head"), "{stderr}");
    assert!(stderr.contains("position 8"), "names the head: {stderr}");
    assert!(!stderr.contains("TAMPERED"), "{stderr}");

    // Up to the head itself is fine.
    let output = run_cli(dir.path(), &["verify", "--upto", "8"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn demo_loads_the_jetstream_log_and_leaves_the_access_log_to_serve() {
    let nats = closeloop_testkit::NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = nats.url();
    let loaded = std::process::Command::new(crate::closeloop_bin())
        .args([
            "demo",
            "--loops",
            "3",
            "--store",
            "jetstream",
            "--nats-url",
            &url,
        ])
        .env("CLOSELOOP_DATA_DIR", dir.path())
        .env("CLOSELOOP_MASTER_KEY", crate::MASTER_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run closeloop demo");
    let stderr = String::from_utf8_lossy(&loaded.stderr);
    assert!(loaded.status.success(), "{stderr}");
    assert!(stderr.contains("demo data: 3 loops"), "{stderr}");

    let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
    let mut log = js
        .get_stream("CLOSELOOP_LOG")
        .await
        .expect("the log stream");
    // The genesis message and at least one batch of the three loops' events.
    assert!(log.info().await.expect("log info").state.messages >= 2);
    assert!(
        js.get_stream("CLOSELOOP_ACCESS").await.is_err(),
        "demo must not open the access log (opening it sets its retention)"
    );
    // Nothing was written to the data directory (the embedded store's home).
    assert_eq!(std::fs::read_dir(dir.path()).expect("data dir").count(), 0);

    let refused = std::process::Command::new(crate::closeloop_bin())
        .args(["demo", "--store", "jetstream", "--nats-url", "off"])
        .env("CLOSELOOP_DATA_DIR", dir.path())
        .output()
        .expect("run closeloop demo");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot be off"));
}
