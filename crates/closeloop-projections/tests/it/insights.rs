//! `insights`: every figure against a recomputation from each loop's own state (a property
//! over random logs and selections), and small examples worked by hand: the seldom-heard
//! comparison, small-number suppression, reopened loops, exact medians, and agreement with
//! `stats` for the same loops.

use std::collections::{BTreeMap, BTreeSet};

use closeloop_domain::{EventType, LoopState, OrgUnit, Sla};
use closeloop_projections::{
    CLOSE_BIN_DAYS, CLOSE_BINS, CloseBin, Comparison, Disclosed, Fft, Figures, GroupInsight,
    Headline, INSIGHT_THEMES, Insights, InsightsQuery, MAX_GROUPS, MAX_MONTHS, MonthFft,
    ReadModels, SUPPRESS_BELOW, StatsQuery, ThemeInsight, whole_percent,
};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use proptest::prelude::*;
use serde_json::json;

use crate::{Log, sla, ts};

fn date(raw: &str) -> Date {
    raw.parse().expect("a date")
}

fn org(raw: &str) -> OrgUnit {
    OrgUnit::parse(raw).expect("an org unit")
}

/// What the insights need of one loop, from its state alone.
struct Facts {
    org: OrgUnit,
    themes: BTreeSet<String>,
    tags: BTreeSet<String>,
    fft: Option<u64>,
    day: Date,
    ack: Option<u32>,
    close: Option<u32>,
    overdue: bool,
}

fn whole(days: f64) -> u32 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = days.floor() as u32;
    whole
}

fn facts(state: &LoopState, now: Timestamp, sla: &Sla) -> Facts {
    let days = |to: Option<Timestamp>| {
        to.map(|to| whole(sla.calendar.working_days_between(state.received_at, to)))
    };
    Facts {
        org: state.org_unit.clone(),
        themes: state.themes.iter().cloned().collect(),
        tags: state.seldom_heard.iter().cloned().collect(),
        fft: state
            .ratings
            .get("fft")
            .and_then(serde_json::Number::as_u64)
            .filter(|answer| (1..=6).contains(answer)),
        day: state.received_at.to_zoned(TimeZone::UTC).date(),
        ack: days(state.first_contact_at),
        close: days(state.closed_at),
        overdue: sla.is_overdue(state, now),
    }
}

fn median(values: &[u32]) -> Option<f64> {
    let mut values = values.to_vec();
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(f64::from(values[n / 2])),
        _ => Some(f64::midpoint(
            f64::from(values[n / 2 - 1]),
            f64::from(values[n / 2]),
        )),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    (1000.0 * part as f64 / whole as f64).round() / 10.0
}

fn figures_of(loops: &[&Facts]) -> Figures {
    let acks: Vec<u32> = loops.iter().filter_map(|f| f.ack).collect();
    let closes: Vec<u32> = loops.iter().filter_map(|f| f.close).collect();
    let answers: Vec<u64> = loops.iter().filter_map(|f| f.fft).collect();
    let count = |wanted: &[u64]| answers.iter().filter(|a| wanted.contains(a)).count() as u64;
    let received = loops.len() as u64;
    Figures {
        received,
        acknowledged: acks.len() as u64,
        closed: closes.len() as u64,
        closure_rate: if received == 0 {
            0.0
        } else {
            closes.len() as f64 / received as f64
        },
        median_days_to_acknowledge: median(&acks),
        median_days_to_close: median(&closes),
        fft: (!answers.is_empty()).then(|| Fft {
            answers: answers.len() as u64,
            percent_positive: percent(count(&[1, 2]), answers.len() as u64),
            percent_negative: percent(count(&[4, 5]), answers.len() as u64),
        }),
    }
}

fn headline_of(loops: &[&Facts]) -> Disclosed<Headline> {
    if (loops.len() as u64) < SUPPRESS_BELOW {
        return Disclosed::Suppressed;
    }
    let figures = figures_of(loops);
    Disclosed::Shown(Headline {
        open: figures.received - figures.closed,
        overdue: loops.iter().filter(|f| f.overdue).count() as u64,
        figures,
    })
}

/// The insights recomputed from every loop's state, without the example stories.
fn expected(log: &Log, query: &InsightsQuery, now: Timestamp) -> Insights {
    let place = match (&query.place, &query.scope) {
        (None, None) => Some(None),
        (Some(only), None) | (None, Some(only)) => Some(Some(only.clone())),
        (Some(p), Some(s)) if p.is_within(s) => Some(Some(p.clone())),
        (Some(p), Some(s)) if s.is_within(p) => Some(Some(s.clone())),
        _ => None,
    };
    let all: Vec<Facts> = log
        .loop_ids()
        .iter()
        .map(|id| facts(log.state(id), now, &sla()))
        .collect();
    let selected: Vec<&Facts> = all
        .iter()
        .filter(|f| f.day >= query.from && f.day < query.to)
        .filter(|f| match &place {
            None => false,
            Some(None) => true,
            Some(Some(place)) => f.org.is_within(place),
        })
        .filter(|f| query.theme.as_ref().is_none_or(|t| f.themes.contains(t)))
        .collect();
    let headline = headline_of(&selected);
    let close_days = if headline.shown().is_some() {
        (0..CLOSE_BINS)
            .map(|bin| {
                let from = bin * CLOSE_BIN_DAYS;
                let last = bin + 1 == CLOSE_BINS;
                CloseBin {
                    from_days: from,
                    to_days: (!last).then(|| from + CLOSE_BIN_DAYS - 1),
                    loops: selected
                        .iter()
                        .filter_map(|f| f.close)
                        .filter(|&d| d >= from && (last || d < from + CLOSE_BIN_DAYS))
                        .count() as u64,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut months = Vec::new();
    let mut month = query.from.first_of_month();
    while month < query.to {
        let next = month.checked_add(1.month()).unwrap();
        let answers: Vec<u64> = selected
            .iter()
            .filter(|f| f.day >= month && f.day < next)
            .filter_map(|f| f.fft)
            .collect();
        let n = answers.len() as u64;
        months.push(MonthFft {
            month,
            answers: n,
            percent_positive: if n >= SUPPRESS_BELOW {
                Disclosed::Shown(percent(
                    answers.iter().filter(|&&a| a <= 2).count() as u64,
                    n,
                ))
            } else {
                Disclosed::Suppressed
            },
        });
        month = next;
    }
    let excess = months.len().saturating_sub(MAX_MONTHS);
    months.drain(..excess);
    let ranked = |names: BTreeSet<&String>, has: &dyn Fn(&Facts, &str) -> bool| {
        let mut ranked: Vec<(String, Vec<&Facts>)> = names
            .into_iter()
            .map(|name| {
                let loops = selected.iter().copied().filter(|f| has(f, name)).collect();
                (name.clone(), loops)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        ranked
    };
    let themes = match &query.theme {
        Some(theme) if place.is_some() && !selected.is_empty() => {
            vec![(theme.clone(), selected.clone())]
        }
        // A theme no loop ever had, or a place outside the scope: nothing at all.
        Some(_) => Vec::new(),
        None => {
            let names = selected.iter().flat_map(|f| &f.themes).collect();
            let mut ranked = ranked(names, &|f, t| f.themes.contains(t));
            ranked.truncate(INSIGHT_THEMES);
            ranked
        }
    };
    let groups = ranked(selected.iter().flat_map(|f| &f.tags).collect(), &|f, t| {
        f.tags.contains(t)
    });
    Insights {
        place: place.clone().flatten().or_else(|| query.place.clone()),
        theme: query.theme.clone(),
        from: query.from,
        to: query.to,
        headline,
        close_days,
        fft_by_month: months,
        themes: themes
            .into_iter()
            .map(|(theme, loops)| ThemeInsight {
                theme,
                figures: headline_of(&loops),
                examples: Vec::new(),
            })
            .collect(),
        more_groups: groups.len().saturating_sub(MAX_GROUPS),
        groups: groups
            .into_iter()
            .take(MAX_GROUPS)
            .map(|(tag, group)| {
                let rest: Vec<&Facts> = selected
                    .iter()
                    .copied()
                    .filter(|f| !f.tags.contains(&tag))
                    .collect();
                let shown = (group.len().min(rest.len()) as u64) >= SUPPRESS_BELOW;
                GroupInsight {
                    comparison: if shown {
                        let (group, rest) = (figures_of(&group), figures_of(&rest));
                        Disclosed::Shown(Comparison {
                            closure_gap_points: whole_percent(group.closure_rate)
                                - whole_percent(rest.closure_rate),
                            close_gap_days: group
                                .median_days_to_close
                                .zip(rest.median_days_to_close)
                                .map(|(g, r)| g - r),
                            group,
                            everyone_else: rest,
                        })
                    } else {
                        Disclosed::Suppressed
                    },
                    tag,
                }
            })
            .collect(),
    }
}

/// The insights without their example stories, which `expected` does not recompute.
fn without_examples(mut insights: Insights) -> Insights {
    for theme in &mut insights.themes {
        theme.examples.clear();
    }
    insights
}

const ORGS: [&str; 5] = [
    "rxx/a/w1",
    "rxx/a/w2",
    "rxx/b",
    "rxx/a/w1/bay-3/bed-2",
    "ryy/c/w9",
];
const THEMES: [&str; 3] = ["food", "noise", "parking"];
const TAGS: [&str; 3] = ["homeless", "carers", "deaf_bsl"];

/// One generated loop: org, theme and tag choices (bit sets), FFT answer, the day it is
/// received, and hours to its first contact, to closing, and whether it is then reopened.
type Plan = (usize, u8, u8, u8, i64, Option<i64>, Option<i64>, bool);

fn plans() -> impl Strategy<Value = Vec<Plan>> {
    prop::collection::vec(
        (
            0..ORGS.len(),
            0..8_u8,
            0..8_u8,
            0..7_u8,
            0..120_i64,
            prop::option::of(1..200_i64),
            prop::option::of(1..900_i64),
            any::<bool>(),
        ),
        0..90,
    )
}

fn pick<'a>(names: &[&'a str], bits: u8) -> Vec<&'a str> {
    names
        .iter()
        .enumerate()
        .filter(|&(i, _)| bits & (1 << i) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// A log of the planned loops, each received, perhaps heard back, closed and reopened.
fn log_of(plans: &[Plan]) -> Log {
    let mut log = Log::default();
    let start = ts("2026-06-01T07:30:00Z");
    // Commands are decided in time order, so the steps of every loop are sorted first.
    let mut steps: Vec<(Timestamp, usize, u8)> = Vec::new();
    for (n, &(_, _, _, _, day, ack, close, reopen)) in plans.iter().enumerate() {
        let received = start + SignedDuration::from_hours(day * 24 + (n as i64 % 11));
        steps.push((received, n, 0));
        if let Some(hours) = ack {
            steps.push((received + SignedDuration::from_hours(hours), n, 1));
        }
        if let Some(hours) = close {
            let closed = received + SignedDuration::from_hours(hours);
            steps.push((closed, n, 2));
            if reopen {
                steps.push((closed + SignedDuration::from_hours(5), n, 3));
            }
        }
    }
    steps.sort();
    for (at, n, step) in steps {
        let (org, themes, tags, fft, ..) = plans[n];
        let id = format!("p{n}");
        let at = at.to_string();
        match step {
            0 => {
                let mut data = json!({"org_unit": ORGS[org], "channel": "web",
                    "themes": pick(&THEMES, themes), "seldom_heard": pick(&TAGS, tags),
                    "story": "A story"});
                data["ratings"] = if fft == 0 {
                    json!({"stars": 3})
                } else {
                    json!({"fft": fft})
                };
                log.receive(&id, &at, data);
            }
            1 => {
                let _ = log.try_command(
                    &id,
                    ts(&at),
                    closeloop_domain::LoopEvent::from_data(
                        EventType::Acknowledged,
                        json!({"by": "pals"}),
                    )
                    .unwrap(),
                );
            }
            2 => {
                log.close(&id, &at);
            }
            _ => {
                log.cmd(
                    &id,
                    &at,
                    EventType::Reopened,
                    json!({"by": "pals", "reason": "Not fixed"}),
                );
            }
        }
    }
    log
}

fn queries() -> impl Strategy<Value = InsightsQuery> {
    let places = prop::option::of(prop::sample::select(vec![
        "rxx",
        "rxx/a",
        "rxx/a/w1",
        "rxx/a/w1/bay-3",
        "rxx/a/w1/bay-3/bed-2",
        "ryy",
        "rzz",
    ]));
    let themes = prop::option::of(prop::sample::select(vec!["food", "noise", "nothing"]));
    let scopes = prop::option::of(prop::sample::select(vec!["rxx/a", "ryy"]));
    (places, themes, scopes, 0..150_i64, 1..200_i64).prop_map(
        |(place, theme, scope, from, length)| {
            let from = date("2026-05-25").checked_add(from.days()).unwrap();
            InsightsQuery {
                place: place.map(org),
                theme: theme.map(str::to_owned),
                from,
                to: from.checked_add(length.days()).unwrap(),
                scope: scope.map(org),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_figure_is_what_the_loops_states_give(
        plans in plans(),
        queries in prop::collection::vec(queries(), 1..8),
        split in 0..100_usize,
    ) {
        let log = log_of(&plans);
        let now = ts("2026-10-20T12:00:00Z");
        // Aggregates kept through part of the log, a reload, then the rest.
        let mut models = ReadModels::default();
        models.prepare(&sla());
        let split = split.min(log.entries.len());
        for (entry, event) in &log.entries[..split] {
            models.apply(entry, event);
        }
        let mut models = ReadModels::from_snapshot(&models.to_snapshot()).unwrap();
        log.apply_to(&mut models);
        let rebuilt = log.models();
        for query in &queries {
            let kept = models.insights(query, now, &sla());
            prop_assert_eq!(&kept, &rebuilt.insights(query, now, &sla()));
            prop_assert_eq!(without_examples(kept), expected(&log, query, now), "{:?}", query);
        }
    }
}

/// A query for everything received in November 2026.
fn november() -> InsightsQuery {
    InsightsQuery {
        place: None,
        theme: None,
        from: date("2026-11-01"),
        to: date("2026-12-01"),
        scope: None,
    }
}

/// Receives `count` loops named `{prefix}{n}` on Monday 2 November 2026 at 09:00 in `org`
/// with `data` merged in, and closes the first `closed` of them `days` working days later
/// (whole days: at 09:00 again, on a weekday).
fn loops(
    log: &mut Log,
    prefix: &str,
    count: usize,
    org: &str,
    data: serde_json::Value,
    closed: usize,
    days: i64,
) {
    for n in 0..count {
        let id = format!("{prefix}{n}");
        let mut feedback =
            json!({"org_unit": org, "channel": "web", "ratings": {"fft": 1 + n % 5}});
        for (key, value) in data.as_object().unwrap() {
            feedback[key] = value.clone();
        }
        log.receive(&id, "2026-11-02T09:00:00Z", feedback);
        if n < closed {
            // Two working days a week are weekend days: count whole weeks and the rest.
            let calendar_days = days / 5 * 7 + days % 5;
            let at = ts("2026-11-02T09:00:00Z") + SignedDuration::from_hours(24 * calendar_days);
            log.close(&id, &at.to_string());
        }
    }
}

#[test]
fn a_seldom_heard_group_is_compared_with_everyone_else_in_words_and_numbers() {
    let mut log = Log::default();
    // 13 homeless people, 5 closed after 14 working days; 21 others, 15 closed after 2.
    loops(
        &mut log,
        "h",
        13,
        "rxx/a",
        json!({"seldom_heard": ["homeless"]}),
        5,
        14,
    );
    loops(&mut log, "o", 21, "rxx/a", json!({}), 15, 2);
    let insights = log
        .models()
        .insights(&november(), ts("2026-12-10T00:00:00Z"), &sla());
    let [group] = insights.groups.as_slice() else {
        panic!("one group: {:?}", insights.groups);
    };
    assert_eq!(group.tag, "homeless");
    let Disclosed::Shown(comparison) = &group.comparison else {
        panic!("shown: {group:?}");
    };
    assert_eq!(
        (comparison.group.received, comparison.group.closed),
        (13, 5)
    );
    assert_eq!(
        (
            comparison.everyone_else.received,
            comparison.everyone_else.closed
        ),
        (21, 15)
    );
    // 38% against 71%: 33 points lower; a median of 14 working days against 2.
    assert_eq!(whole_percent(comparison.group.closure_rate), 38);
    assert_eq!(whole_percent(comparison.everyone_else.closure_rate), 71);
    assert_eq!(comparison.closure_gap_points, -33);
    assert_eq!(comparison.group.median_days_to_close, Some(14.0));
    assert_eq!(comparison.everyone_else.median_days_to_close, Some(2.0));
    assert_eq!(comparison.close_gap_days, Some(12.0));
}

#[test]
fn fewer_than_ten_loops_are_withheld_in_the_figures_themselves() {
    let mut log = Log::default();
    loops(
        &mut log,
        "h",
        9,
        "rxx/a",
        json!({"seldom_heard": ["homeless"], "themes": ["food"]}),
        9,
        1,
    );
    loops(
        &mut log,
        "c",
        10,
        "rxx/a",
        json!({"seldom_heard": ["carers"]}),
        0,
        0,
    );
    loops(&mut log, "o", 30, "rxx/b", json!({}), 0, 0);
    let models = log.models();
    let now = ts("2026-12-10T00:00:00Z");
    let insights = models.insights(&november(), now, &sla());
    let shown: BTreeMap<&str, bool> = insights
        .groups
        .iter()
        .map(|group| (group.tag.as_str(), group.comparison.shown().is_some()))
        .collect();
    assert_eq!(
        shown,
        BTreeMap::from([("carers", true), ("homeless", false)])
    );
    let food = &insights.themes[0];
    assert_eq!((food.theme.as_str(), food.figures.shown()), ("food", None));
    assert!(insights.headline.shown().is_some());
    // A place with fewer than 10 loops withholds everything but the months' answer counts.
    let small = models.insights(
        &InsightsQuery {
            place: Some(org("rxx/a")),
            theme: Some("food".to_owned()),
            ..november()
        },
        now,
        &sla(),
    );
    assert_eq!(small.headline, Disclosed::Suppressed);
    assert!(small.close_days.is_empty());
    assert_eq!(small.fft_by_month[0].answers, 9);
    assert_eq!(
        small.fft_by_month[0].percent_positive,
        Disclosed::Suppressed
    );
}

#[test]
fn a_reopened_loop_is_open_again_until_it_is_closed_again() {
    let mut log = Log::default();
    loops(&mut log, "r", 10, "rxx/a", json!({}), 10, 3);
    let query = november();
    let now = ts("2026-12-10T00:00:00Z");
    let closed = |log: &Log| {
        let insights = log.models().insights(&query, now, &sla());
        let Disclosed::Shown(headline) = insights.headline else {
            panic!("ten loops are shown");
        };
        (
            headline.figures.closed,
            headline.figures.median_days_to_close,
            headline.open,
        )
    };
    assert_eq!(closed(&log), (10, Some(3.0), 0));
    log.cmd(
        "r0",
        "2026-11-09T09:00:00Z",
        EventType::Reopened,
        json!({"by": "pals", "reason": "No"}),
    );
    assert_eq!(closed(&log), (9, Some(3.0), 1));
    // Closed again 12 working days after it was received: the new close counts, once.
    log.close("r0", "2026-11-18T09:00:00Z");
    log.cmd(
        "r1",
        "2026-11-09T09:00:00Z",
        EventType::Reopened,
        json!({"by": "pals", "reason": "No"}),
    );
    log.close("r1", "2026-11-18T09:00:00Z");
    assert_eq!(closed(&log), (10, Some(3.0), 0));
    let insights = log.models().insights(&query, now, &sla());
    let bins: Vec<u64> = insights.close_days.iter().map(|bin| bin.loops).collect();
    assert_eq!(bins, [8, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn the_insights_count_what_stats_count_overall_and_for_each_place() {
    let mut log = Log::default();
    loops(
        &mut log,
        "a",
        12,
        "rxx/a/w1",
        json!({"themes": ["food"]}),
        4,
        3,
    );
    loops(&mut log, "b", 10, "rxx/a", json!({}), 5, 8);
    loops(
        &mut log,
        "c",
        11,
        "rxx/b/w2",
        json!({"seldom_heard": ["carers"]}),
        1,
        21,
    );
    loops(&mut log, "d", 10, "ryy/c", json!({}), 2, 1);
    // Acknowledged a working day after receipt, before they close.
    for n in 4..12 {
        log.cmd(
            &format!("a{n}"),
            "2026-11-03T09:00:00Z",
            EventType::Acknowledged,
            json!({"by": "pals"}),
        );
    }
    let models = log.models();
    let now = ts("2026-12-10T00:00:00Z");
    let place_figures = |place: Option<&str>| {
        let query = InsightsQuery {
            place: place.map(org),
            ..november()
        };
        let insights = models.insights(&query, now, &sla());
        insights.headline.shown().map(|h| {
            (
                h.figures.received,
                h.figures.closed,
                h.figures.median_days_to_acknowledge,
                h.figures.median_days_to_close,
                h.overdue,
            )
        })
    };
    let stats_figures = |scope: Option<&str>| {
        let query = StatsQuery {
            group_by: None,
            from: Some(ts("2026-11-01T00:00:00Z")),
            to: Some(ts("2026-12-01T00:00:00Z")),
            scope: scope.map(org),
        };
        let stats = models.stats(&query, now, &sla());
        let group = &stats.groups[0];
        (
            group.received,
            group.closed,
            group.median_days_to_acknowledge,
            group.median_days_to_close,
            group.overdue,
        )
    };
    assert_eq!(place_figures(None), Some(stats_figures(None)));
    for place in ["rxx", "rxx/a", "rxx/a/w1", "rxx/b", "rxx/b/w2", "ryy"] {
        assert_eq!(
            place_figures(Some(place)),
            Some(stats_figures(Some(place))),
            "{place}"
        );
    }
    assert_eq!(place_figures(None).map(|f| f.0), Some(43));
}
