//! Fuzzing the CloudEvent decoder (issue 8, item 12): whatever a publisher sends, decoding
//! never panics, and every refusal carries one of the dead-letter codes of contract §2 with a
//! detail fit for a header. Three targets: arbitrary bytes (with and without CloudEvents
//! headers), arbitrary JSON, and structure-aware CloudEvents in structured and binary mode
//! whose attributes and data are mutated (removed, retyped, overlong, deeply nested, odd
//! numbers, control and bidi characters, extra fields).
//!
//! CI runs a fixed number of cases (a few seconds in all). For a longer local hunt:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo nextest run -p closeloop-ingest --test fuzz --success-output immediate
//! ```
//!
//! Each target prints how many cases it ran; `PROPTEST_RNG_SEED=<n>` picks another seed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use closeloop_domain::Limits;
use closeloop_ingest::cloudevent::{DETAIL_MAX_LEN, DecodeError, decode};
use closeloop_testkit::fuzz::{
    self, EVENT_KINDS, Mutation, event_data, json_value, mutation, nasty_string, with_odd_numbers,
};
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

/// The codes a decoding refusal may carry (contract §2).
const CODES: [&str; 4] = [
    "invalid_json",
    "invalid_cloudevent",
    "unknown_type",
    "invalid_data",
];

/// When every fuzzed message "arrives".
const RECEIVED: &str = "2026-11-27T10:00:00Z";

/// The structured-mode attributes a CloudEvent may have, in the order mutations name them.
const ATTRIBUTES: [&str; 7] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
];

fn received() -> Timestamp {
    RECEIVED.parse().expect("a valid timestamp")
}

/// Decodes one message and checks the outcome: a decoded event is dated inside the window of
/// the default limits; a refusal has a documented code and a one-line detail.
fn check(
    payload: &[u8],
    headers: &[(&str, &str)],
    seen: &Mutex<BTreeMap<&'static str, usize>>,
) -> Result<(), TestCaseError> {
    let received = received();
    let result = decode(payload, headers, received);
    if let Ok(mut seen) = seen.lock() {
        let outcome = result
            .as_ref()
            .map_or_else(DecodeError::code, |_| "decoded");
        *seen.entry(outcome).or_default() += 1;
    }
    match result {
        Ok(decoded) => {
            let limits = Limits::DEFAULT;
            prop_assert!(decoded.command.at >= limits.earliest);
            prop_assert!(
                decoded.command.at <= received + limits.max_future,
                "decoded an event dated {} for a message received at {received}",
                decoded.command.at
            );
            prop_assert!(!decoded.origin.source.is_empty());
            prop_assert!(!decoded.origin.event_id.is_empty());
        }
        Err(err) => {
            let detail = err.detail();
            prop_assert!(
                CODES.contains(&err.code()),
                "undocumented code {}",
                err.code()
            );
            prop_assert!(!detail.is_empty());
            prop_assert!(detail.chars().count() <= DETAIL_MAX_LEN, "{detail}");
            prop_assert!(!detail.chars().any(char::is_control), "{detail:?}");
        }
    }
    Ok(())
}

/// Prints how often each outcome came up (shrinking included): a target that never decodes
/// anything would test little.
fn report(name: &str, seen: &Mutex<BTreeMap<&'static str, usize>>) {
    if let Ok(seen) = seen.lock() {
        eprintln!("fuzz {name}: outcomes {seen:?}");
    }
}

/// Headers as the consumer hands them over: (name, value) pairs, sometimes in binary mode.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "ce-specversion",
            "CE-SPECVERSION",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-subject",
            "ce-time",
            "ce-datacontenttype",
            "Content-Type",
            "Nats-Msg-Id",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z-]{1,12}",
    ];
    prop::collection::vec((name, nasty_string()), 0..5)
}

fn as_pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

#[test]
fn arbitrary_bytes_are_decoded_or_refused_with_a_code() {
    let strategy = (prop::collection::vec(any::<u8>(), 0..512), headers());
    let seen = Mutex::new(BTreeMap::new());
    fuzz::run(
        "decode(arbitrary bytes)",
        10000,
        &strategy,
        |(payload, headers)| check(&payload, &as_pairs(&headers), &seen),
    );
    report("decode(arbitrary bytes)", &seen);
}

#[test]
fn arbitrary_json_is_decoded_or_refused_with_a_code() {
    let strategy = (json_value(), any::<usize>(), headers());
    let seen = Mutex::new(BTreeMap::new());
    fuzz::run(
        "decode(arbitrary JSON)",
        10000,
        &strategy,
        |(value, pick, headers)| check(&with_odd_numbers(&value, pick), &as_pairs(&headers), &seen),
    );
    report("decode(arbitrary JSON)", &seen);
}

/// One change to a valid event: to an attribute, or to its data.
#[derive(Debug, Clone)]
enum Change {
    /// Removes the attribute `ATTRIBUTES[n % 7]`.
    RemoveAttribute(usize),
    /// Sets that attribute to any JSON value (in binary mode: its text).
    SetAttribute(usize, Value),
    /// Changes the data.
    Data(Mutation),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        1 => any::<usize>().prop_map(Change::RemoveAttribute),
        2 => (any::<usize>(), prop_oneof![json_value(), nasty_string().prop_map(Value::String)])
            .prop_map(|(n, value)| Change::SetAttribute(n, value)),
        5 => mutation().prop_map(Change::Data),
    ]
}

/// A mutated CloudEvent: its attributes (structured mode's top-level members but `data`), its
/// data, whether it goes in binary mode, and which odd number literal replaces placeholders.
#[derive(Debug, Clone)]
struct Message {
    attributes: Map<String, Value>,
    data: Value,
    binary: bool,
    odd_number: usize,
}

fn message() -> impl Strategy<Value = Message> {
    prop::sample::select(EVENT_KINDS.to_vec())
        .prop_flat_map(|kind| {
            (
                Just(kind),
                event_data(kind),
                prop::sample::select(vec![
                    Some("2026-11-27T09:30:00Z"),
                    Some("2026-11-27T10:05:00Z"),
                    Some("2026-11-27T10:05:01Z"),
                    Some("2000-01-01T00:00:00Z"),
                    Some("1999-12-31T23:59:59Z"),
                    None,
                ]),
                prop_oneof![2 => Just(Vec::new()), 3 => prop::collection::vec(change(), 1..4)],
                any::<bool>(),
                any::<usize>(),
            )
        })
        .prop_map(|(kind, data, time, changes, binary, odd_number)| {
            let mut attributes = Map::new();
            attributes.insert("specversion".to_owned(), json!("1.0"));
            attributes.insert("id".to_owned(), json!("fft-000123"));
            attributes.insert("source".to_owned(), json!("urn:trust:rxx:fft-kiosk"));
            attributes.insert("type".to_owned(), json!(format!("org.closeloop.{kind}")));
            attributes.insert("subject".to_owned(), json!("fft-rxx-000123"));
            if let Some(time) = time {
                attributes.insert("time".to_owned(), json!(time));
            }
            attributes.insert("datacontenttype".to_owned(), json!("application/json"));
            let mut message = Message {
                attributes,
                data,
                binary,
                odd_number,
            };
            for change in changes {
                match change {
                    Change::RemoveAttribute(n) => {
                        message.attributes.remove(ATTRIBUTES[n % ATTRIBUTES.len()]);
                    }
                    Change::SetAttribute(n, value) => {
                        message
                            .attributes
                            .insert(ATTRIBUTES[n % ATTRIBUTES.len()].to_owned(), value);
                    }
                    Change::Data(mutation) => mutation.apply(&mut message.data),
                }
            }
            message
        })
}

#[test]
fn mutated_cloudevents_are_decoded_or_refused_with_a_code() {
    let seen = Mutex::new(BTreeMap::new());
    fuzz::run(
        "decode(mutated CloudEvents)",
        10000,
        &message(),
        |message| {
            if message.binary {
                // Binary mode: attributes in `ce-` headers (a non-string as its JSON text), the
                // data alone as the payload.
                let headers: Vec<(String, String)> = message
                    .attributes
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        (format!("ce-{name}"), value)
                    })
                    .collect();
                let mut pairs = as_pairs(&headers);
                if !pairs.iter().any(|(name, _)| *name == "ce-specversion") {
                    // Without it the message would be read as structured: keep it binary, with
                    // a version the decoder must refuse.
                    pairs.push(("ce-specversion", "0.3"));
                }
                check(
                    &with_odd_numbers(&message.data, message.odd_number),
                    &pairs,
                    &seen,
                )
            } else {
                let mut event = message.attributes.clone();
                event.insert("data".to_owned(), message.data.clone());
                check(
                    &with_odd_numbers(&Value::Object(event), message.odd_number),
                    &[],
                    &seen,
                )
            }
        },
    );
    report("decode(mutated CloudEvents)", &seen);
}
