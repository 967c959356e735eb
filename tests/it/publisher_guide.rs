//! The publisher guide (`docs/publishing.md`) stays true: its Python example takes a loop round
//! against the real service, the guide shows that example verbatim, its loop-id one-liner
//! agrees with the service, and every CloudEvent it shows is one the service accepts.
//!
//! The Python tests need nats-py: `scripts/test` makes `target/python-venv` with it and names
//! its interpreter in `CLOSELOOP_PYTHON`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use closeloop_domain::EventType;
use closeloop_ingest::cloudevent::{self, DecodeError, Decoded};
use closeloop_testkit::NatsServer;
use serde_json::Value;

use crate::api::{Api, STAFF};

const GUIDE: &str = "docs/publishing.md";
const EXAMPLE: &str = "examples/python/publish_feedback.py";

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
}

fn read(path: &str) -> String {
    let path = workspace_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// The contents of the fenced code blocks opened with "```" + `info`, in order, each line
/// ending in a newline.
fn code_blocks(markdown: &str, info: &str) -> Vec<String> {
    let opening = format!("```{info}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line == opening => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "a ```{info} block in the guide is not closed"
    );
    blocks
}

/// The Python interpreter with nats-py: `CLOSELOOP_PYTHON`, else the venv `scripts/test` makes.
fn python() -> PathBuf {
    let python = std::env::var_os("CLOSELOOP_PYTHON").map_or_else(
        || workspace_root().join("target/python-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} does not exist: run scripts/test once (it makes target/python-venv with nats-py), or set CLOSELOOP_PYTHON to a Python that has nats-py",
        python.display()
    );
    python
}

/// Decodes a message as ingestion does, received at a fixed time after every example's `time`
/// (a `time` more than 5 minutes after the message arrived is refused).
fn decode(payload: &[u8], headers: &[(&str, &str)]) -> Result<Decoded, DecodeError> {
    // `decode` takes the receive time as a `jiff::Timestamp`; deserialising it lets its
    // signature name the type, so these tests need no date crate of their own.
    let received_at = serde_json::from_str("\"2027-01-31T09:30:00Z\"").expect("a timestamp");
    cloudevent::decode(payload, headers, received_at)
}

/// Runs the example with `NATS_URL` set, off the async runtime.
async fn run_example(nats_url: String, loop_id: &'static str) -> Output {
    let python = python();
    let script = workspace_root().join(EXAMPLE);
    tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--loop-id", loop_id, "--timeout", "60"])
            .env("NATS_URL", nats_url)
            .output()
            .expect("run the Python example")
    })
    .await
    .expect("the example's thread")
}

/// The example's JSON lines, after checking that it succeeded.
fn printed_events(output: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python example failed ({}):\n{stderr}",
        output.status
    );
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{line:?}: {err}")))
        .collect()
}

#[tokio::test]
async fn the_python_example_closes_a_loop_and_sees_its_events_on_the_feed() {
    const LOOP_ID: &str = "py-guide-0001";
    let server = NatsServer::start();
    // The example starts at once: it waits for the streams the service creates on start.
    let api = Api::start_with_nats(tempfile::tempdir().unwrap(), &server.url());

    let events = printed_events(&run_example(server.url(), LOOP_ID).await);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "org.closeloop.feedback.received",
            "org.closeloop.loop.acknowledged",
            "org.closeloop.loop.change_made",
            "org.closeloop.loop.reported_back",
        ],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["loop_id"] == LOOP_ID), "{events:?}");
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().expect("a position"))
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );

    let answer = api.get(&format!("/v1/loops/{LOOP_ID}"), STAFF).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["status"], "closed", "{}", answer.text);
    assert_eq!(answer.body["stage"], "closed", "{}", answer.text);
    assert_eq!(answer.body["version"], 4, "{}", answer.text);

    // As the guide says: a second run with the same loop id publishes only duplicates, which
    // are not stored again, and finds the same four events on the feed.
    let again = printed_events(&run_example(server.url(), LOOP_ID).await);
    assert_eq!(again, events);
    let answer = api.get(&format!("/v1/loops/{LOOP_ID}"), STAFF).await;
    assert_eq!(answer.body["version"], 4, "{}", answer.text);
}

#[test]
fn the_guide_shows_the_python_example_verbatim() {
    let blocks = code_blocks(&read(GUIDE), "python");
    assert_eq!(blocks.len(), 1, "the guide should have one ```python block");
    assert!(
        blocks[0] == read(EXAMPLE),
        "the ```python block of {GUIDE} differs from {EXAMPLE}: copy the file into the guide"
    );
}

#[test]
fn the_guides_loop_id_one_liner_derives_what_the_service_derives() {
    let guide = read(GUIDE);
    let command = guide
        .lines()
        .find(|line| line.starts_with("python3 -c '") && line.contains("uuid5"))
        .expect("the guide shows the derived loop id as a python3 -c one-liner");
    let program = command
        .split('\'')
        .nth(1)
        .expect("the program in single quotes");
    let python = python();
    for (source, id) in [
        ("urn:trust:rxx:fft-kiosk", "fft-000123"),
        ("urn:trust:rxx:ffurflen-adborth-ŵyr", "ŵ-1"),
        ("a", "bc"),
        ("ab", "c"),
    ] {
        let output = Command::new(&python)
            .args(["-c", program, source, id])
            .output()
            .expect("run python");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = cloudevent::derived_loop_id(source, id);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            expected.as_str(),
            "({source}, {id})"
        );
    }
    let documented = cloudevent::derived_loop_id("urn:trust:rxx:fft-kiosk", "fft-000123");
    assert!(
        guide.contains(documented.as_str()),
        "the guide should give {documented:?} as the derived id of its example"
    );
}

#[test]
fn every_cloudevent_in_the_guide_is_accepted() {
    let guide = read(GUIDE);
    let mut types = BTreeSet::new();
    for block in code_blocks(&guide, "json") {
        let value: Value = serde_json::from_str(&block)
            .unwrap_or_else(|err| panic!("a ```json block is not JSON ({err}):\n{block}"));
        if value.get("specversion").is_none() {
            continue;
        }
        let decoded = decode(block.as_bytes(), &[])
            .unwrap_or_else(|err| panic!("{} ({}):\n{block}", err.code(), err.detail()));
        assert_eq!(decoded.origin.event_id, value["id"].as_str().unwrap());
        types.insert(decoded.command.payload.event_type());
    }
    // Every type a publisher may send: erasures and story approvals are Closeloop's own.
    let all: BTreeSet<EventType> = EventType::ALL
        .into_iter()
        .filter(|t| !t.recorded_by_closeloop_only())
        .collect();
    assert_eq!(types, all, "the guide should show every event type");

    // The binary-mode example: headers, a blank line, then the data.
    let binary = code_blocks(&guide, "text")
        .into_iter()
        .find(|block| block.starts_with("ce-specversion:"))
        .expect("the guide shows a binary-mode message");
    let (head, payload) = binary
        .split_once("\n\n")
        .expect("a blank line after the headers");
    let headers: Vec<(&str, &str)> = head
        .lines()
        .map(|line| line.split_once(": ").expect("a header line"))
        .collect();
    let decoded = decode(payload.as_bytes(), &headers)
        .unwrap_or_else(|err| panic!("{} ({}):\n{binary}", err.code(), err.detail()));
    assert_eq!(decoded.command.loop_id.as_str(), "fft-rxx-000124");
}
