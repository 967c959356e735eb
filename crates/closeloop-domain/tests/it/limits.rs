//! The limits on every field and time (`docs/events.md`, "Limits"): for each, a value exactly at
//! the limit is accepted and one just past it is refused as `invalid_data`, naming the field.

use closeloop_domain::{
    Command, EventType, LimitError, Limits, LoopEvent, LoopId, OrgUnit, decide_with,
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::{
    START, Step, action_planned, change_made, closed_loop, given, history_accepting,
    loop_event_types, loop_id, received, step, ts,
};

/// Makes a valid step of one type.
type MakeStep = fn() -> Step;

/// The limit family's `check`: `at_limit` is accepted where its type is; `past_limit` is refused
/// as `invalid_data` with a message that mentions every fragment (the field, usually).
fn check(at_limit: Step, past_limit: Step, fragments: &[&str]) {
    let event_type = at_limit.event_type;
    given(&history_accepting(event_type))
        .when(at_limit)
        .then_records(event_type);
    refused(past_limit, fragments);
}

/// `step` is refused as `invalid_data` with a message that mentions every fragment.
fn refused(step: Step, fragments: &[&str]) {
    given(&history_accepting(step.event_type))
        .when(step)
        .then_rejects_saying("invalid_data", fragments);
}

/// `step` is accepted where its type is.
fn accepted(step: Step) {
    let event_type = step.event_type;
    given(&history_accepting(event_type))
        .when(step)
        .then_records(event_type);
}

fn text(bytes: usize) -> Value {
    json!("x".repeat(bytes))
}

/// `n` distinct tags of `bytes` bytes each.
fn tags(n: usize, bytes: usize) -> Value {
    let tags: Vec<String> = (0..n).map(|i| format!("{i:0>bytes$}")).collect();
    json!(tags)
}

/// `n` ratings, `fft` among them.
fn ratings(n: usize) -> Value {
    let mut map = Map::new();
    map.insert("fft".to_owned(), json!(2));
    for i in 1..n {
        map.insert(format!("r{i}"), json!(i));
    }
    Value::Object(map)
}

/// Arrays nested `levels` deep: `levels` 1 is `[]`.
fn nested(levels: usize) -> Value {
    (1..levels).fold(json!([]), |inner, _| json!([inner]))
}

// --- sizes and counts --------------------------------------------------------------------------

#[test]
fn the_story_is_at_most_100_000_bytes() {
    check(
        received().with("story", text(100_000)),
        received().with("story", text(100_001)),
        &["story", "100001 bytes", "100000"],
    );
    // Bytes, not characters: 50,000 two-byte characters are at the limit.
    accepted(received().with("story", json!("é".repeat(50_000))));
    refused(
        received().with("story", json!(format!("x{}", "é".repeat(50_000)))),
        &["story"],
    );
}

#[test]
fn by_is_at_most_20_000_bytes_on_every_loop_event() {
    for event_type in loop_event_types() {
        check(
            step(event_type).with("by", text(20_000)),
            step(event_type).with("by", text(20_001)),
            &["by", "20000"],
        );
    }
}

#[test]
fn every_other_text_is_at_most_20_000_bytes() {
    let cases: [(MakeStep, &str); 11] = [
        (|| step(EventType::Acknowledged), "message"),
        (|| step(EventType::Responded), "text"),
        (|| step(EventType::ActionPlanned), "description"),
        (|| step(EventType::ActionPlanned), "owner"),
        (|| step(EventType::ChangeMade), "description"),
        (|| step(EventType::ChangeMade), "change_id"),
        (|| step(EventType::NoChange), "reason"),
        (|| step(EventType::ReportedBack), "message"),
        (|| step(EventType::Reopened), "reason"),
        (received, "language"),
        (received, "x_note"),
    ];
    for (make, field) in cases {
        check(
            make().with(field, text(20_000)),
            make().with(field, text(20_001)),
            &[field, "20001 bytes", "20000"],
        );
    }
}

#[test]
fn the_author_fields_are_at_most_20_000_bytes() {
    for field in ["name", "contact", "pronouns"] {
        let author = |bytes| json!({ field: "x".repeat(bytes) });
        check(
            received().with("author", author(20_000)),
            received().with("author", author(20_001)),
            &[&format!("author.{field}"), "20000"],
        );
    }
}

#[test]
fn unknown_fields_of_every_type_are_at_most_20_000_bytes() {
    for event_type in EventType::ALL {
        check(
            step(event_type).with("x_note", text(20_000)),
            step(event_type).with("x_note", text(20_001)),
            &["x_note", "20000"],
        );
        // Other JSON is measured serialised: `["…"]` is the text plus 4 bytes.
        check(
            step(event_type).with("x_list", json!(["x".repeat(19_996)])),
            step(event_type).with("x_list", json!(["x".repeat(19_997)])),
            &["x_list", "20000", "JSON"],
        );
    }
}

#[test]
fn evidence_is_at_most_20_000_bytes_as_json() {
    // `{"u":"…"}` is the text plus 8 bytes.
    check(
        change_made().with("evidence", json!({"u": "x".repeat(19_992)})),
        change_made().with("evidence", json!({"u": "x".repeat(19_993)})),
        &["evidence", "20000"],
    );
    check(
        change_made().with("evidence", text(20_000)),
        change_made().with("evidence", text(20_001)),
        &["evidence", "20000"],
    );
}

#[test]
fn a_loop_has_at_most_50_themes_and_20_seldom_heard_tags() {
    check(
        received().with("themes", tags(50, 3)),
        received().with("themes", tags(51, 3)),
        &["themes has 51 entries", "50"],
    );
    check(
        received().with("seldom_heard", tags(20, 3)),
        received().with("seldom_heard", tags(21, 3)),
        &["seldom_heard has 21 entries", "20"],
    );
}

#[test]
fn each_tag_is_1_to_100_bytes_and_not_blank() {
    for field in ["themes", "seldom_heard"] {
        check(
            received().with(field, json!(["ok", "x".repeat(100)])),
            received().with(field, json!(["ok", "x".repeat(101)])),
            &[&format!("{field}[1]"), "101 bytes", "100"],
        );
        refused(
            received().with(field, json!([""])),
            &[&format!("{field}[0]"), "blank"],
        );
        refused(
            received().with(field, json!([" \u{a0} "])),
            &[&format!("{field}[0]"), "blank"],
        );
    }
}

#[test]
fn a_loop_has_at_most_20_ratings_with_names_of_1_to_100_bytes() {
    check(
        received().with("ratings", ratings(20)),
        received().with("ratings", ratings(21)),
        &["ratings has 21 entries", "20"],
    );
    check(
        received().with("ratings", json!({ "x".repeat(100): 3 })),
        received().with("ratings", json!({ "x".repeat(101): 3 })),
        &["rating name", "101 bytes", "100"],
    );
    refused(
        received().with("ratings", json!({"": 3})),
        &["ratings", "blank name"],
    );
    refused(
        received().with("ratings", json!({"  ": 3})),
        &["ratings", "blank name"],
    );
}

#[test]
fn data_nests_at_most_32_levels_deep() {
    // The data object is level 1, so its field may nest 31 levels.
    for event_type in EventType::ALL {
        check(
            step(event_type).with("x_deep", nested(31)),
            step(event_type).with("x_deep", nested(32)),
            &["x_deep", "nested too deeply", "32"],
        );
    }
    check(
        change_made().with("evidence", nested(31)),
        change_made().with("evidence", nested(32)),
        &["evidence", "32"],
    );
    // Deeper than serde_json's parser would build (128) is refused all the same: the check does
    // not rely on the parser. (Not much deeper: dropping a `Value` recurses.)
    let deep = (0..500).fold(json!(1), |inner, _| json!([inner]));
    refused(
        step(EventType::Acknowledged).with("x_deep", deep),
        &["x_deep"],
    );
}

#[test]
fn lowered_limits_are_applied() {
    let limits = Limits {
        max_story_bytes: 10,
        max_text_bytes: 5,
        max_themes: 1,
        max_tag_bytes: 3,
        max_ratings: 1,
        max_depth: 2,
        ..Limits::DEFAULT
    };
    let check = |event_type: EventType, data: Value, fragment: &str| {
        let accepted = LoopEvent::from_data_with(event_type, data.clone(), &Limits::DEFAULT);
        assert!(accepted.is_ok(), "{data} under the defaults: {accepted:?}");
        let err = LoopEvent::from_data_with(event_type, data.clone(), &limits)
            .expect_err("refused under the lowered limits");
        assert_eq!(err.code(), "invalid_data");
        assert!(err.to_string().contains(fragment), "{data}: {err}");
    };
    let feedback = |extra: Value| {
        let mut data =
            json!({"org_unit": "rxx", "channel": "web", "story": "short", "ratings": {"fft": 1}});
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        data
    };
    check(
        EventType::FeedbackReceived,
        feedback(json!({"story": "x".repeat(11)})),
        "story",
    );
    check(
        EventType::FeedbackReceived,
        feedback(json!({"themes": ["a", "b"]})),
        "themes",
    );
    check(
        EventType::FeedbackReceived,
        feedback(json!({"themes": ["abcd"]})),
        "themes[0]",
    );
    check(
        EventType::FeedbackReceived,
        feedback(json!({"ratings": {"fft": 1, "b": 2}})),
        "ratings",
    );
    check(
        EventType::FeedbackReceived,
        feedback(json!({"x": {"y": [1]}})),
        "x",
    );
    check(EventType::Acknowledged, json!({"by": "pals-1"}), "by");
}

// --- the configuration of limits ---------------------------------------------------------------

#[test]
fn limits_can_be_lowered_but_not_raised() {
    type Edit = fn(&mut Limits);
    let above: [(Edit, &str); 10] = [
        (|l| l.max_story_bytes += 1, "max_story_bytes"),
        (|l| l.max_text_bytes += 1, "max_text_bytes"),
        (|l| l.max_themes += 1, "max_themes"),
        (|l| l.max_seldom_heard += 1, "max_seldom_heard"),
        (|l| l.max_tag_bytes += 1, "max_tag_bytes"),
        (|l| l.max_ratings += 1, "max_ratings"),
        (|l| l.max_rating_name_bytes += 1, "max_rating_name_bytes"),
        (|l| l.max_depth += 1, "max_depth"),
        (|l| l.earliest = ts("1999-12-31T23:59:59Z"), "earliest"),
        (
            |l| l.max_future += SignedDuration::from_secs(1),
            "max_future",
        ),
    ];
    for (edit, name) in above {
        let mut limits = Limits::DEFAULT;
        edit(&mut limits);
        let err = limits.check().expect_err(name);
        assert!(
            matches!(err, LimitError::AboveDefault { name: n, .. } if n == name),
            "{err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert!(err.to_string().contains("lowered but not raised"), "{err}");
    }
    let zero: [(Edit, &str); 6] = [
        (|l| l.max_story_bytes = 0, "max_story_bytes"),
        (|l| l.max_text_bytes = 0, "max_text_bytes"),
        (|l| l.max_tag_bytes = 0, "max_tag_bytes"),
        (|l| l.max_rating_name_bytes = 0, "max_rating_name_bytes"),
        (|l| l.max_depth = 0, "max_depth"),
        (
            |l| l.max_future = SignedDuration::from_secs(-1),
            "max_future",
        ),
    ];
    for (edit, name) in zero {
        let mut limits = Limits::DEFAULT;
        edit(&mut limits);
        let err = limits.check().expect_err(name);
        assert!(
            matches!(err, LimitError::TooLow { name: n, .. } if n == name),
            "{err:?}"
        );
    }
    let lowered = Limits {
        max_story_bytes: 1,
        max_text_bytes: 1,
        max_themes: 0,
        max_seldom_heard: 0,
        max_tag_bytes: 1,
        max_ratings: 0,
        max_rating_name_bytes: 1,
        max_depth: 1,
        earliest: ts("2020-01-01T00:00:00Z"),
        max_future: SignedDuration::ZERO,
    };
    assert_eq!(lowered.check(), Ok(()));
    assert_eq!(Limits::default().check(), Ok(()));
}

// --- times -------------------------------------------------------------------------------------

#[test]
fn received_at_is_at_most_5_minutes_after_the_event_time() {
    let at = "2026-11-27T09:30:00Z";
    check(
        received()
            .with("received_at", json!("2026-11-27T09:35:00Z"))
            .at(at),
        received()
            .with("received_at", json!("2026-11-27T09:35:01Z"))
            .at(at),
        &["received_at", "2026-11-27T09:35:01Z", "5 minutes", "future"],
    );
}

#[test]
fn received_at_is_not_before_2000() {
    check(
        received().with("received_at", json!("2000-01-01T00:00:00Z")),
        received().with("received_at", json!("1999-12-31T23:59:59Z")),
        &[
            "received_at",
            "1999-12-31T23:59:59Z",
            "2000-01-01T00:00:00Z",
        ],
    );
    refused(
        received().with("received_at", json!("0001-01-01T00:00:00Z")),
        &["received_at"],
    );
    refused(
        received().with("received_at", json!("9999-12-31T23:59:59Z")),
        &["received_at"],
    );
}

#[test]
fn feedback_without_received_at_is_not_dated_before_2000() {
    check(
        received().without("received_at").at("2000-01-01T00:00:00Z"),
        received().without("received_at").at("1999-12-31T23:59:59Z"),
        &["2000-01-01T00:00:00Z"],
    );
}

#[test]
fn due_dates_are_not_before_2000() {
    check(
        action_planned().with("due", json!("2000-01-01")),
        action_planned().with("due", json!("1999-12-31")),
        &["due", "1999-12-31", "2000-01-01"],
    );
}

#[test]
fn a_step_is_never_dated_before_the_loop_was_received() {
    let history = [received().at("2026-11-23T10:00:00Z")];
    for event_type in [
        EventType::Acknowledged,
        EventType::Responded,
        EventType::ActionPlanned,
        EventType::ChangeMade,
        EventType::NoChange,
    ] {
        given(&history)
            .when(step(event_type).at("2026-11-23T10:00:00Z"))
            .then_records(event_type);
        given(&history)
            .when(step(event_type).at("2026-11-23T09:59:59Z"))
            .then_rejects_saying(
                "invalid_data",
                &[
                    "2026-11-23T09:59:59Z",
                    "before the loop was received",
                    "2026-11-23T10:00:00Z",
                ],
            );
    }
    let closed = [
        received().at("2026-11-23T10:00:00Z"),
        change_made(),
        step(EventType::ReportedBack),
    ];
    given(&closed)
        .when(step(EventType::Reopened).at("2026-11-22T10:00:00Z"))
        .then_rejects_saying("invalid_data", &["before the loop was received"]);
}

#[test]
fn received_at_not_the_logging_time_is_what_steps_are_compared_with() {
    // Feedback on paper, received on the 20th and logged on the 23rd: a reply on the 21st is
    // fine, one on the 19th is not.
    let history = [received()
        .with("received_at", json!("2026-11-20T09:00:00Z"))
        .at("2026-11-23T10:00:00Z")];
    given(&history)
        .when(step(EventType::Responded).at("2026-11-21T09:00:00Z"))
        .then_records(EventType::Responded);
    given(&history)
        .when(step(EventType::Responded).at("2026-11-19T09:00:00Z"))
        .then_rejects_saying("invalid_data", &["before the loop was received"]);
}

#[test]
fn the_time_rules_come_before_the_loop_rules() {
    // A step dated before receipt on a closed loop is told about its date, the first thing to fix.
    given(&closed_loop())
        .when(step(EventType::Acknowledged).at("2000-06-01T00:00:00Z"))
        .then_rejects_saying("invalid_data", &["before the loop was received"]);
}

#[test]
fn lowered_time_limits_are_applied_by_decide_with() {
    let limits = Limits {
        earliest: ts("2020-01-01T00:00:00Z"),
        max_future: SignedDuration::ZERO,
        ..Limits::DEFAULT
    };
    let decide = |received_at: &str, limits: &Limits| {
        let payload = received()
            .with("received_at", json!(received_at))
            .into_payload()
            .expect("valid data");
        let command = Command {
            loop_id: loop_id(),
            at: ts(START),
            payload,
        };
        decide_with(None, command, limits)
    };
    assert!(decide("2026-11-23T10:00:01Z", &Limits::DEFAULT).is_ok());
    let err = decide("2026-11-23T10:00:01Z", &limits).unwrap_err();
    assert!(err.to_string().contains("0 minutes"), "{err}");
    assert!(decide("2019-12-31T00:00:00Z", &Limits::DEFAULT).is_ok());
    let err = decide("2019-12-31T00:00:00Z", &limits).unwrap_err();
    assert!(err.to_string().contains("2020-01-01T00:00:00Z"), "{err}");
}

#[test]
fn the_window_check_is_exact_at_both_edges() {
    let limits = Limits::DEFAULT;
    let reference = ts("2026-11-27T09:30:00Z");
    let check = |instant: &str| limits.check_time(ts(instant), reference).is_ok();
    assert!(check("2000-01-01T00:00:00Z"));
    assert!(!check("1999-12-31T23:59:59.999999999Z"));
    assert!(check("2026-11-27T09:35:00Z"));
    assert!(!check("2026-11-27T09:35:00.000000001Z"));
    // At the end of time there is nothing to overflow into.
    assert!(limits.check_time(Timestamp::MAX, Timestamp::MAX).is_ok());
}

// --- ids and names -----------------------------------------------------------------------------

#[test]
fn dot_and_dot_dot_are_not_loop_ids() {
    for raw in [".", ".."] {
        let err = LoopId::parse(raw).unwrap_err();
        assert!(err.to_string().contains("loop_id"), "{err}");
    }
    for raw in ["...", ".a", "a.", "a..b"] {
        assert!(LoopId::parse(raw).is_ok(), "{raw}");
    }
}

#[test]
fn dot_and_dot_dot_are_not_org_unit_segments() {
    for raw in [
        ".",
        "..",
        "rxx/.",
        "rxx/..",
        "rxx/../ward-7",
        "./rxx",
        "rxx/./ward-7",
    ] {
        let err = OrgUnit::parse(raw).unwrap_err();
        assert!(err.to_string().contains("segment"), "{raw}: {err}");
        refused(received().with("org_unit", json!(raw)), &["org_unit"]);
    }
    for raw in ["rxx/.hidden", "rxx/...", "rxx/ward.7"] {
        assert!(OrgUnit::parse(raw).is_ok(), "{raw}");
    }
}

// --- characters --------------------------------------------------------------------------------

/// A step whose `field` holds `value`: fields of `author` are written `author.name`.
fn with_text(make: MakeStep, field: &str, value: &str) -> Step {
    match field.strip_prefix("author.") {
        Some(inner) => make().with("author", json!({ inner: value })),
        None => make().with(field, json!(value)),
    }
}

/// Text fields that are one line (`true`) or free text (`false`), with a step that has them.
const TEXT_FIELDS: [(MakeStep, &str, bool); 16] = [
    (|| step(EventType::Acknowledged), "by", true),
    (|| step(EventType::Acknowledged), "message", false),
    (|| step(EventType::Responded), "text", false),
    (|| step(EventType::ActionPlanned), "description", false),
    (|| step(EventType::ActionPlanned), "owner", true),
    (|| step(EventType::ChangeMade), "change_id", true),
    (|| step(EventType::ChangeMade), "evidence", false),
    (|| step(EventType::NoChange), "reason", false),
    (|| step(EventType::ReportedBack), "message", false),
    (|| step(EventType::Reopened), "reason", false),
    (received, "story", false),
    (received, "language", true),
    (received, "author.name", true),
    (received, "author.contact", true),
    (received, "author.pronouns", false),
    (received, "x_note", false),
];

#[test]
fn control_and_bidi_override_characters_are_refused_in_every_text() {
    for (make, field, _) in TEXT_FIELDS {
        for bad in ['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'] {
            refused(
                with_text(make, field, &format!("ok {bad} ok")),
                &[
                    field,
                    "control character",
                    &format!("U+{:04X}", u32::from(bad)),
                ],
            );
        }
        for bad in ['\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            refused(
                with_text(make, field, &format!("ok {bad} ok")),
                &[field, "bidirectional", &format!("U+{:04X}", u32::from(bad))],
            );
        }
        // Right-to-left text and its marks are text, not overrides.
        accepted(with_text(make, field, "שלום \u{200f} مرحبا"));
    }
}

#[test]
fn tabs_and_line_breaks_are_for_free_text_only() {
    for (make, field, one_line) in TEXT_FIELDS {
        for separator in ["\n", "\r\n", "\t"] {
            let value = format!("first{separator}second");
            if one_line {
                refused(with_text(make, field, &value), &[field, "single line"]);
            } else {
                accepted(with_text(make, field, &value));
            }
        }
    }
}

#[test]
fn tags_and_rating_names_are_single_lines_of_plain_text() {
    for field in ["themes", "seldom_heard"] {
        for bad in ["a\nb", "a\tb", "a\u{7}b", "a\u{202e}b"] {
            refused(
                received().with(field, json!(["ok", bad])),
                &[&format!("{field}[1]")],
            );
        }
    }
    for bad in ["a\nb", "a\u{7}b", "a\u{2067}b"] {
        refused(
            received().with("ratings", json!({"fft": 1, bad: 2})),
            &["rating name"],
        );
    }
}

#[test]
fn characters_inside_unknown_fields_and_their_names_are_checked() {
    refused(
        step(EventType::Acknowledged).with("x_ticket", json!({"notes": ["ok", "a\u{202e}b"]})),
        &["x_ticket", "bidirectional"],
    );
    refused(
        step(EventType::Acknowledged).with("x_ticket", json!({"a\u{7}b": 1})),
        &["x_ticket", "control character"],
    );
    refused(
        step(EventType::Acknowledged).with("x\u{202e}name", json!(1)),
        &["the name of", "bidirectional"],
    );
    accepted(step(EventType::Acknowledged).with("x_ticket", json!({"notes": ["line\nbreak"]})));
    // Names are quoted with escapes in messages, so the message itself carries no override.
    let err = LoopEvent::from_data(EventType::Acknowledged, json!({"by": "a", "x\u{202e}y": 1}))
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains('\u{202e}') && err.contains("\\u{202e}"),
        "{err}"
    );
}

// --- messages ----------------------------------------------------------------------------------

/// Words from library error messages that must never reach a caller.
const LIBRARY_WORDS: [&str; 8] = [
    "jiff",
    "Timestamp",
    "serde",
    "invalid type",
    "unknown variant",
    "expected",
    "struct",
    "BTreeMap",
];

#[test]
fn ill_typed_fields_are_explained_in_plain_sentences() {
    let cases: Vec<(Step, &[&str])> = vec![
        (
            received().with("received_at", json!("yesterday")),
            &[
                "received_at must be an RFC 3339 time",
                "2026-11-27T09:30:00Z",
            ],
        ),
        (
            received().with("received_at", json!("2026-11-27T09:30:00")),
            &["received_at must be an RFC 3339 time with its offset"],
        ),
        (
            received().with("received_at", json!(1_795_000_000)),
            &["received_at must be an RFC 3339 time", "got a number"],
        ),
        (
            action_planned().with("due", json!("next week")),
            &["due must be", "YYYY-MM-DD"],
        ),
        (
            action_planned().with("due", json!("2027-02-30")),
            &["due", "real calendar date"],
        ),
        (
            action_planned().with("due", json!(20_270_115)),
            &["due must be", "got a number"],
        ),
        (
            received().with("channel", json!("fax")),
            &["channel \"fax\"", "community_partner"],
        ),
        (
            received().with("channel", json!(7)),
            &["channel must be one of", "in_person"],
        ),
        (
            step(EventType::ReportedBack).with("channel", json!(["email"])),
            &["channel must be one of", "got an array"],
        ),
        (
            received().with("org_unit", json!(["rxx"])),
            &["org_unit must be a path", "an array"],
        ),
        (
            received().with("org_unit", json!("rxx//ward")),
            &["org_unit", "empty segment"],
        ),
        (
            received().with("ratings", json!([1, 2])),
            &["ratings must be an object of numbers"],
        ),
        (
            received().with("ratings", json!({"cleanliness": "clean"})),
            &["ratings.cleanliness must be a number", "got text"],
        ),
        (
            received().with("ratings", Value::Null),
            &["ratings must be", "got null"],
        ),
        (
            received().with("themes", json!("noise")),
            &["themes must be an array of text"],
        ),
        (
            received().with("themes", json!(["noise", 7])),
            &["themes[1] must be text", "a number"],
        ),
        (
            received().with("seldom_heard", json!({"a": 1})),
            &["seldom_heard must be an array"],
        ),
        (
            received().with("author", json!("Jo Bloggs")),
            &["author must be an object", "anonymous"],
        ),
        (
            received().with("author", json!({"anonymous": "yes"})),
            &["author.anonymous must be true or false", "got text"],
        ),
        (
            received().with("author", json!({"name": 7})),
            &["author.name must be text", "a number"],
        ),
        (
            received().with("consent_to_publish", json!("yes")),
            &["consent_to_publish must be true or false"],
        ),
        (
            received().with("consent_to_publish", Value::Null),
            &["consent_to_publish", "got null"],
        ),
        (
            received().with("story", json!(42)),
            &["story must be text", "a number"],
        ),
        (
            received().with("language", json!(["cy"])),
            &["language must be text"],
        ),
        (received().without("org_unit"), &["org_unit is missing"]),
        (
            received().without("channel"),
            &["channel is missing", "org.closeloop.feedback.received"],
        ),
        (
            step(EventType::Acknowledged).without("by"),
            &["by is missing"],
        ),
        (
            step(EventType::Acknowledged).with("by", Value::Null),
            &["by is missing"],
        ),
        (
            step(EventType::Acknowledged).with("message", json!(false)),
            &["message must be text", "a boolean"],
        ),
        (
            step(EventType::Responded).without("text"),
            &["text is missing", "org.closeloop.loop.responded"],
        ),
        (
            change_made().with("change_id", json!({"id": 1})),
            &["change_id must be text", "an object"],
        ),
    ];
    for (step, fragments) in cases {
        let data = step.data.clone();
        let err = step.into_payload().expect_err("ill-typed data is refused");
        let message = err.to_string();
        assert_eq!(err.code(), "invalid_data", "{data}: {message}");
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "{data}: {message:?} should mention {fragment:?}"
            );
        }
        for word in LIBRARY_WORDS {
            assert!(
                !message.contains(word),
                "{data}: {message:?} names {word:?}"
            );
        }
    }
}

#[test]
fn optional_fields_may_be_null() {
    accepted(
        received()
            .with("received_at", Value::Null)
            .with("language", Value::Null)
            .with("author", Value::Null),
    );
    accepted(received().with("author", json!({"name": null, "contact": null})));
    accepted(step(EventType::Acknowledged).with("message", Value::Null));
    accepted(
        action_planned()
            .with("due", Value::Null)
            .with("owner", Value::Null),
    );
    accepted(change_made().with("evidence", Value::Null));
}

#[test]
fn messages_never_quote_free_text() {
    let story = "My mum Edith Barnes waited six hours on ward 7";
    for step in [
        received().with("story", json!(format!("{story}\u{202e}"))),
        received().with("author", json!({"name": format!("Edith\nBarnes")})),
        received().with("author", json!(story)),
    ] {
        let err = step.into_payload().unwrap_err();
        assert!(!err.to_string().contains("Edith"), "{err}");
    }
}

// --- stored events -----------------------------------------------------------------------------

#[test]
fn stored_events_are_read_without_the_limits() {
    // Events stored before the limits stay readable: replaying the log must never fail on them.
    // (The time rules belong to `decide`, which stored events never meet again.)
    let cases = [
        (
            EventType::FeedbackReceived,
            json!({"org_unit": "rxx", "channel": "web", "story": "x\u{202e}",
                   "themes": tags(60, 150), "received_at": "1970-01-01T00:00:00Z",
                   "consent_to_publish": false}),
        ),
        (
            EventType::Acknowledged,
            json!({"by": "a\nb", "message": "x".repeat(1 << 20)}),
        ),
        (
            EventType::Acknowledged,
            json!({"by": "a", "x_deep": nested(40)}),
        ),
    ];
    for (event_type, data) in cases {
        assert!(
            LoopEvent::from_data(event_type, data.clone()).is_err(),
            "{event_type}"
        );
        let stored = LoopEvent::from_stored_data(event_type, data.clone())
            .unwrap_or_else(|err| panic!("{event_type}: {err}"));
        assert_eq!(Value::Object(stored.to_data()), data, "{event_type}");
    }
}

#[test]
fn stored_data_of_the_wrong_shape_is_explained_without_library_words() {
    let err = LoopEvent::from_stored_data(EventType::Responded, json!({"by": 7})).unwrap_err();
    for word in LIBRARY_WORDS {
        assert!(!err.to_string().contains(word), "{err}");
    }
}

// --- no input panics ---------------------------------------------------------------------------

/// Strings with the characters the limits care about.
fn awkward_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z \\n\\t\u{7}\u{85}\u{202e}\u{2066}é]{0,12}",
        (0_usize..3).prop_map(|n| "x".repeat([99, 100, 101][n])),
    ]
}

/// Any JSON, up to 40 levels deep: past the depth limit, with field names the types know.
fn deep_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        awkward_string().prop_map(Value::String),
        Just(json!("2026-11-27T09:30:00Z")),
        Just(json!("1999-12-31")),
    ];
    leaf.prop_recursive(40, 256, 6, |inner| {
        let name = prop_oneof![
            proptest::sample::select(vec![
                "by",
                "message",
                "text",
                "story",
                "themes",
                "ratings",
                "author",
                "name",
                "evidence",
                "due",
                "received_at",
                "org_unit",
                "channel",
                "fft",
            ])
            .prop_map(str::to_owned),
            awkward_string(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name, inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn from_data_never_panics_and_explains_in_plain_words(
        event_type in proptest::sample::select(EventType::ALL.to_vec()),
        data in prop_oneof![
            2 => deep_json(),
            // Typical data with a field made awkward, so that most fields pass and the later
            // checks are reached too.
            2 => (proptest::sample::select(EventType::ALL.to_vec()), awkward_string(), deep_json())
                .prop_map(|(base, name, value)| step(base).with(&name, value).data),
            1 => (20_usize..40).prop_map(|n| json!({"by": "pals", "x": nested(n)})),
        ],
    ) {
        match LoopEvent::from_data(event_type, data) {
            Ok(payload) => {
                // What is accepted decides without panicking either.
                let command = Command { loop_id: loop_id(), at: ts(START), payload };
                let _ = decide_with(None, command, &Limits::DEFAULT);
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.code(), "invalid_data");
                let message = rejection.to_string();
                for word in LIBRARY_WORDS {
                    prop_assert!(!message.contains(word), "{:?} names {:?}", message, word);
                }
            }
        }
    }
}
