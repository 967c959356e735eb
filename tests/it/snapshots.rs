//! A new replica on `CLOSELOOP_STORE=jetstream` starts from the read models' snapshot another
//! replica shared in the JetStream object store bucket, and the bucket holds no plaintext
//! personal data (issue 11, item 8).

use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::Service;
use crate::api::STAFF;

const NAME: &str = "Philippa Snapshotworth-Adeyemi";
const CONTACT: &str = "philippa.s.5519@example.org";
const STORY: &str = "The night nurse on ward 4 sang to my father, tell Philippa's family";

/// The bucket's stream, as `closeloop serve` creates it.
const BUCKET_STREAM: &str = "OBJ_CLOSELOOP_SNAPSHOTS";

fn start_replica(dir: &std::path::Path, nats_url: &str) -> Service {
    Service::start_with_env(dir, nats_url, &[("CLOSELOOP_STORE", "jetstream")])
}

/// The ids of the loops the replica lists, every status.
async fn listed(http: &reqwest::Client, service: &Service) -> Vec<String> {
    let page: Value = http
        .get(service.url("/v1/loops?status=all&limit=100"))
        .bearer_auth(STAFF)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["loop_id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// Every message the bucket's stream holds (the snapshot's chunks and its metadata), raw.
async fn bucket_bytes(nats_url: &str) -> Vec<Vec<u8>> {
    let client = async_nats::connect(nats_url).await.expect("connect");
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(BUCKET_STREAM)
        .await
        .expect("the bucket's stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        // Sequences of purged chunks (an older snapshot's) are gone: skip them.
        if let Ok(message) = stream.get_raw_message(sequence).await {
            messages.push(message.payload.to_vec());
        }
    }
    messages
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.to_lowercase().into_bytes();
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(&needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_starts_from_the_snapshot_in_the_bucket_which_holds_no_personal_data() {
    let nats = closeloop_testkit::NatsServer::start();
    let http = reqwest::Client::new();
    let first_dir = tempfile::tempdir().expect("temp dir");
    let first = start_replica(first_dir.path(), &nats.url());

    let mut written = Vec::new();
    for n in 0..12 {
        let loop_id = format!("snap-{n:02}");
        let mut body = json!({"loop_id": loop_id, "org_unit": "rxx/site-a/ward-4",
            "channel": "web", "themes": ["kindness"], "ratings": {"fft": 1}});
        if n == 0 {
            body["story"] = json!(STORY);
            body["author"] = json!({"name": NAME, "contact": CONTACT});
        }
        let answer = http
            .post(first.url("/v1/feedback"))
            .bearer_auth(STAFF)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), StatusCode::CREATED, "{loop_id}");
        written.push(loop_id);
    }
    assert_eq!(listed(&http, &first).await, written);

    // SIGTERM: the projector saves its snapshot, which then goes to the bucket.
    let status = first.terminate();
    assert!(status.success(), "{status}");

    // A second replica on an empty data directory takes it from there.
    let second_dir = tempfile::tempdir().expect("temp dir");
    let second = start_replica(second_dir.path(), &nats.url());
    let loaded =
        second.wait_for_log("read models loaded from the snapshot in the JetStream bucket");
    assert!(loaded.contains("checkpoint=12"), "{loaded}");
    second.wait_for_log("projector starting");
    let projector = second
        .logs()
        .into_iter()
        .find(|line| line.contains("projector starting"))
        .expect("projector line");
    assert!(projector.contains("applied=12"), "{projector}");
    assert_eq!(listed(&http, &second).await, written);

    // The snapshot is there byte for byte in the second replica's data directory, and the
    // bucket holds neither it in plain nor any other personal data: only what the read models
    // keep (org units, themes) is readable.
    let downloaded =
        std::fs::read(second_dir.path().join("projections.snapshot")).expect("the snapshot");
    let messages = bucket_bytes(&nats.url()).await;
    let everything: Vec<u8> = messages.concat();
    assert!(
        contains(&everything, "kindness") && contains(&downloaded, "kindness"),
        "the scan does not even see the themes; is it reading the snapshot?"
    );
    assert!(
        everything
            .windows(downloaded.len())
            .any(|window| window == downloaded.as_slice()),
        "the downloaded file is the bucket's object"
    );
    for secret in [NAME, CONTACT, STORY, "Philippa", "night nurse"] {
        assert!(
            !contains(&everything, secret),
            "{secret:?} is in the bucket"
        );
        assert!(
            !contains(&downloaded, secret),
            "{secret:?} is in the snapshot"
        );
    }

    // It goes on from there: a write through it is read back.
    let answer = http
        .post(second.url("/v1/feedback"))
        .bearer_auth(STAFF)
        .json(
            &json!({"loop_id": "snap-late", "org_unit": "rxx/site-a/ward-4",
            "channel": "web", "ratings": {"fft": 2}}),
        )
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert!(
        listed(&http, &second)
            .await
            .contains(&"snap-late".to_owned())
    );
}
