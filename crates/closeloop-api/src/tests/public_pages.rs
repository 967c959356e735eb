//! The public "You said, we did" pages: the page, its printable view, Atom feed and snippet —
//! what they show and never show, filters, headings, size, caching — and error pages in the
//! NHS frame.

use std::collections::HashSet;

use super::*;
use crate::pages::Site;

/// An app whose pages speak for `site`, sealing personal data as in production, its
/// projector running, closing loops a minute apart.
fn site_app(site: Site) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = test_keys();
    let store = keyed_store(dir.path(), &keys);
    let state = Arc::new(AppState {
        store: Arc::new(store),
        projections: Arc::new(Projections::new(ReadModels::default())),
        sla: Sla::default(),
        tokens: format!("staff:{STAFF}").parse().expect("tokens"),
        clock: stepping_clock(),
        metrics: None,
        ingest: None,
        limits: Limits::default(),
        stories: crate::story_cache(),
        input_limits: closeloop_domain::Limits::DEFAULT,
        keys: Some(keys),
        publish_requires_approval: false,
        access: Arc::new(closeloop_access::MemoryAccessLog::default()),
        site: Arc::new(site),
    });
    tokio::spawn(run_projector(
        Arc::clone(&state.store),
        Arc::clone(&state.projections),
        ProjectorOptions::default(),
        std::future::pending::<()>(),
    ));
    App {
        router: router(Arc::clone(&state)),
        state,
        _dir: dir,
    }
}

fn plain_app() -> App {
    site_app(Site {
        organisation: "Northshire Hospitals".to_owned(),
        places: Site::parse_places(
            "rxx/royal-infirmary = Royal Infirmary\nrxx/royal-infirmary/ward-7 = Ward 7, Royal Infirmary\n",
        )
        .expect("places"),
        feedback_url: Some("https://example.nhs.uk/feedback".to_owned()),
    })
}

/// Records `id` in `org_unit` with `themes` and `story` (by Jo Bloggs, who may be
/// contacted), and closes it with the change `change-<id>`.
async fn publish(app: &App, id: &str, org_unit: &str, themes: &[&str], story: Option<&str>) {
    publish_as(app, id, id, org_unit, themes, story).await;
}

/// [`publish`], with the change `change-<marker>`.
async fn publish_as(
    app: &App,
    id: &str,
    marker: &str,
    org_unit: &str,
    themes: &[&str],
    story: Option<&str>,
) {
    let mut feedback = json!({"loop_id": id, "org_unit": org_unit, "channel": "paper",
                              "ratings": {"fft": 2}, "themes": themes,
                              "author": {"name": "Jo Bloggs", "contact": "jo.bloggs@example.org"},
                              "consent_to_publish": true});
    if let Some(story) = story {
        feedback["story"] = json!(story);
    }
    post(app, "/v1/feedback", &feedback).await;
    let change = json!({"by": "estates", "description": format!("change-{marker}")});
    post(app, &format!("/v1/loops/{id}/changes"), &change).await;
    report_back(app, id).await;
}

async fn report_back(app: &App, id: &str) {
    let body = json!({"by": "pals", "message": "We told you."});
    post(app, &format!("/v1/loops/{id}/report-backs"), &body).await;
}

async fn post(app: &App, path: &str, body: &Value) {
    let (response, _, text) = call(
        app,
        request("POST", path, Some(STAFF), Body::from(body.to_string())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED, "{path}: {text}");
}

/// GETs `path` as an anonymous reader, with extra headers.
async fn get_with(app: &App, path: &str, headers: &[(&str, &str)]) -> (Response<()>, String) {
    let mut sent = request("GET", path, None, Body::empty());
    for (name, value) in headers {
        sent.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    let (response, _, text) = call(app, sent).await;
    (response, text)
}

async fn get(app: &App, path: &str) -> (Response<()>, String) {
    get_with(app, path, &[]).await
}

/// The markers `change-<id>` of a page, in order: which entries it shows.
fn markers(text: &str) -> Vec<String> {
    text.split("change-")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect()
}

/// The target of the page's "Older" link, if any.
fn older(text: &str) -> Option<String> {
    let marker = "nhsuk-pagination__link--next\" href=\"";
    let start = text.find(marker)? + marker.len();
    let end = start + text[start..].find('"')?;
    Some(text[start..end].replace("&amp;", "&"))
}

/// Every entry a page shows, following its "Older" links.
async fn walk(app: &App, first: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut path = Some(first.to_owned());
    while let Some(at) = path {
        let (response, text) = get(app, &at).await;
        assert_eq!(response.status(), StatusCode::OK, "{at}: {text}");
        seen.extend(markers(&text));
        path = older(&text);
    }
    seen
}

/// The texts of the elements that open with `open` and close with `close`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    text.split(open)
        .skip(1)
        .filter_map(|rest| rest.split_once(close).map(|(inside, _)| inside))
        .collect()
}

#[tokio::test]
async fn the_page_is_in_the_nhs_frame_and_says_what_it_is_and_how_to_give_feedback() {
    let app = plain_app();
    publish(
        &app,
        "a",
        "rxx/royal-infirmary/ward-7",
        &["noise"],
        Some("Too noisy"),
    )
    .await;
    let (response, page) = get(&app, "/you-said-we-did").await;
    assert_eq!(response.status(), StatusCode::OK, "{page}");
    assert!(
        response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii")
            .contains("default-src 'none'")
    );
    for part in [
        "name=\"viewport\"",
        crate::assets::stylesheet_path(),
        crate::assets::site_stylesheet_path(),
        "nhsuk-header",
        "<h1>You said, we did</h1>",
        "we take out names, phone numbers and email addresses",
        "href=\"https://example.nhs.uk/feedback\"",
        "rel=\"alternate\" type=\"application/atom+xml\"",
        "href=\"/you-said-we-did/print\"",
        "class=\"nhsuk-card\"",
        "Ward 7, Royal Infirmary",
        "<time datetime=\"2026-11-23T10:0",
        "Too noisy",
        "change-a",
    ] {
        assert!(page.contains(part), "the page lacks {part}: {page}");
    }
    assert_eq!(page.matches("<h1").count(), 1, "one h1");
    assert!(
        !page.contains("style="),
        "CSP forbids inline styles: {page}"
    );

    // Without a feedback address, people are told to ask.
    let app = site_app(Site::default());
    let (_, page) = get(&app, "/you-said-we-did").await;
    assert!(page.contains("Nothing to show yet"), "{page}");
    assert!(page.contains("ask any member of staff."), "{page}");
}

/// Stores feedback as an older version of Closeloop may have stored it, before today's input
/// checks (which refuse bidirectional overrides), and closes it with a change.
async fn publish_unchecked(app: &App, id: &str, data: Value) {
    use closeloop_domain::{Event, EventType, LoopEvent};
    use closeloop_store::{ExpectedVersion, LoopAppend};
    let payload =
        LoopEvent::from_stored_data(EventType::FeedbackReceived, data).expect("feedback data");
    let append = LoopAppend {
        loop_id: LoopId::parse(id).expect("loop id"),
        expected: ExpectedVersion::NoLoop,
        events: vec![Event {
            event_id: format!("old-{id}"),
            source: "urn:test".to_owned(),
            time: "2026-11-23T09:00:00Z".parse().expect("a time"),
            payload,
            actor: None,
        }],
        requests: Vec::new(),
    };
    app.state
        .store
        .append(AppendRequest {
            loops: vec![append],
        })
        .await
        .expect("append");
    let change = json!({"by": "estates", "description": format!("change-{id}")});
    post(app, &format!("/v1/loops/{id}/changes"), &change).await;
    report_back(app, id).await;
}

#[tokio::test]
async fn a_story_shows_as_text_with_bidi_overrides_neutralised() {
    let app = plain_app();
    let story = "<script>alert(1)</script> nurse \u{202E}gnikcah\u{202C} & <b>bold</b>";
    publish_unchecked(
        &app,
        "x",
        json!({"org_unit": "rxx/a", "channel": "web", "story": story, "consent_to_publish": true,
               "themes": ["<i>theme</i>", "\u{202E}gnikcah\u{202C}"]}),
    )
    .await;
    for path in [
        "/you-said-we-did",
        "/you-said-we-did/print",
        "/you-said-we-did/snippet",
        "/you-said-we-did/feed.atom",
    ] {
        let (response, text) = get(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {text}");
        assert!(
            text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {text}"
        );
        assert!(text.contains("&lt;i&gt;theme&lt;/i&gt;"), "{path}: {text}");
        for markup in ["<script>", "<b>", "<i>"] {
            assert!(!text.contains(markup), "{path} holds {markup}: {text}");
        }
        assert!(
            !text.contains('\u{202E}') && !text.contains('\u{202C}'),
            "{path}: a bidi override reached the page"
        );
        assert!(text.contains("\u{FFFD}gnikcah\u{FFFD}"), "{path}: {text}");
    }
}

#[tokio::test]
async fn no_form_shows_the_loop_id_or_the_authors_name_or_contact() {
    let app = plain_app();
    let story = "I am Jo Bloggs, call me on 07700 900123 or jo.bloggs@example.org. The bins bang.";
    publish_as(
        &app,
        "case-20261123-0042",
        "c42",
        "rxx/a",
        &["noise"],
        Some(story),
    )
    .await;
    for path in [
        "/you-said-we-did",
        "/you-said-we-did/print",
        "/you-said-we-did/snippet",
        "/you-said-we-did/feed.atom",
        "/v1/you-said-we-did",
    ] {
        let (response, text) = get(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {text}");
        assert!(text.contains("The bins bang"), "{path}: {text}");
        for secret in ["case-20261123", "Bloggs", "07700", "jo.bloggs@example.org"] {
            assert!(!text.contains(secret), "{path} shows {secret}: {text}");
        }
    }
}

#[tokio::test]
async fn a_loop_reopened_and_closed_without_a_change_leaves_every_form() {
    let app = plain_app();
    publish(&app, "r", "rxx/a", &["noise"], Some("Loud")).await;
    publish(&app, "s", "rxx/a", &["food"], Some("Cold")).await;
    let (_, page) = get(&app, "/you-said-we-did").await;
    assert_eq!(markers(&page), ["s", "r"]);
    post(
        &app,
        "/v1/loops/r/reopenings",
        &json!({"by": "pals", "reason": "Again"}),
    )
    .await;
    post(
        &app,
        "/v1/loops/r/no-change",
        &json!({"by": "ward", "reason": "Cannot"}),
    )
    .await;
    report_back(&app, "r").await;
    for path in [
        "/you-said-we-did",
        "/you-said-we-did/print",
        "/you-said-we-did/snippet",
        "/you-said-we-did/feed.atom",
    ] {
        let (_, text) = get(&app, path).await;
        assert_eq!(markers(&text), ["s"], "{path}: {text}");
    }
    // Its theme has no entry left, so the filter list no longer offers it.
    let (_, page) = get(&app, "/you-said-we-did").await;
    assert!(!page.contains("value=\"noise\""), "{page}");
}

#[tokio::test]
async fn an_entry_without_a_story_shows_its_topics_never_an_empty_you_said() {
    let app = plain_app();
    publish(
        &app,
        "t",
        "rxx/royal-infirmary/ward-7",
        &["noise", "night"],
        None,
    )
    .await;
    publish(&app, "u", "rxx/royal-infirmary/ward-7", &[], None).await;
    let (_, page) = get(&app, "/you-said-we-did").await;
    let said = between(
        &page,
        "You said</dt><dd class=\"nhsuk-summary-list__value closeloop-text\">",
        "</dd>",
    );
    assert_eq!(
        said,
        [
            "You gave us feedback about Ward 7, Royal Infirmary.",
            "You told us about noise, night.",
        ],
        "{page}"
    );
}

#[tokio::test]
async fn filters_by_place_take_in_sub_units_and_by_theme_across_pages() {
    let app = plain_app();
    let units = [
        "rxx/royal-infirmary/ward-7",
        "rxx/royal-infirmary",
        "rxx/royal-infirmary-annexe",
        "rxx/city/ward-1",
    ];
    for i in 0..9 {
        let themes: &[&str] = if i % 3 == 1 {
            &["food", "noise"]
        } else {
            &["noise"]
        };
        publish(
            &app,
            &format!("m{i}"),
            units[i % 4],
            themes,
            Some("A story"),
        )
        .await;
    }
    let newest_first = |pick: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..9)
            .rev()
            .filter(|&i| pick(i))
            .map(|i| format!("m{i}"))
            .collect()
    };
    for limit in [2, 20] {
        let page = |query: &str| format!("/you-said-we-did?{query}&limit={limit}");
        assert_eq!(
            walk(&app, &page("place=rxx/royal-infirmary")).await,
            newest_first(&|i| i % 4 < 2),
            "a hospital holds its wards, not the annexe whose name starts like it"
        );
        assert_eq!(
            walk(&app, &page("theme=food")).await,
            newest_first(&|i| i % 3 == 1)
        );
        assert_eq!(
            walk(&app, &page("place=rxx/royal-infirmary/ward-7&theme=food")).await,
            newest_first(&|i| i % 4 == 0 && i % 3 == 1)
        );
        // An empty choice of the form filters nothing; unknown parameters are ignored.
        assert_eq!(
            walk(&app, &page("place=&theme=&utm_source=leaflet")).await,
            newest_first(&|_| true)
        );
    }
    // The JSON keeps the filters in its Link to the next page.
    let (response, text) = get(
        &app,
        "/v1/you-said-we-did?place=rxx/royal-infirmary&limit=2",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    let link = response.headers()[header::LINK]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        link.contains("place=rxx/royal-infirmary") && link.contains("limit=2"),
        "{link}"
    );
    let (_, text) = get(&app, "/v1/you-said-we-did?theme=food").await;
    assert_eq!(
        serde_json::from_str::<Value>(&text)
            .expect("JSON")
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // The lists offer the places and topics with entries, the chosen ones selected.
    let (_, page) = get(
        &app,
        "/you-said-we-did?place=rxx/royal-infirmary-annexe&theme=food",
    )
    .await;
    assert!(page.contains("No changes match these filters"), "{page}");
    for part in [
        "<option value=\"rxx/royal-infirmary\">Royal Infirmary</option>",
        "<option value=\"rxx/royal-infirmary/ward-7\">Ward 7, Royal Infirmary</option>",
        "<option value=\"rxx/royal-infirmary-annexe\" selected>Royal infirmary annexe</option>",
        "<option value=\"rxx/city\">City</option>",
        "<option value=\"food\" selected>Food</option>",
        "<option value=\"noise\">Noise</option>",
        "<label class=\"nhsuk-label\" for=\"place\">",
        "<label class=\"nhsuk-label\" for=\"theme\">",
    ] {
        assert!(page.contains(part), "the filters lack {part}: {page}");
    }
    // The whole trust holds every entry: choosing it would filter nothing.
    assert!(!page.contains("<option value=\"rxx\">"), "{page}");
}

#[tokio::test]
async fn every_card_has_a_heading_of_its_own() {
    let app = plain_app();
    for i in 0..6 {
        publish(
            &app,
            &format!("h{i}"),
            "rxx/royal-infirmary/ward-7",
            &["noise"],
            Some("Loud"),
        )
        .await;
    }
    publish(
        &app,
        "h6",
        "rxx/royal-infirmary",
        &["noise", "food"],
        Some("Loud"),
    )
    .await;
    let (_, page) = get(&app, "/you-said-we-did").await;
    let headings = between(
        &page,
        "<h2 class=\"nhsuk-card__heading nhsuk-heading-s\">",
        "</h2>",
    );
    assert_eq!(headings.len(), 7, "{page}");
    assert_eq!(
        headings.iter().collect::<HashSet<_>>().len(),
        7,
        "{headings:?}"
    );
    assert_eq!(headings[0], "Noise, food – Royal Infirmary");
    assert_eq!(headings[1], "Noise – Ward 7, Royal Infirmary");
    assert!(
        headings[2].starts_with("Noise – Ward 7, Royal Infirmary, "),
        "{headings:?}"
    );
    let (_, print) = get(&app, "/you-said-we-did/print").await;
    let headings = between(
        &print,
        "<h2 class=\"nhsuk-heading-xs nhsuk-u-margin-bottom-1\">",
        "</h2>",
    );
    assert_eq!(
        headings.iter().collect::<HashSet<_>>().len(),
        7,
        "{headings:?}"
    );
}

#[tokio::test]
async fn pages_stay_under_100_kb_with_the_longest_stories_and_names() {
    // Everything as long as the limits allow, in characters that escape longest.
    let long_place = "\"".repeat(crate::pages::MAX_PLACE_NAME_BYTES);
    let mut places = String::new();
    for i in 0..50 {
        places.push_str(&format!(
            "rxx/site-{i} = {long_place}\nrxx/site-{i}/ward-{i} = {long_place}\n"
        ));
    }
    let app = site_app(Site {
        organisation: "Northshire \"Hospitals\" NHS Foundation Trust".to_owned(),
        places: Site::parse_places(&places).expect("places"),
        feedback_url: Some("https://example.nhs.uk/feedback".to_owned()),
    });
    let limits = closeloop_domain::Limits::DEFAULT;
    let story = "\"&<>".repeat(limits.max_story_bytes / 4);
    let change = "\"".repeat(limits.max_text_bytes);
    for i in 0..50 {
        let id = format!("big{i:02}");
        let themes: Vec<String> = (0..limits.max_themes)
            .map(|t| format!("{i:02}{t:02}{}", "\"".repeat(limits.max_tag_bytes - 4)))
            .collect();
        let feedback = json!({"loop_id": id, "org_unit": format!("rxx/site-{i}/ward-{i}"),
                              "channel": "web", "story": story, "themes": themes,
                              "consent_to_publish": true});
        post(&app, "/v1/feedback", &feedback).await;
        for _ in 0..2 {
            let body = json!({"by": "estates", "description": change});
            post(&app, &format!("/v1/loops/{id}/changes"), &body).await;
        }
        report_back(&app, &id).await;
    }
    for (path, entries) in [
        ("/you-said-we-did", 20),
        ("/you-said-we-did/print", 50),
        ("/you-said-we-did/snippet?limit=10", 10),
    ] {
        let (response, text) = get(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            text.len() < 100 * 1024,
            "{path} is {} bytes, over 100 KB",
            text.len()
        );
        assert_eq!(text.matches("<time ").count(), entries, "{path}");
    }
    let (_, page) = get(&app, "/you-said-we-did").await;
    assert!(page.contains('…'), "long stories are cut on the card");
}

/// The feed parsed as XML: the text of every element named `name`, in order.
fn xml_texts(feed: &str, name: &[u8]) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(feed);
    let mut texts = Vec::new();
    let mut inside = false;
    let mut depth = 0_i32;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(element) => {
                depth += 1;
                inside = element.name().as_ref() == name;
                if depth == 1 {
                    assert_eq!(element.name().as_ref(), b"feed");
                    let namespace = element
                        .try_get_attribute("xmlns")
                        .expect("attributes")
                        .expect("an xmlns");
                    assert_eq!(&*namespace.value, b"http://www.w3.org/2005/Atom");
                }
            }
            Event::End(_) => {
                depth -= 1;
                inside = false;
            }
            Event::Text(text) if inside => {
                texts.push(text.unescape().expect("valid escapes").into_owned());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "every element is closed");
    texts
}

#[tokio::test]
async fn the_atom_feed_is_well_formed_and_names_entries_by_public_id() {
    let app = plain_app();
    let (response, feed) = get(&app, "/you-said-we-did/feed.atom").await;
    assert_eq!(response.status(), StatusCode::OK, "{feed}");
    assert_eq!(
        xml_texts(&feed, b"id").len(),
        1,
        "an empty feed has its own id only"
    );
    let story = Some("It's \"loud\" <here>");
    publish_as(
        &app,
        "case-77",
        "c77",
        "rxx/royal-infirmary/ward-7",
        &["noise & light"],
        story,
    )
    .await;
    publish_as(&app, "case-78", "c78", "rxx/city", &["food"], Some("Cold")).await;
    let (response, feed) = get(&app, "/you-said-we-did/feed.atom").await;
    assert_eq!(response.status(), StatusCode::OK, "{feed}");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/atom+xml; charset=utf-8"
    );
    assert!(
        !feed.contains("case-77") && !feed.contains("case-78"),
        "{feed}"
    );
    let ids = xml_texts(&feed, b"id");
    assert_eq!(ids.len(), 3, "{feed}");
    let public = |loop_id: &str| {
        let key = super::public_id(&app, loop_id);
        let bytes = closeloop_projections::PublicKey::bytes_of(&key).expect("a public id");
        format!("urn:uuid:{}", uuid::Uuid::from_bytes(bytes).hyphenated())
    };
    assert_eq!(
        ids[1..],
        [public("case-78"), public("case-77")],
        "newest first: {feed}"
    );
    let updated = xml_texts(&feed, b"updated");
    assert_eq!(
        updated[0], updated[1],
        "the feed is as new as its newest entry"
    );
    assert!(updated[1] > updated[2], "{updated:?}");
    let content = xml_texts(&feed, b"content");
    assert!(content[1].contains("It's \"loud\" <here>"), "{content:?}");
    assert!(
        content[1].contains("Ward 7, Royal Infirmary"),
        "{content:?}"
    );
    let titles = xml_texts(&feed, b"title");
    assert_eq!(titles[2], "Noise & light – Ward 7, Royal Infirmary");
    assert!(
        feed.contains("<category term=\"noise &amp; light\"/>"),
        "{feed}"
    );
    assert!(feed.contains("rel=\"alternate\" type=\"text/html\" href=\"/you-said-we-did\""));
    // Filtered, it holds only the matching entries.
    let (_, feed) = get(&app, "/you-said-we-did/feed.atom?theme=food").await;
    assert_eq!(xml_texts(&feed, b"id")[1..], [public("case-78")]);
    assert!(
        feed.contains("href=\"/you-said-we-did?theme=food\""),
        "{feed}"
    );
}

#[tokio::test]
async fn the_snippet_is_a_fragment_any_site_may_fetch() {
    let app = plain_app();
    for i in 0..4 {
        publish(
            &app,
            &format!("n{i}"),
            "rxx/royal-infirmary/ward-7",
            &["noise"],
            Some("Loud"),
        )
        .await;
    }
    let host = [
        ("host", "feedback.example.nhs.uk"),
        ("x-forwarded-proto", "https"),
    ];
    let (response, fragment) = get_with(&app, "/you-said-we-did/snippet", &host).await;
    assert_eq!(response.status(), StatusCode::OK, "{fragment}");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(markers(&fragment), ["n3", "n2", "n1"], "three by default");
    for whole_page in ["<html", "<head", "<body", "<!DOCTYPE", "id=\""] {
        assert!(
            !fragment.contains(whole_page),
            "a fragment holds no {whole_page}: {fragment}"
        );
    }
    assert!(
        fragment.trim_start().starts_with("<div class=\"nhsuk-card"),
        "{fragment}"
    );
    assert!(
        fragment.contains("href=\"https://feedback.example.nhs.uk/you-said-we-did\""),
        "the link to the page works on another site: {fragment}"
    );
    let (_, fragment) = get(
        &app,
        "/you-said-we-did/snippet?limit=1&place=rxx/royal-infirmary",
    )
    .await;
    assert_eq!(markers(&fragment), ["n3"]);
    assert!(
        fragment.contains("href=\"/you-said-we-did?place=rxx/royal-infirmary\""),
        "{fragment}"
    );
    for limit in ["0", "11", "three"] {
        let (response, text) = get(&app, &format!("/you-said-we-did/snippet?limit={limit}")).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{limit}: {text}"
        );
    }
    // A 304 may be read from any origin too.
    let (response, _) = get(&app, "/you-said-we-did/snippet").await;
    let etag = etag_of(&response);
    let (response, _) = get_with(
        &app,
        "/you-said-we-did/snippet",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

#[tokio::test]
async fn each_filter_has_its_own_etag_and_a_304() {
    let app = plain_app();
    publish(
        &app,
        "e1",
        "rxx/royal-infirmary/ward-7",
        &["noise"],
        Some("Loud"),
    )
    .await;
    publish(&app, "e2", "rxx/city", &["food"], Some("Cold")).await;
    let paths = [
        "/you-said-we-did",
        "/you-said-we-did?theme=food",
        "/you-said-we-did?place=rxx/city",
        "/you-said-we-did?place=rxx/city&theme=food",
        "/you-said-we-did/print?theme=food",
        "/you-said-we-did/feed.atom?theme=food",
        "/you-said-we-did/snippet?theme=food",
        "/v1/you-said-we-did?theme=food",
    ];
    let mut tags = HashSet::new();
    for path in paths {
        let (response, text) = get(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {text}");
        let etag = etag_of(&response);
        assert!(tags.insert(etag.clone()), "{path} shares its ETag {etag}");
        let (response, text) = get_with(&app, path, &[("if-none-match", &etag)]).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(text.is_empty(), "{path}");
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=30"
        );
    }
    // A new entry changes every tag.
    publish(&app, "e3", "rxx/city", &["food"], Some("Still cold")).await;
    for path in paths {
        let (response, _) = get(&app, path).await;
        assert!(!tags.contains(&etag_of(&response)), "{path} kept its ETag");
    }
}

#[tokio::test]
async fn the_printable_view_is_a_bounded_list_without_navigation() {
    let app = plain_app();
    for i in 0..53 {
        publish(
            &app,
            &format!("p{i:02}"),
            "rxx/royal-infirmary/ward-7",
            &["noise"],
            Some("Loud"),
        )
        .await;
    }
    let (response, print) = get(&app, "/you-said-we-did/print?utm_source=poster").await;
    assert_eq!(response.status(), StatusCode::OK, "{print}");
    let entries = markers(&print);
    assert_eq!(entries.len(), 50, "the newest 50");
    assert_eq!(entries[0], "p52");
    assert_eq!(entries[49], "p03");
    for absent in ["<form", "nhsuk-pagination", "<select"] {
        assert!(!print.contains(absent), "the printable view holds {absent}");
    }
    assert!(print.contains("class=\"closeloop-print\""), "{print}");
    let (_, print) = get(
        &app,
        "/you-said-we-did/print?place=rxx/royal-infirmary&theme=noise&cursor=anything&limit=3",
    )
    .await;
    assert_eq!(
        markers(&print).len(),
        50,
        "the printable view takes no page size or cursor"
    );
    assert!(
        print.contains("made at Royal Infirmary about noise"),
        "{print}"
    );
}

#[tokio::test]
async fn bad_values_of_known_parameters_are_error_pages_in_the_nhs_frame() {
    let app = plain_app();
    publish(&app, "b1", "rxx/a", &["noise"], Some("Loud")).await;
    let too_long = "x".repeat(closeloop_projections::MAX_NAME_BYTES + 1);
    for path in [
        "/you-said-we-did?place=Not%20a%20place!".to_owned(),
        format!("/you-said-we-did?theme={too_long}"),
        "/you-said-we-did?cursor=garbage".to_owned(),
        "/you-said-we-did?limit=21".to_owned(),
        "/you-said-we-did/print?place=rxx//a".to_owned(),
    ] {
        let (response, text) = get(&app, &path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}: {text}");
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/html"),
            "{path}"
        );
        let request_id = response.headers()["x-request-id"].to_str().expect("ascii");
        for part in [
            "nhsuk-header",
            "Northshire Hospitals",
            "<h1>There is a problem with this web address</h1>",
            request_id,
        ] {
            assert!(
                text.contains(part),
                "{path}: the error page lacks {part}: {text}"
            );
        }
        assert!(
            response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
    }
    // The feed and snippet answer problem+json, like the API.
    let (response, text) = get(&app, "/you-said-we-did/feed.atom?place=Not%20a%20place!").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    // A place or theme no entry has is not an error: nothing matches.
    let (response, text) = get(&app, "/you-said-we-did?place=ryy/elsewhere&theme=parking").await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    assert!(text.contains("No changes match these filters"), "{text}");
}
