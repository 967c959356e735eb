//! The master key from the command line: `rotate-master-key`, and tools run with the wrong key
//! or none.

use std::path::Path;
use std::process::{Command, Output};

use crate::{MASTER_KEY, closeloop_bin};

const NEW_MASTER_KEY: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

/// Runs `closeloop <args>` on `data_dir` with `master` as CLOSELOOP_MASTER_KEY (none: unset).
fn run_with_key(data_dir: &Path, master: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(closeloop_bin());
    command
        .args(args)
        .env("CLOSELOOP_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("CLOSELOOP_MASTER_KEY")
        .env_remove("CLOSELOOP_MASTER_KEY_FILE");
    if let Some(master) = master {
        command.env("CLOSELOOP_MASTER_KEY", master);
    }
    command.output().expect("run closeloop")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn rotating_the_master_key_keeps_every_story_readable_under_the_new_key_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let loaded = run_with_key(&data, Some(MASTER_KEY), &["demo", "--loops", "40"]);
    assert!(loaded.status.success(), "{}", text(&loaded));
    let before = run_with_key(&data, Some(MASTER_KEY), &["replay"]);
    assert!(before.status.success(), "{}", text(&before));
    let before = String::from_utf8_lossy(&before.stdout).into_owned();
    assert!(before.contains("\"story\":\"") && !before.contains("[encrypted]"));

    // Without the key, the log still replays and verifies, personal data sealed.
    let sealed = run_with_key(&data, None, &["replay"]);
    assert!(sealed.status.success(), "{}", text(&sealed));
    let sealed = String::from_utf8_lossy(&sealed.stdout).into_owned();
    assert!(sealed.contains("[encrypted]"), "{sealed}");
    assert!(run_with_key(&data, None, &["verify"]).status.success());

    let new_key = dir.path().join("new.key");
    std::fs::write(&new_key, format!("{NEW_MASTER_KEY}\n")).expect("write key file");
    let rotated = run_with_key(
        &data,
        Some(MASTER_KEY),
        &[
            "rotate-master-key",
            "--new-master-key-file",
            new_key.to_str().expect("utf-8 path"),
        ],
    );
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert!(text(&rotated).contains("rewrapped"), "{}", text(&rotated));

    let after = run_with_key(&data, Some(NEW_MASTER_KEY), &["replay"]);
    assert!(after.status.success(), "{}", text(&after));
    // The records are unchanged; only the wrapping of their keys is new. The access log line
    // of each replay is not part of the output.
    assert_eq!(String::from_utf8_lossy(&after.stdout), before);

    let old = run_with_key(&data, Some(MASTER_KEY), &["replay"]);
    assert_eq!(old.status.code(), Some(5), "{}", text(&old));
    assert!(
        text(&old).contains("CLOSELOOP_MASTER_KEY"),
        "the refusal says which key is wanted: {}",
        text(&old)
    );
}

#[test]
fn a_malformed_master_key_is_refused_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(closeloop_bin())
        .arg("serve")
        .env("CLOSELOOP_DATA_DIR", dir.path())
        .env("CLOSELOOP_HTTP_ADDR", "127.0.0.1:0")
        .env("CLOSELOOP_NATS_URL", "off")
        .env("CLOSELOOP_MASTER_KEY", "not-hex")
        .env_remove("CLOSELOOP_MASTER_KEY_FILE")
        .output()
        .expect("run closeloop serve");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("64 hex"), "{}", text(&output));
}
