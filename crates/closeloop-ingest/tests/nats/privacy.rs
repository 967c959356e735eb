//! What is left of personal data in NATS: the outbound feed carries none, dead letters are
//! erased before their `max_age`, and once ingested a feedback message leaves no byte in the
//! server's files — checked by scanning every byte of the JetStream directory after a clean
//! shutdown of the server.

use std::path::{Path, PathBuf};

use closeloop_ingest::PERSONAL_DATA_ATTRIBUTE;
use closeloop_ingest::streams::FEEDBACK_STREAM;

use super::*;

/// A name, a contact and a story no other test uses, to look for byte by byte.
const NAME: &str = "Zebedee Quillfeather-Okonkwo";
const CONTACT: &str = "zq.okonkwo.7731@example.org";
const STORY: &str = "The night porter on Larkspur ward hummed sea shanties at 3am";

fn personal_feedback(id: &str, loop_id: &str) -> Value {
    cloud_event(
        id,
        EventType::FeedbackReceived,
        Some(loop_id),
        &json!({
            "org_unit": "rxx/site-a/ward-7", "channel": "web", "ratings": {"fft": 4},
            "story": STORY, "author": {"name": NAME, "contact": CONTACT},
        }),
    )
}

/// Where in `dir` each of `needles` occurs: (file relative to `dir`, needle).
fn scan(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in needles {
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                found.push((
                    path.strip_prefix(dir).unwrap().to_owned(),
                    (*needle).to_owned(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// The files of `stream` among `found`.
fn in_stream<'a>(found: &'a [(PathBuf, String)], stream: &str) -> Vec<&'a (PathBuf, String)> {
    found
        .iter()
        .filter(|(path, _)| path.components().any(|part| part.as_os_str() == stream))
        .collect()
}

#[tokio::test]
async fn the_feed_carries_no_personal_data() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;

    let steps = [
        personal_feedback("fb-private", "loop-private"),
        step(
            "ack-private",
            EventType::Acknowledged,
            "loop-private",
            &json!({"by": "pals", "message": "Dear Zebedee, thank you for writing to us"}),
        ),
        step(
            "reply-private",
            EventType::Responded,
            "loop-private",
            &json!({"by": "pals", "text": "Dear Zebedee, the porter will sing more quietly"}),
        ),
    ];
    for event in &steps {
        publish_event(&js, event).await;
    }
    let fed = wait_for_messages(&js, FEED_STREAM, steps.len()).await;
    for (event, message) in steps.iter().zip(&fed) {
        let event_type = EventType::parse(event["type"].as_str().unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        let text = String::from_utf8(message.payload.to_vec()).unwrap();
        for field in event_type.personal_fields() {
            assert_eq!(body["data"].get(*field), None, "{event_type}: {field}");
            let value = event["data"][*field].to_string();
            let value = value.trim_matches('"');
            assert!(!text.contains(value), "{event_type}: {value} in {text}");
        }
        if event_type.personal_fields().is_empty() {
            assert_eq!(body.get(PERSONAL_DATA_ATTRIBUTE), None, "{event_type}");
        } else {
            assert_eq!(body[PERSONAL_DATA_ATTRIBUTE], "omitted", "{event_type}");
        }
    }
    let first: Value = serde_json::from_slice(&fed[0].payload).unwrap();
    assert_eq!(first["data"]["ratings"]["fft"], 4);
    assert_eq!(first["data"]["org_unit"], "rxx/site-a/ward-7");
    for message in &fed {
        let text = String::from_utf8(message.payload.to_vec()).unwrap();
        for personal in [NAME, CONTACT, STORY] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }
    service.stop().await;
}

/// Publishes a feedback with personal data and, after it, a follow-up for a loop that does
/// not exist yet, which stays unacknowledged (retried) while the feedback is stored and
/// acknowledged; scans the server's files with both still in `FEEDBACK`'s block; then lets
/// the follow-up be stored too and scans again once `FEEDBACK` is empty.
#[tokio::test]
async fn once_ingested_a_feedback_leaves_no_personal_data_in_the_nats_files() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut options = IngestOptions {
        unknown_loop_attempts: 1_000,
        unknown_loop_backoff: Duration::from_millis(100),
        ..Service::options(&server.url(), dir.path())
    };
    options.limits.ack_wait = Duration::from_secs(2);
    let service = Service::start_running_with(options.clone(), dir.path(), None).await;
    let js = client(&server).await;
    publish_event(&js, &personal_feedback("fb-scan", "loop-scan")).await;
    publish_event(
        &js,
        &step(
            "ack-early",
            EventType::Acknowledged,
            "loop-later",
            &json!({"by": "pals"}),
        ),
    )
    .await;
    service.wait_for_head(1).await;
    wait_for_messages(&js, FEED_STREAM, 1).await;
    let mut feedback = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    wait_until("only the follow-up to be left in FEEDBACK", async || {
        feedback.info().await.unwrap().state.messages == 1
    })
    .await;
    let store = service.stop().await;
    drop(js);
    server.shut_down();

    let needles = [NAME, CONTACT, STORY];
    let waiting = scan(server.store_dir(), &needles);
    eprintln!("acknowledged, its block still holding an unacknowledged message: {waiting:?}");
    assert!(in_stream(&waiting, FEED_STREAM).is_empty(), "{waiting:?}");
    assert!(in_stream(&waiting, DLQ_STREAM).is_empty(), "{waiting:?}");
    assert_eq!(
        in_stream(&waiting, FEEDBACK_STREAM).len(),
        waiting.len(),
        "nowhere but FEEDBACK: {waiting:?}"
    );

    // This time the follow-up is dead-lettered at its next delivery: FEEDBACK empties.
    server.restart();
    options.unknown_loop_attempts = 1;
    let service = Service::start_running_with(options, dir.path(), Some(store)).await;
    let js = client(&server).await;
    wait_for_messages(&js, DLQ_STREAM, 1).await;
    let mut feedback = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    wait_until("FEEDBACK to be empty", async || {
        feedback.info().await.unwrap().state.messages == 0
    })
    .await;
    service.stop().await;
    drop(js);
    server.shut_down();

    let drained = scan(server.store_dir(), &needles);
    eprintln!("acknowledged, FEEDBACK empty: {drained:?}");
    assert_eq!(drained, [], "no byte of personal data left in NATS");
}

/// The files of `stream`'s messages in the server's directory, with their sizes.
fn block_files(server: &NatsServer, stream: &str) -> Vec<(String, u64)> {
    let dir = server
        .store_dir()
        .join("jetstream/$G/streams")
        .join(stream)
        .join("msgs");
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| {
                    let entry = entry.unwrap();
                    (
                        entry.file_name().to_string_lossy().into_owned(),
                        entry.metadata().unwrap().len(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The bound when `FEEDBACK` does not empty: an acknowledged message's bytes go with its block
/// (4 MiB for a work queue), once every message of that block is acknowledged, even while
/// later messages still wait.
#[tokio::test]
async fn an_acknowledged_message_leaves_with_its_block_while_later_ones_wait() {
    const FILLER: usize = 4_600;
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let options = IngestOptions {
        unknown_loop_attempts: 1_000,
        ..Service::options(&server.url(), dir.path())
    };
    let service = Service::start_running_with(options, dir.path(), None).await;
    let js = client(&server).await;
    publish_event(&js, &personal_feedback("fb-first", "loop-first")).await;
    // About 1 KB each: more than a block's worth after the first message.
    let story = "A filler story without anyone's name in it. ".repeat(22);
    let mut acks = Vec::new();
    for n in 0..FILLER {
        let mut event = feedback(&format!("fb-filler-{n}"), None);
        event["data"]["story"] = json!(story);
        acks.push(
            js.send_publish(
                "feedback.test",
                PublishMessage::build().payload(event.to_string().into()),
            )
            .await
            .unwrap(),
        );
        if acks.len() >= 500 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    const WAITING: &str = "loop-that-never-comes-marker";
    publish_event(
        &js,
        &step(
            "ack-waiting",
            EventType::Acknowledged,
            WAITING,
            &json!({"by": "pals"}),
        ),
    )
    .await;
    service.wait_for_head(1 + FILLER as u64).await;
    let mut feedback = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    wait_until("only the waiting follow-up to be left", async || {
        feedback.info().await.unwrap().state.messages == 1
    })
    .await;
    service.stop().await;
    drop(js);
    server.shut_down();

    let found = scan(server.store_dir(), &[NAME, CONTACT, STORY, WAITING]);
    eprintln!(
        "FEEDBACK's blocks with one message waiting: {:?}; found: {found:?}",
        block_files(&server, FEEDBACK_STREAM)
    );
    assert!(
        found.iter().any(|(_, needle)| needle == WAITING),
        "the waiting message is in FEEDBACK's files: the scan sees what is there"
    );
    assert!(
        found.iter().all(|(_, needle)| needle == WAITING),
        "the first block went once all of it was acknowledged: {found:?}"
    );
}

#[tokio::test]
async fn dead_letters_are_erased_before_their_max_age_and_leave_no_bytes() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let max_age = Duration::from_secs(10);
    let options = IngestOptions {
        dead_letter_max_age: max_age,
        ..Service::options(&server.url(), dir.path())
    };
    let service = Service::start_running_with(options, dir.path(), None).await;
    let js = client(&server).await;
    let mut dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().config.max_age, max_age);

    // Feedback without a channel is dead-lettered as it came: name, contact, story and all.
    let mut invalid = personal_feedback("fb-invalid", "loop-invalid");
    invalid["data"].as_object_mut().unwrap().remove("channel");
    publish_event(&js, &invalid).await;
    wait_for_messages(&js, DLQ_STREAM, 1).await;
    // A younger dead letter keeps the block in use after the first is gone, as a quiet
    // stream's would for weeks: JetStream's own expiry would leave the first one's bytes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    const YOUNGER: &str = "a-younger-dead-letter-marker";
    publish(
        &js,
        "feedback.test",
        json!({"note": YOUNGER}).to_string().into_bytes(),
    )
    .await;
    wait_for_messages(&js, DLQ_STREAM, 2).await;
    wait_until("the first dead letter to be erased", async || {
        dlq.info().await.unwrap().state.messages == 1
    })
    .await;
    service.stop().await;
    drop(js);
    server.shut_down();

    let found = scan(server.store_dir(), &[NAME, CONTACT, STORY, YOUNGER]);
    eprintln!("after the first dead letter's erasure: {found:?}");
    assert!(
        in_stream(&found, DLQ_STREAM)
            .iter()
            .any(|(_, needle)| needle == YOUNGER),
        "the younger dead letter is still there: the scan sees what is there"
    );
    assert!(
        found.iter().all(|(_, needle)| needle == YOUNGER),
        "no byte of the erased dead letter is left: {found:?}"
    );
}

#[tokio::test]
async fn an_existing_dead_letter_stream_gets_the_configured_max_age() {
    let server = NatsServer::start();
    let js = client(&server).await;
    // As Closeloop used to create it: no age limit.
    js.create_stream(jetstream::stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec!["closeloop.dlq".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let max_age = Duration::from_secs(90);
    let options = IngestOptions {
        dead_letter_max_age: max_age,
        ..Service::options(&server.url(), dir.path())
    };
    let service = Service::start_running_with(options, dir.path(), None).await;
    let mut dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    let config = dlq.info().await.unwrap().config.clone();
    assert_eq!(config.max_age, max_age);
    assert_eq!(
        config.duplicate_window, max_age,
        "the duplicate window may not be longer than max_age"
    );
    service.stop().await;
}
