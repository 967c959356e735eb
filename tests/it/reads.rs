//! The read side over HTTP: loop lists with every filter, loop detail, stats, the public page.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{AUDITOR, Api, LEADER, check_problem};

/// Records a loop: (id, org unit, channel, fft, themes, seldom-heard tags).
async fn seed(
    api: &Api,
    id: &str,
    org_unit: &str,
    channel: &str,
    fft: u8,
    themes: &[&str],
    tags: &[&str],
) {
    let body = json!({"loop_id": id, "org_unit": org_unit, "channel": channel, "ratings": {"fft": fft},
                      "themes": themes, "seldom_heard": tags, "story": "Story",
                      "received_at": "2026-11-02T09:00:00Z"});
    let answer = api.post("/v1/feedback", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

async fn close_with_change(api: &Api, id: &str, change: &str) {
    for (step, body) in [
        ("changes", json!({"by": "estates", "description": change})),
        (
            "report-backs",
            json!({"by": "pals", "message": "We told you."}),
        ),
    ] {
        let answer = api.post(&format!("/v1/loops/{id}/{step}"), &body).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{step}: {}",
            answer.text
        );
    }
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["loop_id"].as_str().expect("id"))
        .collect()
}

#[tokio::test]
async fn loops_are_listed_with_every_filter_and_paged_with_cursors() {
    let api = Api::start();
    seed(
        &api,
        "l-1",
        "rxx/site-a/ward-7",
        "paper",
        1,
        &["noise"],
        &[],
    )
    .await;
    seed(
        &api,
        "l-2",
        "rxx/site-a/ward-77",
        "web",
        2,
        &["food"],
        &["homeless"],
    )
    .await;
    seed(
        &api,
        "l-3",
        "rxx/site-b/ward-1",
        "community_partner",
        5,
        &["noise", "food"],
        &["homeless"],
    )
    .await;
    seed(&api, "l-4", "ryy/clinic", "web", 4, &[], &[]).await;
    close_with_change(&api, "l-4", "Quieter waiting room").await;

    let check = |query: &'static str, expected: &'static [&'static str]| {
        let api = &api;
        async move {
            let page = api.get(&format!("/v1/loops?{query}"), LEADER).await;
            assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.text);
            assert_eq!(ids(&page.body), expected, "{query}");
            assert_eq!(page.body["total"], expected.len(), "{query}");
        }
    };
    check("", &["l-1", "l-2", "l-3"]).await;
    check("status=closed", &["l-4"]).await;
    check("status=all", &["l-1", "l-2", "l-3", "l-4"]).await;
    check("org_unit=rxx/site-a/ward-7", &["l-1"]).await;
    check("org_unit=rxx/site-a", &["l-1", "l-2"]).await;
    check("org_unit=rxx", &["l-1", "l-2", "l-3"]).await;
    check("theme=food", &["l-2", "l-3"]).await;
    check("channel=web", &["l-2"]).await;
    check("seldom_heard=homeless&theme=noise", &["l-3"]).await;
    check("stage=received", &["l-1", "l-2", "l-3"]).await;
    check("status=all&stage=closed", &["l-4"]).await;
    check("overdue=true", &["l-1", "l-2", "l-3"]).await;

    let first = api.get("/v1/loops?status=all&limit=3", AUDITOR).await;
    assert_eq!(ids(&first.body), ["l-1", "l-2", "l-3"]);
    assert_eq!(first.body["total"], 4);
    let cursor = first.body["next_cursor"].as_str().expect("a next page");
    let second = api
        .get(
            &format!("/v1/loops?status=all&limit=3&cursor={cursor}"),
            AUDITOR,
        )
        .await;
    assert_eq!(ids(&second.body), ["l-4"]);
    assert_eq!(second.body["next_cursor"], Value::Null);

    check_problem(
        &api.get("/v1/loops?status=maybe", LEADER).await,
        400,
        "invalid_request",
    );
    check_problem(
        &api.get("/v1/loops?limit=501", LEADER).await,
        400,
        "invalid_request",
    );
    check_problem(
        &api.get("/v1/loops?cursor=nonsense", LEADER).await,
        400,
        "invalid_request",
    );
    check_problem(
        &api.get("/v1/loops?colour=red", LEADER).await,
        400,
        "invalid_request",
    );
    check_problem(
        &api.call(Method::GET, "/v1/loops", None, &[], None).await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn a_loop_reads_back_with_its_summary_and_timeline() {
    let api = Api::start();
    seed(
        &api,
        "d-1",
        "rxx/site-a/ward-7",
        "paper",
        2,
        &["noise"],
        &["deaf_bsl"],
    )
    .await;
    api.post("/v1/loops/d-1/acknowledgements", &json!({"by": "pals"}))
        .await;
    let answer = api.get("/v1/loops/d-1", LEADER).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.etag.as_deref(), Some("\"2\""));
    let keys: Vec<&str> = answer
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "loop_id",
            "status",
            "stage",
            "org_unit",
            "channel",
            "themes",
            "seldom_heard",
            "ratings",
            "received_at",
            "acknowledged_at",
            "closed_at",
            "acknowledge_by",
            "close_by",
            "overdue",
            "version",
            "public_id",
            "timeline"
        ]
    );
    assert_eq!(answer.body["stage"], "acknowledged");
    assert_eq!(answer.body["status"], "open");
    assert_eq!(answer.body["ratings"]["fft"], 2);
    assert_eq!(answer.body["received_at"], "2026-11-02T09:00:00Z");
    assert_eq!(
        answer.body["acknowledge_by"], "2026-11-05T09:00:00Z",
        "3 working days"
    );
    assert_eq!(answer.body["closed_at"], Value::Null);
    let timeline = answer.body["timeline"].as_array().expect("timeline");
    assert_eq!(timeline.len(), 2);
    assert_eq!(timeline[1]["type"], "org.closeloop.loop.acknowledged");
    assert!(timeline[0]["hash"].as_str().is_some_and(|h| h.len() == 64));
    check_problem(
        &api.get("/v1/loops/nobody", LEADER).await,
        404,
        "unknown_loop",
    );
}

#[tokio::test]
async fn stats_count_loops_and_fft_as_nhs_england_does() {
    let api = Api::start();
    seed(&api, "s-1", "rxx/a", "paper", 1, &["noise"], &[]).await;
    seed(&api, "s-2", "rxx/a", "web", 2, &["noise"], &["homeless"]).await;
    seed(&api, "s-3", "rxx/b", "web", 4, &["food"], &[]).await;
    seed(&api, "s-4", "rxx/b", "web", 6, &[], &[]).await;
    close_with_change(&api, "s-1", "Quieter bins").await;

    let overall = api.get("/v1/stats", LEADER).await;
    assert_eq!(overall.status, StatusCode::OK, "{}", overall.text);
    let group = &overall.body["groups"][0];
    assert_eq!(group["key"], "all");
    assert_eq!(
        (
            group["received"].as_u64(),
            group["open"].as_u64(),
            group["closed"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(group["closure_rate"], 0.25);
    let fft = &group["ratings"]["fft"];
    assert_eq!(fft["count"], 4);
    assert_eq!(
        fft["percent_positive"], 50.0,
        "answers 1 and 2 of four, don't know included"
    );
    assert_eq!(fft["percent_negative"], 25.0);
    assert_eq!(
        group["top_themes"][0],
        json!({"theme": "noise", "count": 2})
    );

    let by_channel = api.get("/v1/stats?group_by=channel", LEADER).await;
    let keys: Vec<&str> = by_channel.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["paper", "web"]);
    let by_tag = api.get("/v1/stats?group_by=seldom_heard", LEADER).await;
    let keys: Vec<&str> = by_tag.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["(none)", "homeless"]);
    let none_in_range = api
        .get("/v1/stats?from=2026-11-03&to=2026-11-30", LEADER)
        .await;
    assert_eq!(
        none_in_range.body["groups"][0]["received"], 0,
        "{}",
        none_in_range.text
    );
    check_problem(
        &api.get("/v1/stats?group_by=colour", LEADER).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn you_said_we_did_shows_consented_changes_without_personal_data() {
    let api = Api::start();
    let story = "Nurse Ann was kind. My name is Jo Bloggs, call 07700 900123 or mail jo@example.org. <b>Noisy</b> nights.";
    for (id, consent) in [("p-1", true), ("p-2", false)] {
        let body = json!({"loop_id": id, "org_unit": "rxx/a", "channel": "paper", "story": story,
                          "author": {"name": "Jo Bloggs", "contact": "jo@example.org"},
                          "themes": ["noise"], "consent_to_publish": consent});
        api.post("/v1/feedback", &body).await;
        close_with_change(&api, id, "Soft-close bins fitted").await;
    }
    let open = json!({"loop_id": "p-3", "org_unit": "rxx/a", "channel": "web", "story": "Open", "consent_to_publish": true});
    api.post("/v1/feedback", &open).await;

    let page = api
        .call(Method::GET, "/v1/you-said-we-did", None, &[], None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let entries = page.body.as_array().expect("an array");
    assert_eq!(
        entries.len(),
        1,
        "only the closed, consented loop with a change: {}",
        page.text
    );
    assert_eq!(entries[0].get("loop_id"), None, "loop ids are not public");
    let summary = api.get("/v1/loops/p-1", AUDITOR).await;
    assert_eq!(
        entries[0]["public_id"], summary.body["public_id"],
        "{}",
        page.text
    );
    assert_eq!(entries[0]["we_did"], "Soft-close bins fitted");
    for personal in ["Jo", "Bloggs", "07700", "jo@example.org"] {
        assert!(
            !page.text.contains(personal),
            "{personal} leaked: {}",
            page.text
        );
    }
    assert!(
        entries[0]["you_said"]
            .as_str()
            .unwrap()
            .contains("[redacted]")
    );

    let html = api
        .call(Method::GET, "/you-said-we-did", None, &[], None)
        .await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(
        html.content_type.starts_with("text/html"),
        "{}",
        html.content_type
    );
    assert!(html.text.contains("Soft-close bins fitted"));
    assert!(
        html.text.contains("&lt;b&gt;Noisy&lt;/b&gt;"),
        "stories are escaped: {}",
        html.text
    );
    for personal in ["Bloggs", "07700", "jo@example.org"] {
        assert!(
            !html.text.contains(personal),
            "{personal} leaked into the page"
        );
    }
}

#[tokio::test]
async fn the_public_page_is_cached_by_etag_until_its_entries_change() {
    let api = Api::start();
    let publish = |id: &'static str| {
        let api = &api;
        async move {
            let body = json!({"loop_id": id, "org_unit": "rxx/a", "channel": "web",
                              "story": format!("Story {id}"), "themes": ["noise"],
                              "consent_to_publish": true});
            let answer = api.post("/v1/feedback", &body).await;
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
            close_with_change(api, id, &format!("Fixed {id}")).await;
        }
    };
    // Entries name loops by public id only; an auditor finds the loop ids back.
    let mut public_ids = std::collections::HashMap::new();
    for id in ["e-1", "e-2", "e-3"] {
        publish(id).await;
        let summary = api.get(&format!("/v1/loops/{id}"), AUDITOR).await;
        let public_id = summary.body["public_id"].as_str().expect("a public id");
        public_ids.insert(public_id.to_owned(), id);
    }
    let http = reqwest::Client::new();
    let get = |path: &str, if_none_match: Option<&str>| {
        let mut request = http.get(format!("http://{}{path}", api.addr()));
        if let Some(etag) = if_none_match {
            request = request.header("if-none-match", etag);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|value| value.to_str().expect("ascii").to_owned())
            };
            let (etag, cache, link) = (header("etag"), header("cache-control"), header("link"));
            let text = response.text().await.expect("body");
            (status, etag, cache, link, text)
        }
    };
    let keys = |text: &str| -> Vec<String> {
        serde_json::from_str::<Value>(text)
            .expect("JSON")
            .as_array()
            .expect("an array")
            .iter()
            .map(|entry| {
                let public_id = entry["public_id"].as_str().expect("a public id");
                public_ids
                    .get(public_id)
                    .expect("a loop of this test")
                    .to_string()
            })
            .collect()
    };

    let (status, etag, cache, _, text) = get("/v1/you-said-we-did", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(keys(&text), ["e-3", "e-2", "e-1"], "newest first: {text}");
    assert_eq!(cache.as_deref(), Some("public, max-age=30"));
    let etag = etag.expect("an ETag");
    let (status, again, cache, _, text) = get("/v1/you-said-we-did", Some(&etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(text.is_empty(), "{text}");
    assert_eq!(again.as_deref(), Some(etag.as_str()));
    assert_eq!(cache.as_deref(), Some("public, max-age=30"));

    let (status, page_etag, cache, _, html) = get("/you-said-we-did", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Fixed e-3"), "{html}");
    assert_eq!(cache.as_deref(), Some("public, max-age=30"));
    let page_etag = page_etag.expect("an ETag");
    assert_ne!(page_etag, etag, "the page and the JSON have their own tags");
    let (status, ..) = get("/you-said-we-did", Some(&page_etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (_, _, _, link, text) = get("/v1/you-said-we-did?limit=2", None).await;
    assert_eq!(keys(&text), ["e-3", "e-2"]);
    let link = link.expect("a next page");
    let next = link
        .strip_prefix('<')
        .and_then(|rest| rest.split_once(">; rel=\"next\""))
        .map(|(target, _)| target)
        .expect("a Link to the next page");
    let (_, _, _, _, text) = get(next, None).await;
    assert_eq!(keys(&text), ["e-1"]);

    publish("e-4").await;
    let (status, changed, _, _, text) = get("/v1/you-said-we-did", Some(&etag)).await;
    assert_eq!(status, StatusCode::OK, "a new entry is not 'not modified'");
    let newest = serde_json::from_str::<Value>(&text).expect("JSON")[0]["public_id"].clone();
    assert_eq!(
        newest,
        api.get("/v1/loops/e-4", AUDITOR).await.body["public_id"]
    );
    assert_ne!(changed.as_deref(), Some(etag.as_str()));

    let (status, _, _, _, text) = get("/v1/you-said-we-did?limit=101", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
}
