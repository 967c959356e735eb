//! "Who looked" end to end: a read recorded by the running service is on disk after SIGTERM,
//! day files past `CLOSELOOP_ACCESS_LOG_RETENTION_DAYS` go when the service starts, and the
//! auditor reads the log back after a restart.

use std::path::Path;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Service, seed};

/// A line of the access log for a read `days_ago` days back, in the file of its day.
fn plant_old_read(access_dir: &Path, days_ago: i64) -> std::path::PathBuf {
    let at = Timestamp::now() - SignedDuration::from_hours(24 * days_ago);
    let day = at.to_zoned(TimeZone::UTC).date();
    let path = access_dir.join(format!("access-{day}.ndjson"));
    let line = format!(
        "{{\"at\":\"{at}\",\"actor\":\"staff:{days_ago}-days-ago\",\"role\":\"staff\",\"loop_id\":\"loop-0\",\"what\":\"loop\"}}\n"
    );
    std::fs::write(&path, line).expect("write an old day file");
    path
}

/// The credential id the service names a token's holder by: role and 8 hex digits of its SHA-256.
fn credential_id(role: &str, token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{role}:{hex}")
}

#[tokio::test]
async fn reads_are_on_disk_after_sigterm_and_old_days_go_when_the_service_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 1).await;
    let access_dir = dir.path().join("access");
    std::fs::create_dir_all(&access_dir).expect("access dir");
    let too_old = plant_old_read(&access_dir, 40);
    let kept = plant_old_read(&access_dir, 10);

    let service = Service::start_with_env(
        dir.path(),
        "off",
        &[("CLOSELOOP_ACCESS_LOG_RETENTION_DAYS", "30")],
    );
    let client = reqwest::Client::new();
    let read = client
        .get(service.url("/v1/loops/loop-0"))
        .bearer_auth("staff-token-e2e")
        .send()
        .await
        .expect("read a loop");
    assert_eq!(read.status(), 200);
    let status = service.terminate();
    assert!(status.success(), "serve exited with {status} after SIGTERM");

    assert!(
        !too_old.exists(),
        "a day 40 days old outlived a 30-day retention"
    );
    assert!(kept.exists(), "a day 10 days old was deleted");
    let staff = credential_id("staff", "staff-token-e2e");
    let on_disk: Vec<Value> = std::fs::read_dir(&access_dir)
        .expect("list")
        .map(|item| item.expect("item").path())
        .filter(|path| path != &kept && path.extension().is_some_and(|ext| ext == "ndjson"))
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .expect("read")
                .lines()
                .map(|line| serde_json::from_str(line).expect("an entry a line"))
                .collect::<Vec<Value>>()
        })
        .collect();
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    assert_eq!(on_disk[0]["actor"], staff.as_str());
    assert_eq!(on_disk[0]["loop_id"], "loop-0");
    assert_eq!(on_disk[0]["what"], "loop");

    // After a restart the auditor reads both, oldest first.
    let service = Service::start(dir.path());
    let answer = client
        .get(service.url("/v1/audit/access?loop_id=loop-0"))
        .bearer_auth("auditor-token-e2e")
        .send()
        .await
        .expect("read the access log");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/x-ndjson");
    let text = answer.text().await.expect("body");
    let actors: Vec<String> = text
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("a JSON line");
            entry["actor"].as_str().expect("actor").to_owned()
        })
        .collect();
    assert_eq!(actors, ["staff:10-days-ago".to_owned(), staff]);
}
