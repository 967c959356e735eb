//! `list`: each filter, org unit prefixes, order, cursors and totals.

use closeloop_domain::{Channel, EventType, OrgUnit, Stage};
use closeloop_projections::{LoopQuery, QueryError, ReadModels, StatusFilter};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::{Log, all, ids_of, sla, ts};

/// Four loops across org units, channels, themes and tags; `b` is closed, `d` responded.
fn fixture() -> Log {
    let mut log = Log::default();
    log.receive(
        "a",
        "2026-11-23T09:00:00Z",
        json!({"org_unit": "rxx/site-a/ward-7", "channel": "web", "themes": ["food", "noise"],
               "seldom_heard": ["homeless"], "ratings": {"fft": 1}}),
    )
    .receive(
        "b",
        "2026-11-23T10:00:00Z",
        json!({"org_unit": "rxx/site-a/ward-77", "channel": "sms", "themes": ["food"],
               "ratings": {"fft": 4}}),
    )
    .receive(
        "c",
        "2026-11-23T08:00:00Z",
        json!({"org_unit": "rxx/site-ab", "channel": "web", "story": "Lovely staff"}),
    )
    .receive(
        "d",
        "2026-11-24T09:00:00Z",
        json!({"org_unit": "ryy", "channel": "phone", "themes": ["parking"],
               "seldom_heard": ["carers"], "ratings": {"fft": 2}}),
    )
    .close("b", "2026-11-25T09:00:00Z")
    .cmd(
        "d",
        "2026-11-24T15:00:00Z",
        EventType::Responded,
        json!({"by": "pals", "text": "Sorry about the parking"}),
    );
    log
}

/// Before anything is overdue.
fn early() -> Timestamp {
    ts("2026-11-24T12:00:00Z")
}

/// Checks the ids and `total` of a first page with a big limit.
#[track_caller]
fn check(models: &ReadModels, query: LoopQuery, expected: &[&str]) {
    let query = LoopQuery {
        limit: 500,
        ..query
    };
    let page = models.list(&query, early(), &sla()).unwrap();
    let ids: Vec<&str> = page.items.iter().map(|s| s.loop_id.as_str()).collect();
    assert_eq!(ids, expected, "{query:?}");
    assert_eq!(page.total, expected.len() as u64, "{query:?}");
    assert_eq!(page.next_cursor, None);
}

fn org(raw: &str) -> Option<OrgUnit> {
    Some(OrgUnit::parse(raw).unwrap())
}

#[test]
fn status_defaults_to_open_and_orders_by_received_at() {
    let models = fixture().models();
    check(&models, LoopQuery::default(), &["c", "a", "d"]);
    let closed = LoopQuery {
        status: StatusFilter::Closed,
        ..LoopQuery::default()
    };
    check(&models, closed, &["b"]);
    check(&models, all(), &["c", "a", "b", "d"]);
}

#[test]
fn stage_channel_theme_and_tag_filters() {
    let models = fixture().models();
    let q = |f: fn(&mut LoopQuery)| {
        let mut query = LoopQuery::default();
        f(&mut query);
        query
    };
    check(&models, q(|q| q.stage = Some(Stage::Responded)), &["d"]);
    check(&models, q(|q| q.stage = Some(Stage::Received)), &["c", "a"]);
    check(&models, q(|q| q.stage = Some(Stage::Closed)), &[]);
    check(
        &models,
        q(|q| {
            q.status = StatusFilter::All;
            q.stage = Some(Stage::Closed);
        }),
        &["b"],
    );
    check(&models, q(|q| q.channel = Some(Channel::Web)), &["c", "a"]);
    check(&models, q(|q| q.channel = Some(Channel::Paper)), &[]);
    check(&models, q(|q| q.theme = Some("food".into())), &["a"]);
    check(
        &models,
        q(|q| {
            q.status = StatusFilter::All;
            q.theme = Some("food".into());
        }),
        &["a", "b"],
    );
    check(
        &models,
        q(|q| q.theme = Some("nobody-said-this".into())),
        &[],
    );
    check(
        &models,
        q(|q| q.seldom_heard = Some("homeless".into())),
        &["a"],
    );
    check(
        &models,
        q(|q| q.seldom_heard = Some("carers".into())),
        &["d"],
    );
    check(
        &models,
        q(|q| {
            q.status = StatusFilter::All;
            q.theme = Some("food".into());
            q.channel = Some(Channel::Sms);
        }),
        &["b"],
    );
}

#[test]
fn org_unit_matches_prefixes_on_whole_segments() {
    let models = fixture().models();
    let by_org = |raw: &str, status: StatusFilter| LoopQuery {
        org_unit: org(raw),
        status,
        ..LoopQuery::default()
    };
    check(&models, by_org("rxx", StatusFilter::Open), &["c", "a"]);
    check(&models, by_org("rxx", StatusFilter::All), &["c", "a", "b"]);
    check(
        &models,
        by_org("rxx/site-a", StatusFilter::All),
        &["a", "b"],
    );
    check(
        &models,
        by_org("rxx/site-a/ward-7", StatusFilter::All),
        &["a"],
    );
    check(
        &models,
        by_org("rxx/site-a/ward-77", StatusFilter::All),
        &["b"],
    );
    check(&models, by_org("rxx/site", StatusFilter::All), &[]);
    check(&models, by_org("rxx/site-ab", StatusFilter::All), &["c"]);
    check(&models, by_org("zzz", StatusFilter::All), &[]);
    check(
        &models,
        by_org("rxx/site-a/ward-7/bay-1", StatusFilter::All),
        &[],
    );
}

#[test]
fn overdue_filter_depends_on_now() {
    let models = fixture().models();
    let overdue = |wanted: bool, now: &str| {
        let query = LoopQuery {
            overdue: Some(wanted),
            ..LoopQuery::default()
        };
        let page = models.list(&query, ts(now), &sla()).unwrap();
        let ids: Vec<String> = page.items.iter().map(|s| s.loop_id.to_string()).collect();
        assert_eq!(page.total, ids.len() as u64);
        assert!(page.items.iter().all(|s| s.overdue == wanted));
        ids
    };
    // Nothing is due before Thursday.
    assert_eq!(overdue(true, "2026-11-24T12:00:00Z"), Vec::<String>::new());
    assert_eq!(overdue(false, "2026-11-24T12:00:00Z"), ["c", "a", "d"]);
    // Thursday 08:30: c (received Monday 08:00) and a (09:00) were never heard back; d was
    // answered on Tuesday.
    assert_eq!(overdue(true, "2026-11-26T09:30:00Z"), ["c", "a"]);
    assert_eq!(overdue(false, "2026-11-26T09:30:00Z"), ["d"]);
    // Exactly at the due date is not yet past it.
    assert_eq!(overdue(true, "2026-11-26T09:00:00Z"), ["c"]);
    // Long after, every open loop is past its close-by date.
    assert_eq!(overdue(true, "2027-06-01T00:00:00Z"), ["c", "a", "d"]);
}

#[test]
fn equal_received_at_is_ordered_by_loop_id() {
    let mut log = Log::default();
    for id in ["z1", "a1", "m1", "a0"] {
        log.feedback(id, "2026-11-23T09:00:00Z", "rxx");
    }
    log.feedback("first", "2026-11-23T08:59:59.999999999Z", "rxx");
    let models = log.models();
    check(&models, all(), &["first", "a0", "a1", "m1", "z1"]);
    // Page by page, through the ties.
    let mut seen = Vec::new();
    let mut query = LoopQuery { limit: 2, ..all() };
    loop {
        let page = models.list(&query, early(), &sla()).unwrap();
        assert_eq!(page.total, 5);
        seen.extend(page.items.iter().map(|s| s.loop_id.to_string()));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ["first", "a0", "a1", "m1", "z1"]);
}

#[test]
fn bad_cursors_are_refused() {
    let models = fixture().models();
    for cursor in ["", "not base64!", "AAAA", "TAAAAAAAAAAAAAAAAA"] {
        let query = LoopQuery {
            cursor: Some(cursor.to_owned()),
            ..LoopQuery::default()
        };
        let err = models.list(&query, early(), &sla()).unwrap_err();
        assert!(matches!(err, QueryError::BadCursor(_)), "{cursor:?}");
    }
}

/// Received times spread over a few weeks with many ties; ids not in arrival order.
fn bulk(log: &mut Log, from: u32, count: u32) {
    let base = ts("2026-11-02T08:00:00Z");
    for i in from..from + count {
        let minutes = i64::from((i * 7919) % 5000) * 7;
        let at = base + SignedDuration::from_mins(minutes);
        let id = format!("l{:05}-{i}", (i * 3571) % 100_000);
        let theme = ["food", "noise", "parking", "staff"][(i % 4) as usize];
        let channel = ["web", "sms", "phone"][(i % 3) as usize];
        log.receive(
            &id,
            &at.to_string(),
            json!({"org_unit": format!("rxx/site-{}", i % 5), "channel": channel,
                   "themes": [theme], "ratings": {"fft": 1 + i % 6}}),
        );
        if i % 3 == 0 {
            log.close(&id, &(at + SignedDuration::from_hours(30)).to_string());
        }
    }
}

#[test]
fn cursor_pages_cover_everything_once_while_loops_keep_arriving() {
    let mut log = Log::default();
    bulk(&mut log, 0, 9_000);
    let mut models = log.models();
    let now = ts("2026-12-01T00:00:00Z");
    let mut added = 0;
    for query in [
        LoopQuery::default(),
        all(),
        LoopQuery {
            theme: Some("noise".into()),
            ..all()
        },
        LoopQuery {
            org_unit: org("rxx/site-3"),
            channel: Some(Channel::Sms),
            ..LoopQuery::default()
        },
        LoopQuery {
            overdue: Some(true),
            ..LoopQuery::default()
        },
    ] {
        let expected = ids_of(
            &models,
            &LoopQuery {
                limit: 100_000,
                ..query.clone()
            },
            now,
        );
        let first_total = models.list(&query, now, &sla()).unwrap().total;
        assert_eq!(first_total, expected.len() as u64, "{query:?}");
        let mut seen: Vec<(Timestamp, String)> = Vec::new();
        let mut page_query = LoopQuery {
            limit: 97,
            ..query.clone()
        };
        loop {
            let page = models.list(&page_query, now, &sla()).unwrap();
            assert!(page.items.len() <= 97);
            seen.extend(
                page.items
                    .iter()
                    .map(|s| (s.received_at, s.loop_id.to_string())),
            );
            let Some(cursor) = page.next_cursor else {
                break;
            };
            page_query.cursor = Some(cursor);
            // New loops arrive between page reads, before and after the cursor.
            bulk(&mut log, 100_000 + added, 3);
            added += 3;
            log.apply_to(&mut models);
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "pages are in order without duplicates: {query:?}"
        );
        let seen_ids: std::collections::HashSet<&str> =
            seen.iter().map(|(_, id)| id.as_str()).collect();
        for id in &expected {
            assert!(seen_ids.contains(id.as_str()), "{id} missing for {query:?}");
        }
    }
}

#[test]
fn total_counts_every_match_whatever_the_page_size() {
    let mut log = Log::default();
    bulk(&mut log, 0, 3_000);
    let models = log.models();
    let now = ts("2026-12-01T00:00:00Z");
    let everything = ids_of(&models, &all(), now);
    assert_eq!(everything.len(), 3_000);
    let open = ids_of(
        &models,
        &LoopQuery {
            limit: 100_000,
            ..LoopQuery::default()
        },
        now,
    );
    assert_eq!(open.len(), 2_000);
    for limit in [1, 50, 500] {
        let page = models
            .list(
                &LoopQuery {
                    limit,
                    ..LoopQuery::default()
                },
                now,
                &sla(),
            )
            .unwrap();
        assert_eq!(page.total, 2_000);
        assert_eq!(page.items.len(), limit);
        let ids: Vec<String> = page.items.iter().map(|s| s.loop_id.to_string()).collect();
        assert_eq!(ids, open[..limit]);
    }
}
