//! Decoding CloudEvents from NATS (contract §2), through the public API only.

use closeloop_domain::{Channel, EventType, Limits, LoopEvent, LoopId};
use closeloop_ingest::cloudevent::{
    DETAIL_MAX_LEN, DecodeError, Decoded, decode, decode_with, derived_loop_id,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const SOURCE: &str = "urn:trust:rxx:fft-kiosk";
const TIME: &str = "2026-11-27T09:30:00Z";
const RECEIVED: &str = "2026-11-27T10:00:00Z";

fn ts(raw: &str) -> Timestamp {
    raw.parse().unwrap()
}

/// A valid structured event of `event_type` about loop `fft-rxx-000123`.
fn event(event_type: EventType, data: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": "fft-000123",
        "source": SOURCE,
        "type": event_type.as_str(),
        "subject": "fft-rxx-000123",
        "time": TIME,
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn feedback_data() -> Value {
    json!({
        "org_unit": "rxx/site-a/ward-7",
        "channel": "survey",
        "story": "The nurses on ward 7 were kind, but my mum waited six hours for a bed.",
        "ratings": {"fft": 2},
    })
}

fn structured(event: &Value) -> Result<Decoded, DecodeError> {
    decode(event.to_string().as_bytes(), &[], ts(RECEIVED))
}

fn binary(headers: &[(&str, &str)], payload: &str) -> Result<Decoded, DecodeError> {
    decode(payload.as_bytes(), headers, ts(RECEIVED))
}

/// Asserts the error's code, that its detail mentions every fragment, and that the detail is
/// fit for a header.
fn check_error(result: Result<Decoded, DecodeError>, code: &str, fragments: &[&str]) {
    let err = match result {
        Ok(decoded) => panic!("expected {code}, decoded {decoded:?}"),
        Err(err) => err,
    };
    let detail = err.detail();
    assert_eq!(err.code(), code, "{detail}");
    for fragment in fragments {
        assert!(
            detail.contains(fragment),
            "detail {detail:?} should mention {fragment:?}"
        );
    }
    assert!(detail.chars().count() <= DETAIL_MAX_LEN, "{detail}");
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
}

/// Structured events with `event` edited by `edit`.
fn check_structured_error(edit: impl FnOnce(&mut Value), code: &str, fragments: &[&str]) {
    let mut value = event(EventType::Acknowledged, &json!({"by": "pals"}));
    edit(&mut value);
    check_error(structured(&value), code, fragments);
}

#[test]
fn every_type_decodes_in_structured_mode() {
    let cases = [
        (
            EventType::FeedbackReceived,
            json!({
                "org_unit": "rxx/site-a/ward-7",
                "channel": "survey",
                "received_at": "2026-11-26T16:05:00Z",
                "story": "The nurses on ward 7 were kind, but my mum waited six hours for a bed.",
                "ratings": {"fft": 2},
                "themes": ["waiting", "kindness"],
                "seldom_heard": ["carer"],
                "author": {"name": "Jane Doe", "contact": "jane@example.org"},
                "consent_to_publish": true,
                "language": "en",
            }),
        ),
        (
            EventType::Acknowledged,
            json!({"by": "pals", "message": "Thank you, we have passed this to the ward."}),
        ),
        (
            EventType::Responded,
            json!({"by": "ward-7-manager", "text": "We are sorry about the wait."}),
        ),
        (
            EventType::ActionPlanned,
            json!({
                "by": "ward-7-manager",
                "description": "Add an evening discharge round",
                "owner": "matron",
                "due": "2026-12-15",
            }),
        ),
        (
            EventType::ChangeMade,
            json!({
                "by": "matron",
                "description": "Evening discharge round started",
                "change_id": "chg-42",
                "evidence": {"url": "https://intranet.example/rota"},
            }),
        ),
        (
            EventType::NoChange,
            json!({"by": "matron", "reason": "Bed numbers are set by the commissioner."}),
        ),
        (
            EventType::ReportedBack,
            json!({"by": "pals", "message": "We now run an evening round.", "channel": "email"}),
        ),
        (
            EventType::Reopened,
            json!({"by": "pals", "reason": "The family wrote again."}),
        ),
    ];
    for (event_type, data) in cases {
        let decoded = structured(&event(event_type, &data))
            .unwrap_or_else(|err| panic!("{event_type}: {err}"));
        assert_eq!(decoded.command.loop_id.as_str(), "fft-rxx-000123");
        assert_eq!(decoded.command.at, ts(TIME));
        assert_eq!(decoded.command.payload.event_type(), event_type);
        assert_eq!(
            Value::Object(decoded.command.payload.to_data()),
            data,
            "{event_type}"
        );
        assert_eq!(decoded.origin.source, SOURCE);
        assert_eq!(decoded.origin.event_id, "fft-000123");
    }
}

#[test]
fn fields_arrive_typed() {
    let decoded = structured(&event(EventType::FeedbackReceived, &feedback_data())).unwrap();
    let LoopEvent::FeedbackReceived(feedback) = decoded.command.payload else {
        panic!("expected feedback, got {:?}", decoded.command.payload);
    };
    assert_eq!(feedback.org_unit.as_str(), "rxx/site-a/ward-7");
    assert_eq!(feedback.channel, Channel::Survey);
    assert_eq!(feedback.ratings["fft"].as_u64(), Some(2));
    // The domain fills this in from `command.at` when it decides.
    assert_eq!(feedback.received_at, None);
}

#[test]
fn feedback_without_subject_gets_a_derived_loop_id() {
    let mut value = event(EventType::FeedbackReceived, &feedback_data());
    value.as_object_mut().unwrap().remove("subject");
    let first = structured(&value).unwrap();
    assert_eq!(first.command.loop_id, derived_loop_id(SOURCE, "fft-000123"));
    assert_eq!(
        first.command.loop_id.as_str(),
        "fb-330fa50032075c75853d94f6bb9e1054"
    );
    // A redelivery lands on the same loop with the same idempotency key.
    assert_eq!(structured(&value).unwrap(), first);
}

#[test]
fn time_defaults_to_when_the_message_was_received() {
    let mut value = event(EventType::Acknowledged, &json!({"by": "pals"}));
    value.as_object_mut().unwrap().remove("time");
    assert_eq!(structured(&value).unwrap().command.at, ts(RECEIVED));

    value["time"] = json!("2026-11-27T09:30:00.250+01:00");
    assert_eq!(
        structured(&value).unwrap().command.at,
        ts("2026-11-27T08:30:00.25Z")
    );
}

#[test]
fn extensions_are_ignored_and_unknown_data_fields_kept() {
    let data = json!({"by": "pals", "ticket": {"system": "datix", "no": 7}});
    let plain = structured(&event(EventType::Acknowledged, &data)).unwrap();

    let mut extended = event(EventType::Acknowledged, &data);
    let attributes = extended.as_object_mut().unwrap();
    attributes.insert(
        "traceparent".into(),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    attributes.insert(
        "dataschema".into(),
        json!("https://closeloop.example/schema/ack"),
    );
    attributes.insert("trustcode".into(), json!("rxx"));
    attributes.insert("priority".into(), json!(3));
    let decoded = structured(&extended).unwrap();
    assert_eq!(decoded, plain);
    assert_eq!(
        decoded.command.payload.to_data()["ticket"],
        json!({"system": "datix", "no": 7})
    );
}

#[test]
fn optional_attributes_may_be_null_or_parameterised() {
    let mut value = event(EventType::FeedbackReceived, &feedback_data());
    value["subject"] = Value::Null;
    value["time"] = Value::Null;
    value["datacontenttype"] = Value::Null;
    let decoded = structured(&value).unwrap();
    assert_eq!(
        decoded.command.loop_id,
        derived_loop_id(SOURCE, "fft-000123")
    );
    assert_eq!(decoded.command.at, ts(RECEIVED));

    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        value["datacontenttype"] = json!(content_type);
        assert!(structured(&value).is_ok(), "{content_type}");
    }
}

#[test]
fn bytes_that_are_not_json_are_invalid_json() {
    for payload in [
        &b"feedback: the car park is full"[..],
        b"",
        b"  \n",
        b"{\"specversion\": \"1.0\", ",
        b"{\"specversion\": \"1.0\"} trailing",
        b"\xff\xfe{}",
    ] {
        check_error(
            decode(payload, &[], ts(RECEIVED)),
            "invalid_json",
            &["JSON"],
        );
    }
    check_error(decode(b"", &[], ts(RECEIVED)), "invalid_json", &["empty"]);
}

#[test]
fn json_that_is_not_a_cloudevent_is_invalid_cloudevent() {
    let one = event(EventType::Acknowledged, &json!({"by": "pals"}));
    check_error(
        structured(&json!([one])),
        "invalid_cloudevent",
        &["batches are not supported", "one CloudEvent"],
    );
    check_error(
        structured(&json!("hello")),
        "invalid_cloudevent",
        &["a string", "not a CloudEvent"],
    );
    // The bare data, as a publisher who forgot the envelope would send it.
    check_error(
        structured(&feedback_data()),
        "invalid_cloudevent",
        &["specversion is missing", "\"1.0\""],
    );
}

#[test]
fn envelope_errors_name_the_attribute_and_the_fix() {
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            |v| v["specversion"] = json!("0.3"),
            &["specversion", "\"0.3\"", "1.0"],
        ),
        (
            |v| v["specversion"] = json!(1.0),
            &["specversion must be a string", "a number"],
        ),
        (
            |v| remove(v, "id"),
            &["id is missing", "unique within its source"],
        ),
        (|v| v["id"] = json!(""), &["id is empty"]),
        (|v| v["id"] = json!("   "), &["id is empty"]),
        (
            |v| v["id"] = json!(123),
            &["id must be a string", "a number"],
        ),
        (
            |v| v["id"] = json!("x".repeat(257)),
            &["id is 257 characters long", "256"],
        ),
        (
            |v| v["id"] = json!("fft\n0001"),
            &["id contains a control character"],
        ),
        (
            |v| remove(v, "source"),
            &["source is missing", "urn:trust:rxx:fft-kiosk"],
        ),
        (
            |v| v["source"] = json!({"trust": "rxx"}),
            &["source must be a string", "an object"],
        ),
        (
            |v| v["source"] = json!("urn:\u{7}bell"),
            &["source contains a control character"],
        ),
        (
            |v| remove(v, "type"),
            &["type is missing", "org.closeloop.feedback.received"],
        ),
        (
            |v| v["type"] = json!(["org.closeloop.loop.acknowledged"]),
            &["type must be a string", "an array"],
        ),
        (
            |v| v["time"] = json!("27/11/2026 09:30"),
            &[
                "time",
                "\"27/11/2026 09:30\"",
                "RFC 3339",
                "2026-11-27T09:30:00Z",
            ],
        ),
        (|v| v["time"] = json!("2026-11-27T09:30:00"), &["RFC 3339"]),
        (
            |v| v["time"] = json!(1_795_000_000),
            &["time must be a string"],
        ),
        (
            |v| v["subject"] = json!("ward 7/loop 1"),
            &["subject must be the loop id", "found ' '"],
        ),
        (
            |v| v["subject"] = json!(""),
            &["subject must be the loop id", "1 to 128"],
        ),
        (|v| v["subject"] = json!(42), &["subject must be a string"]),
        (
            |v| remove(v, "subject"),
            &[
                "subject must name the loop",
                "org.closeloop.loop.acknowledged",
            ],
        ),
        (
            |v| v["datacontenttype"] = json!("text/plain"),
            &["datacontenttype", "\"text/plain\"", "application/json"],
        ),
        (
            |v| v["datacontenttype"] = json!("application/cloudevents+json"),
            &["datacontenttype", "application/json"],
        ),
        (
            |v| {
                remove(v, "data");
                v["data_base64"] = json!("eyJieSI6InBhbHMifQ==");
            },
            &["data_base64 is not supported", "JSON object in data"],
        ),
        (
            |v| v["data_base64"] = json!("eyJieSI6InBhbHMifQ=="),
            &["data_base64 is not supported"],
        ),
        (
            |v| remove(v, "data"),
            &["data is missing", "org.closeloop.loop.acknowledged"],
        ),
        (|v| v["data"] = Value::Null, &["data is missing"]),
        (
            |v| v["data"] = json!("{\"by\":\"pals\"}"),
            &["data must be a JSON object", "a string"],
        ),
        (
            |v| v["data"] = json!([{"by": "pals"}]),
            &["data must be a JSON object", "an array"],
        ),
    ];
    for (edit, fragments) in cases {
        check_structured_error(edit, "invalid_cloudevent", fragments);
    }
}

fn remove(value: &mut Value, attribute: &str) {
    value.as_object_mut().unwrap().remove(attribute);
}

#[test]
fn types_outside_the_eight_are_unknown_type() {
    for (event_type, fragments) in [
        (
            "org.closeloop.loop.closed",
            &["\"org.closeloop.loop.closed\"", "one of the eight"][..],
        ),
        (
            "com.example.feedback.received",
            &["not a Closeloop event type"],
        ),
        // The suffix alone is what outbound subjects use, not a CloudEvents type.
        ("feedback.received", &["org.closeloop.feedback.received"]),
        (
            "ORG.CLOSELOOP.FEEDBACK.RECEIVED",
            &["not a Closeloop event type"],
        ),
    ] {
        check_structured_error(|v| v["type"] = json!(event_type), "unknown_type", fragments);
    }
}

#[test]
fn data_the_domain_refuses_is_invalid_data() {
    let cases = [
        (EventType::Responded, json!({"by": "pals"}), &["text"][..]),
        (
            EventType::Responded,
            json!({"by": " ", "text": "Sorry."}),
            &["by must not be empty"],
        ),
        (
            EventType::ActionPlanned,
            json!({"by": "a", "description": "b", "due": "next week"}),
            &["due must be", "YYYY-MM-DD"],
        ),
        (
            EventType::FeedbackReceived,
            json!({"org_unit": "rxx/site-a", "channel": "fax", "story": "x"}),
            &["fax"],
        ),
        (
            EventType::FeedbackReceived,
            json!({"org_unit": "rxx/site-a", "channel": "web"}),
            &["story or at least one rating"],
        ),
    ];
    for (event_type, data, fragments) in cases {
        check_error(
            structured(&event(event_type, &data)),
            "invalid_data",
            fragments,
        );
    }
}

#[test]
fn details_never_quote_personal_data() {
    let story = "My mum Edith Barnes waited six hours on ward 7";
    // A rating out of range next to a story: the detail names the rating, not the story.
    let data =
        json!({"org_unit": "rxx/site-a", "channel": "web", "story": story, "ratings": {"fft": 9}});
    let err = structured(&event(EventType::FeedbackReceived, &data)).unwrap_err();
    assert_eq!(err.code(), "invalid_data");
    assert!(err.detail().contains("ratings.fft"), "{}", err.detail());
    assert!(!err.detail().contains("Edith"), "{}", err.detail());

    // An author given as a bare name: serde would quote the name; the detail must not.
    let data = json!({"org_unit": "rxx/site-a", "channel": "web", "story": story, "author": "Edith Barnes"});
    let err = structured(&event(EventType::FeedbackReceived, &data)).unwrap_err();
    assert_eq!(err.code(), "invalid_data");
    assert!(!err.detail().contains("Edith"), "{}", err.detail());
    assert!(
        err.detail().contains("author must be an object"),
        "{}",
        err.detail()
    );
}

const BINARY_ACK: [(&str, &str); 6] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "ack-1"),
    ("ce-source", "urn:trust:rxx:pals"),
    ("ce-type", "org.closeloop.loop.acknowledged"),
    ("ce-subject", "fft-rxx-000123"),
    ("ce-time", TIME),
];

fn binary_with(
    edit: impl FnOnce(&mut Vec<(&'static str, &'static str)>),
) -> Vec<(&'static str, &'static str)> {
    let mut headers = BINARY_ACK.to_vec();
    edit(&mut headers);
    headers
}

#[test]
fn binary_mode_reads_attributes_from_ce_headers() {
    let decoded = binary(
        &binary_with(|h| h.push(("Content-Type", "application/json; charset=utf-8"))),
        r#"{"by": "pals", "message": "Thank you", "ticket": 7}"#,
    )
    .unwrap();
    assert_eq!(decoded.command.loop_id.as_str(), "fft-rxx-000123");
    assert_eq!(decoded.command.at, ts(TIME));
    assert_eq!(decoded.origin.source, "urn:trust:rxx:pals");
    assert_eq!(decoded.origin.event_id, "ack-1");
    assert_eq!(
        Value::Object(decoded.command.payload.to_data()),
        json!({"by": "pals", "message": "Thank you", "ticket": 7})
    );

    // Header names are case-insensitive; the structured decoding of the same event agrees.
    let shouting: Vec<(String, &str)> = BINARY_ACK
        .iter()
        .map(|(name, value)| (name.to_uppercase(), *value))
        .collect();
    let shouting: Vec<(&str, &str)> = shouting.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let upper = binary(&shouting, r#"{"by": "pals"}"#).unwrap();
    let mut same = event(EventType::Acknowledged, &json!({"by": "pals"}));
    same["id"] = json!("ack-1");
    same["source"] = json!("urn:trust:rxx:pals");
    assert_eq!(upper, structured(&same).unwrap());
}

#[test]
fn binary_feedback_without_subject_or_time() {
    let headers = [
        ("Ce-Specversion", "1.0"),
        ("Ce-Id", "fft-000123"),
        ("Ce-Source", SOURCE),
        ("Ce-Type", "org.closeloop.feedback.received"),
    ];
    let decoded = binary(&headers, &feedback_data().to_string()).unwrap();
    assert_eq!(
        decoded.command.loop_id,
        derived_loop_id(SOURCE, "fft-000123")
    );
    assert_eq!(decoded.command.at, ts(RECEIVED));
    assert_eq!(
        decoded.command.payload.event_type(),
        EventType::FeedbackReceived
    );
}

#[test]
fn binary_mode_errors() {
    let by = r#"{"by": "pals"}"#;
    check_error(
        binary(&BINARY_ACK, "by=pals"),
        "invalid_json",
        &["payload is not valid JSON", "binary mode"],
    );
    check_error(binary(&BINARY_ACK, ""), "invalid_json", &["empty"]);
    check_error(
        binary(&BINARY_ACK, r#"[{"by": "pals"}]"#),
        "invalid_cloudevent",
        &["JSON object", "an array"],
    );
    check_error(
        binary(&binary_with(|h| h.push(("content-type", "text/plain"))), by),
        "invalid_cloudevent",
        &["Content-Type", "\"text/plain\"", "application/json"],
    );
    check_error(
        binary(
            &binary_with(|h| h.push(("ce-datacontenttype", "application/xml"))),
            by,
        ),
        "invalid_cloudevent",
        &["ce-datacontenttype", "application/json"],
    );
    check_error(
        binary(&binary_with(|h| h[0].1 = "0.3"), by),
        "invalid_cloudevent",
        &["header ce-specversion", "\"0.3\"", "1.0"],
    );
    check_error(
        binary(
            &binary_with(|h| {
                h.remove(1);
            }),
            by,
        ),
        "invalid_cloudevent",
        &["header ce-id is missing"],
    );
    check_error(
        binary(
            &binary_with(|h| h.push(("ce-source", "urn:trust:ryy:other"))),
            by,
        ),
        "invalid_cloudevent",
        &["ce-source", "more than once"],
    );
    check_error(
        binary(&binary_with(|h| h[5].1 = "yesterday"), by),
        "invalid_cloudevent",
        &["header ce-time", "RFC 3339"],
    );
    check_error(
        binary(
            &binary_with(|h| {
                h.remove(4);
            }),
            by,
        ),
        "invalid_cloudevent",
        &["subject must name the loop"],
    );
    check_error(
        binary(&binary_with(|h| h[4].1 = "loop/1"), by),
        "invalid_cloudevent",
        &["header ce-subject", "'/'"],
    );
    check_error(
        binary(
            &binary_with(|h| h[3].1 = "org.closeloop.loop.escalated"),
            by,
        ),
        "unknown_type",
        &["org.closeloop.loop.escalated"],
    );
    check_error(
        binary(&BINARY_ACK, r#"{"message": "Thank you"}"#),
        "invalid_data",
        &["by"],
    );
}

#[test]
fn without_ce_specversion_the_message_is_structured() {
    // `ce-` headers alone do not switch modes: the payload must then be a whole CloudEvent.
    let headers = &BINARY_ACK[1..];
    check_error(
        binary(headers, r#"{"by": "pals"}"#),
        "invalid_cloudevent",
        &["specversion is missing"],
    );
    let whole = event(EventType::Acknowledged, &json!({"by": "pals"})).to_string();
    let decoded = binary(
        &[
            ("Content-Type", "application/cloudevents+json"),
            ("ce-id", "ignored"),
        ],
        &whole,
    )
    .unwrap();
    assert_eq!(decoded.origin.event_id, "fft-000123");
}

#[test]
fn derived_loop_ids_are_stable_distinct_and_unambiguous() {
    let id = derived_loop_id(SOURCE, "fft-000123");
    assert_eq!(id, derived_loop_id(SOURCE, "fft-000123"));
    assert!(LoopId::parse(id.as_str()).is_ok());
    let hex = id.as_str().strip_prefix("fb-").unwrap();
    assert_eq!(hex.len(), 32);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    let pairs = [
        (SOURCE, "fft-000123"),
        (SOURCE, "fft-000124"),
        ("urn:trust:ryy:fft-kiosk", "fft-000123"),
        ("a", "bc"),
        ("ab", "c"),
        ("", "abc"),
        ("abc", ""),
        ("1:a", "b"),
        ("1", ":ab"),
    ];
    let ids: std::collections::BTreeSet<LoopId> = pairs
        .iter()
        .map(|(source, id)| derived_loop_id(source, id))
        .collect();
    assert_eq!(ids.len(), pairs.len(), "{ids:?}");
}

// --- limits --------------------------------------------------------------------------------------

/// The limits family's `check`: the event edited by `at_limit` decodes; edited by `past_limit`
/// it is refused with `code` and a detail mentioning every fragment.
fn check_limit(
    at_limit: impl FnOnce(&mut Value),
    past_limit: impl FnOnce(&mut Value),
    code: &str,
    fragments: &[&str],
) {
    let mut value = event(EventType::FeedbackReceived, &feedback_data());
    at_limit(&mut value);
    if let Err(err) = structured(&value) {
        panic!("the value at the limit was refused: {err}");
    }
    check_structured_feedback_error(past_limit, code, fragments);
}

/// A structured feedback event edited by `edit` is refused with `code`.
fn check_structured_feedback_error(edit: impl FnOnce(&mut Value), code: &str, fragments: &[&str]) {
    let mut value = event(EventType::FeedbackReceived, &feedback_data());
    edit(&mut value);
    check_error(structured(&value), code, fragments);
}

#[test]
fn time_is_at_most_5_minutes_after_the_message_arrived() {
    // RECEIVED is 10:00:00.
    check_limit(
        |v| v["time"] = json!("2026-11-27T10:05:00Z"),
        |v| v["time"] = json!("2026-11-27T10:05:00.001Z"),
        "invalid_cloudevent",
        &[
            "time is 2026-11-27T10:05:00.001Z",
            "5 minutes",
            "reached Closeloop",
        ],
    );
    check_error(
        binary(
            &binary_with(|h| h[5].1 = "2027-01-01T00:00:00Z"),
            r#"{"by": "pals"}"#,
        ),
        "invalid_cloudevent",
        &["header ce-time", "5 minutes"],
    );
}

#[test]
fn time_is_not_before_2000() {
    check_limit(
        |v| v["time"] = json!("2000-01-01T00:00:00Z"),
        |v| v["time"] = json!("1999-12-31T23:59:59Z"),
        "invalid_cloudevent",
        &["time is 1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z"],
    );
    check_structured_feedback_error(
        |v| v["time"] = json!("0001-01-01T00:00:00Z"),
        "invalid_cloudevent",
        &["time"],
    );
}

#[test]
fn received_at_in_the_data_is_left_to_the_domain() {
    // The decoder checks the envelope; `received_at` against the event's time is a rule of
    // `decide`, which the store applies to HTTP and NATS alike.
    let mut data = feedback_data();
    data["received_at"] = json!("2026-11-27T10:00:00Z");
    assert!(structured(&event(EventType::FeedbackReceived, &data)).is_ok());
}

#[test]
fn closeloop_sources_are_refused() {
    for source in [
        "urn:closeloop:api",
        "urn:closeloop:demo",
        "URN:CloseLoop:api",
        "urn:closeloop:",
    ] {
        check_structured_error(
            |v| v["source"] = json!(source),
            "invalid_cloudevent",
            &["source", "urn:closeloop:", "Closeloop's own"],
        );
    }
    check_error(
        binary(
            &binary_with(|h| h[2].1 = "urn:closeloop:api"),
            r#"{"by": "pals"}"#,
        ),
        "invalid_cloudevent",
        &["header ce-source", "urn:closeloop:"],
    );
    for source in [
        "urn:closeloop-bench:1",
        "urn:trust:closeloop:kiosk",
        "urn:closeloop",
    ] {
        let mut value = event(EventType::Acknowledged, &json!({"by": "pals"}));
        value["source"] = json!(source);
        assert!(structured(&value).is_ok(), "{source}");
    }
}

#[test]
fn data_goes_through_the_domain_limits() {
    let themes = |n: usize| json!((0..n).map(|i| format!("t{i}")).collect::<Vec<_>>());
    check_limit(
        |v| v["data"]["themes"] = themes(50),
        |v| v["data"]["themes"] = themes(51),
        "invalid_data",
        &["themes has 51 entries"],
    );
    check_limit(
        |v| v["data"]["x_note"] = json!("x".repeat(20_000)),
        |v| v["data"]["x_note"] = json!("x".repeat(20_001)),
        "invalid_data",
        &["x_note", "20000"],
    );
    check_structured_feedback_error(
        |v| v["data"]["org_unit"] = json!("rxx/../ward-7"),
        "invalid_data",
        &["org_unit", "segment"],
    );
    check_structured_feedback_error(
        |v| v["data"]["themes"] = json!(["noise\u{202e}"]),
        "invalid_data",
        &["themes[0]", "bidirectional"],
    );
    check_error(
        binary(&BINARY_ACK, r#"{"by": "pals\ncorner"}"#),
        "invalid_data",
        &["by must be a single line"],
    );
    check_error(
        binary(
            &BINARY_ACK,
            r#"{"by": "pals", "received_at": 7, "x": "\u0007"}"#,
        ),
        "invalid_data",
        &["x contains a control character", "U+0007"],
    );
}

#[test]
fn lowered_limits_apply_to_the_envelope_and_the_data() {
    let limits = Limits {
        max_future: SignedDuration::ZERO,
        max_text_bytes: 4,
        ..Limits::DEFAULT
    };
    let with =
        |value: &Value| decode_with(value.to_string().as_bytes(), &[], ts(RECEIVED), &limits);
    let mut value = event(EventType::Acknowledged, &json!({"by": "pals"}));
    value["time"] = json!(RECEIVED);
    assert!(with(&value).is_ok());
    value["time"] = json!("2026-11-27T10:00:01Z");
    assert!(structured(&value).is_ok());
    check_error(with(&value), "invalid_cloudevent", &["0 minutes"]);
    value["time"] = json!(RECEIVED);
    value["data"]["by"] = json!("pals!");
    assert!(structured(&value).is_ok());
    check_error(
        with(&value),
        "invalid_data",
        &["by", "5 bytes", "limit is 4"],
    );
}
