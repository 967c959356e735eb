//! `stats`: a small example computed by hand, for every grouping and a date range.

use closeloop_domain::EventType;
use closeloop_projections::{GroupBy, ReadModels, Stats, StatsQuery};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{Log, sla, ts};

/// Five loops over two weeks (times UTC; 2026-11-23 is a Monday):
///
/// | loop | received      | org   | channel | themes        | tags     | ratings        | after                        |
/// |------|---------------|-------|---------|---------------|----------|----------------|------------------------------|
/// | s1   | Mon 23, 09:00 | rxx/a | web     | food, noise   | homeless | fft 1          | ack Tue 09:00, closed Thu 21:00 |
/// | s2   | Mon 23, 12:00 | rxx/a | sms     | food          |          | fft 2          | responded Fri 12:00          |
/// | s3   | Fri 27, 12:00 | rxx/b | web     |               | carers   | fft 4          | ack Mon 12:00, closed Tue 12:00 |
/// | s4   | Tue 1, 00:00  | rxx/b | phone   | noise, parking|          | fft 6, stars 4 |                              |
/// | s5   | Wed 2, 00:00  | rxx/b | web     | noise         |          | stars 5        |                              |
///
/// Working days to first contact: s1 1.0, s2 4.0, s3 1.0 (Friday noon to Monday noon).
/// Working days to close: s1 3.5, s3 2.0. At `now` (Tue 8 Dec) s4 and s5 are past their
/// acknowledge-by dates (Fri 4 and Mon 7 Dec).
fn fixture() -> ReadModels {
    let mut log = Log::default();
    log.receive(
        "s1",
        "2026-11-23T09:00:00Z",
        json!({"org_unit": "rxx/a", "channel": "web", "themes": ["food", "noise"],
               "seldom_heard": ["homeless"], "ratings": {"fft": 1}}),
    )
    .receive(
        "s2",
        "2026-11-23T12:00:00Z",
        json!({"org_unit": "rxx/a", "channel": "sms", "themes": ["food"], "ratings": {"fft": 2}}),
    )
    .cmd("s1", "2026-11-24T09:00:00Z", EventType::Acknowledged, json!({"by": "pals"}))
    .cmd(
        "s1",
        "2026-11-26T20:00:00Z",
        EventType::ChangeMade,
        json!({"by": "ward", "description": "Hot meals until 8pm"}),
    )
    .cmd(
        "s1",
        "2026-11-26T21:00:00Z",
        EventType::ReportedBack,
        json!({"by": "pals", "message": "Done"}),
    )
    .cmd(
        "s2",
        "2026-11-27T12:00:00Z",
        EventType::Responded,
        json!({"by": "pals", "text": "Thank you"}),
    )
    .receive(
        "s3",
        "2026-11-27T12:00:00Z",
        json!({"org_unit": "rxx/b", "channel": "web", "seldom_heard": ["carers"], "ratings": {"fft": 4}}),
    )
    .cmd("s3", "2026-11-30T12:00:00Z", EventType::Acknowledged, json!({"by": "pals"}))
    .cmd(
        "s3",
        "2026-12-01T11:00:00Z",
        EventType::NoChange,
        json!({"by": "ward", "reason": "Already fixed"}),
    )
    .cmd(
        "s3",
        "2026-12-01T12:00:00Z",
        EventType::ReportedBack,
        json!({"by": "pals", "message": "Told them"}),
    )
    .receive(
        "s4",
        "2026-12-01T00:00:00Z",
        json!({"org_unit": "rxx/b", "channel": "phone", "themes": ["noise", "parking"],
               "ratings": {"fft": 6, "stars": 4}}),
    )
    .receive(
        "s5",
        "2026-12-02T00:00:00Z",
        json!({"org_unit": "rxx/b", "channel": "web", "themes": ["noise"], "ratings": {"stars": 5}}),
    );
    log.models()
}

fn now() -> Timestamp {
    ts("2026-12-08T00:00:00Z")
}

fn stats(models: &ReadModels, query: &StatsQuery) -> Value {
    let stats: Stats = models.stats(query, now(), &sla());
    serde_json::to_value(stats).unwrap()
}

fn by(group_by: GroupBy) -> StatsQuery {
    StatsQuery {
        group_by: Some(group_by),
        ..StatsQuery::default()
    }
}

#[test]
fn overall_figures() {
    assert_eq!(
        stats(&fixture(), &StatsQuery::default()),
        json!({"groups": [{
            "key": "all",
            "received": 5, "open": 3, "closed": 2, "closure_rate": 0.4, "overdue": 2,
            "median_days_to_acknowledge": 1.0,
            "median_days_to_close": 2.75,
            "ratings": {
                // FFT: answers 1, 2, 4, 6. Positive (1 or 2) 2 of 4; negative (4 or 5) 1 of 4;
                // "don't know" counts in the denominator, as NHS England reports it.
                "fft": {"count": 4, "percent_positive": 50.0, "percent_negative": 25.0},
                "stars": {"count": 2, "mean": 4.5}
            },
            "top_themes": [
                {"theme": "noise", "count": 3},
                {"theme": "food", "count": 2},
                {"theme": "parking", "count": 1}
            ]
        }]})
    );
}

#[test]
fn grouped_by_org_unit() {
    assert_eq!(
        stats(&fixture(), &by(GroupBy::OrgUnit)),
        json!({"groups": [
            {
                "key": "rxx/a",
                "received": 2, "open": 1, "closed": 1, "closure_rate": 0.5, "overdue": 0,
                "median_days_to_acknowledge": 2.5,
                "median_days_to_close": 3.5,
                "ratings": {"fft": {"count": 2, "percent_positive": 100.0, "percent_negative": 0.0}},
                "top_themes": [{"theme": "food", "count": 2}, {"theme": "noise", "count": 1}]
            },
            {
                "key": "rxx/b",
                "received": 3, "open": 2, "closed": 1, "closure_rate": 1.0 / 3.0, "overdue": 2,
                "median_days_to_acknowledge": 1.0,
                "median_days_to_close": 2.0,
                "ratings": {
                    "fft": {"count": 2, "percent_positive": 0.0, "percent_negative": 50.0},
                    "stars": {"count": 2, "mean": 4.5}
                },
                "top_themes": [{"theme": "noise", "count": 2}, {"theme": "parking", "count": 1}]
            }
        ]})
    );
}

/// (key, received) of each group.
fn keys(value: &Value) -> Vec<(String, u64)> {
    value["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g["received"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected.iter().map(|&(k, n)| (k.to_owned(), n)).collect()
}

#[test]
fn grouped_by_theme_channel_and_tag_with_none_groups() {
    let models = fixture();
    let themes = stats(&models, &by(GroupBy::Theme));
    assert_eq!(
        keys(&themes),
        pairs(&[("(none)", 1), ("food", 2), ("noise", 3), ("parking", 1)])
    );
    // A theme's own group lists the themes that come with it.
    assert_eq!(
        themes["groups"][2]["top_themes"],
        json!([{"theme": "noise", "count": 3}, {"theme": "food", "count": 1}, {"theme": "parking", "count": 1}])
    );
    assert_eq!(themes["groups"][2]["overdue"], 2);
    assert_eq!(themes["groups"][0]["top_themes"], json!([]));

    let channels = stats(&models, &by(GroupBy::Channel));
    assert_eq!(
        keys(&channels),
        pairs(&[("phone", 1), ("sms", 1), ("web", 3)])
    );
    assert_eq!(channels["groups"][2]["closed"], 2);
    assert_eq!(channels["groups"][1]["median_days_to_close"], Value::Null);
    assert_eq!(
        channels["groups"][0]["median_days_to_acknowledge"],
        Value::Null
    );

    let tags = stats(&models, &by(GroupBy::SeldomHeard));
    assert_eq!(
        keys(&tags),
        pairs(&[("(none)", 3), ("carers", 1), ("homeless", 1)])
    );
    assert_eq!(tags["groups"][0]["overdue"], 2);
}

#[test]
fn from_is_inclusive_and_to_exclusive_on_received_at() {
    let models = fixture();
    let range = |from: Option<&str>, to: Option<&str>| {
        let query = StatsQuery {
            group_by: None,
            from: from.map(ts),
            to: to.map(ts),
            ..StatsQuery::default()
        };
        stats(&models, &query)["groups"][0]["received"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        range(Some("2026-11-27T12:00:00Z"), Some("2026-12-02T00:00:00Z")),
        2
    );
    assert_eq!(range(Some("2026-11-27T12:00:00.000000001Z"), None), 2);
    assert_eq!(range(None, Some("2026-11-23T12:00:00Z")), 1);
    assert_eq!(range(Some("2027-01-01T00:00:00Z"), None), 0);
    let grouped = StatsQuery {
        group_by: Some(GroupBy::OrgUnit),
        from: Some(ts("2026-11-27T00:00:00Z")),
        to: None,
        ..StatsQuery::default()
    };
    assert_eq!(keys(&stats(&models, &grouped)), pairs(&[("rxx/b", 3)]));
}

#[test]
fn no_loops_give_one_empty_overall_group_and_no_other_groups() {
    let models = ReadModels::default();
    assert_eq!(
        stats(&models, &StatsQuery::default()),
        json!({"groups": [{
            "key": "all", "received": 0, "open": 0, "closed": 0, "closure_rate": 0.0, "overdue": 0,
            "median_days_to_acknowledge": null, "median_days_to_close": null,
            "ratings": {}, "top_themes": []
        }]})
    );
    for group_by in [
        GroupBy::OrgUnit,
        GroupBy::Theme,
        GroupBy::Channel,
        GroupBy::SeldomHeard,
    ] {
        assert_eq!(stats(&models, &by(group_by)), json!({"groups": []}));
    }
}

#[test]
fn top_themes_keep_five_by_count_then_name() {
    let mut log = Log::default();
    let themes = [
        vec!["g", "f", "e", "d", "c", "b", "a"],
        vec!["g", "f"],
        vec!["g"],
    ];
    for (i, themes) in themes.iter().enumerate() {
        log.receive(
            &format!("t{i}"),
            "2026-11-23T09:00:00Z",
            json!({"org_unit": "rxx", "channel": "web", "story": "x", "themes": themes}),
        );
    }
    let value = stats(&log.models(), &StatsQuery::default());
    assert_eq!(
        value["groups"][0]["top_themes"],
        json!([
            {"theme": "g", "count": 3}, {"theme": "f", "count": 2}, {"theme": "a", "count": 1},
            {"theme": "b", "count": 1}, {"theme": "c", "count": 1}
        ])
    );
}
