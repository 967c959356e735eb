//! `closeloop serve`: health checks, errors as problem+json, graceful shutdown.

use serde_json::Value;

use crate::{Service, run_cli, seed};

#[tokio::test]
async fn health_checks_answer_and_sigterm_stops_the_service_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    seed(dir.path(), 2).await;
    let service = Service::start(dir.path());
    let client = reqwest::Client::new();

    let health = client
        .get(service.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.expect("json")["status"], "ok");

    let ready = client
        .get(service.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["checks"]["store"]["head"], 4,
        "the seeded log has 4 events"
    );

    let missing = client
        .get(service.url("/v1/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        missing.json::<Value>().await.expect("json")["code"],
        "not_found"
    );

    // serve started itself again with its allocator settings, as the same process: the one
    // spawned, which SIGTERM stops below.
    let environ = std::fs::read(format!("/proc/{}/environ", service.pid())).expect("environ");
    for (variable, value) in [
        ("MIMALLOC_PURGE_DELAY", "10"),
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ] {
        let prefix = format!("{variable}=");
        let set = environ
            .split(|&byte| byte == 0)
            .find_map(|entry| entry.strip_prefix(prefix.as_bytes()));
        if std::env::var_os(variable).is_none() {
            assert_eq!(set, Some(value.as_bytes()), "{variable}");
        }
    }

    let status = service.terminate();
    assert!(status.success(), "serve exited with {status} after SIGTERM");

    // The store was closed cleanly: it opens again and still verifies.
    let verify = run_cli(dir.path(), &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn a_faulty_token_list_stops_serve_without_printing_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "a-very-secret-staff-token";
    let output = std::process::Command::new(crate::closeloop_bin())
        .arg("serve")
        .env("CLOSELOOP_DATA_DIR", dir.path())
        .env("CLOSELOOP_HTTP_ADDR", "127.0.0.1:0")
        .env("CLOSELOOP_NATS_URL", "off")
        .env("CLOSELOOP_MASTER_KEY", "00".repeat(32))
        .env(
            "CLOSELOOP_API_TOKENS",
            format!("staff:{secret}:pals,leader@rxx/site a:another-secret-token"),
        )
        .output()
        .expect("run closeloop serve");
    assert_eq!(output.status.code(), Some(2));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("CLOSELOOP_API_TOKENS entry 2: the org-unit scope after '@' must be"),
        "{printed}"
    );
    assert!(
        !printed.contains(secret) && !printed.contains("another-secret-token"),
        "a token was printed: {printed}"
    );
}

#[tokio::test]
async fn tools_explain_that_a_running_service_owns_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _service = Service::start(dir.path());
    let replay = run_cli(dir.path(), &["replay"]);
    assert!(!replay.status.success());
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(stderr.contains("stop it first"), "{stderr}");
}

#[tokio::test]
async fn read_models_are_saved_at_shutdown_and_serve_again_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = Service::start(dir.path());
    let client = reqwest::Client::new();
    let body = serde_json::json!({"loop_id": "kept", "org_unit": "rxx/a", "channel": "web", "story": "Still here?"});
    let created = client
        .post(service.url("/v1/feedback"))
        .bearer_auth("staff-token-e2e")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 201);
    assert!(service.terminate().success());
    assert!(
        dir.path().join("projections.snapshot").exists(),
        "a clean shutdown saves the read models"
    );

    let service = Service::start(dir.path());
    let page: Value = client
        .get(service.url("/v1/loops"))
        .bearer_auth("staff-token-e2e")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["loop_id"], "kept");
}

#[tokio::test]
async fn metrics_and_traces_name_the_route_template_never_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service =
        Service::start_with_env(dir.path(), "off", &[("RUST_LOG", "info,tower_http=debug")]);
    let client = reqwest::Client::new();
    let answer = client
        .get(service.url("/v1/loops/secret-case-4711"))
        .bearer_auth("staff-token-e2e")
        .send()
        .await
        .expect("get");
    assert_eq!(answer.status(), 404);
    let request_id = answer.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let metrics = client
        .get(service.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("route=\"/v1/loops/{loop_id}\""),
        "{metrics}"
    );
    assert!(!metrics.contains("secret-case-4711"), "{metrics}");

    let line = service.wait_for_log(&request_id);
    assert!(line.contains("/v1/loops/{loop_id}"), "{line}");
    let leaked: Vec<String> = service
        .logs()
        .into_iter()
        .filter(|line| line.contains("secret-case-4711"))
        .collect();
    assert!(leaked.is_empty(), "the raw path was logged: {leaked:?}");
}

#[tokio::test]
async fn a_full_disk_fails_fast_says_so_plainly_stops_on_sigterm_and_loses_nothing() {
    let Some(tmpfs) = closeloop_testkit::Tmpfs::mount(24) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = tmpfs.path().join("data");
    let service = Service::start(&data);
    // Every call has a deadline well under the service's 30 s request timeout: a write that
    // hangs on the full disk fails the test instead of waiting it out.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let post = |n: usize| {
        let story = format!("The ward was loud at night, visit {n}. ").repeat(450);
        let body = serde_json::json!({"org_unit": "rxx/a", "channel": "web", "story": story});
        client
            .post(service.url("/v1/feedback"))
            .bearer_auth(crate::api::STAFF)
            .header("idempotency-key", format!("disk-{n}"))
            .json(&body)
            .send()
    };
    let mut acknowledged = Vec::new();
    let failed = loop {
        assert!(acknowledged.len() < 5000, "24 MB never filled up");
        let answer = post(acknowledged.len())
            .await
            .expect("a write answers, never hangs");
        if answer.status() != 201 {
            break answer;
        }
        let body: Value = answer.json().await.expect("json");
        acknowledged.push(body["loop_id"].as_str().expect("loop id").to_owned());
    };
    assert_eq!(failed.status(), 503);
    assert!(failed.headers().contains_key("retry-after"));
    let text = failed.text().await.expect("body");
    for leak in ["os error", "No space", "IO error", "sled"] {
        assert!(!text.contains(leak), "the 503 body leaks {leak:?}: {text}");
    }
    // The idempotent retry of the failed write fails at once too, and so does readiness.
    let retry = post(acknowledged.len())
        .await
        .expect("the retry answers, never hangs");
    assert_eq!(retry.status(), 503);
    let ready = client
        .get(service.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let ready = ready.text().await.expect("body");
    assert!(
        ready.contains("\"failed\"") && !ready.contains("os error"),
        "{ready}"
    );

    let started = std::time::Instant::now();
    let status = service.terminate();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "SIGTERM took {took:?} to stop the service"
    );
    eprintln!(
        "full disk: {} writes acknowledged; stopped {took:?} after SIGTERM with {status}",
        acknowledged.len()
    );

    // Space is freed and the service restarts: every acknowledged write is there.
    tmpfs.resize(64);
    let service = Service::start(&data);
    for loop_id in &acknowledged {
        let answer = client
            .get(service.url(&format!("/v1/loops/{loop_id}")))
            .bearer_auth(crate::api::STAFF)
            .send()
            .await
            .expect("read");
        assert_eq!(
            answer.status(),
            200,
            "acknowledged loop {loop_id} is missing"
        );
    }
    let verify: Value = client
        .get(service.url("/v1/audit/verify"))
        .bearer_auth(crate::api::AUDITOR)
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    assert_eq!(verify["ok"], true, "{verify}");
    drop(service);
}
