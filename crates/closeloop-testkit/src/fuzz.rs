//! Building blocks of the proptest fuzz targets (`crates/closeloop-ingest/tests/fuzz.rs`,
//! `crates/closeloop-api/tests/fuzz.rs`): hostile strings, odd numbers and arbitrary JSON, and
//! [`run`], which runs a property a fixed number of times and says how many cases ran.
//!
//! CI runs each target with its default case count, chosen so that all of them together take
//! well under three minutes on a debug build. For a longer hunt, raise the count:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo nextest run -p closeloop-ingest --test fuzz
//! PROPTEST_CASES=20000 cargo nextest run -p closeloop-api --test fuzz --success-output immediate
//! ```
//!
//! A failure prints the shrunk input; `PROPTEST_RNG_SEED` (printed too, when set) replays a run.

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Number, Value};

/// A placeholder string that [`with_odd_numbers`] replaces, in serialised JSON, by a number
/// literal `serde_json` would never write itself (`1e400`, `-0`, 30 digits, …).
pub const ODD_NUMBER: &str = "\u{1}odd-number\u{1}";

/// Number literals at and past the edges of what JSON parsers agree on.
const ODD_NUMBER_LITERALS: &[&str] = &[
    "1e400",
    "-1e400",
    "1E-400",
    "-0",
    "-0.0",
    "0.1e1",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "1.7976931348623157e308",
    "5e-324",
];

/// How many cases a target runs: `PROPTEST_CASES` when set, else `default`.
#[must_use]
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(default)
}

/// Runs `test` on `cases(default_cases)` inputs from `strategy`, then prints how many ran.
///
/// The random seed is fixed unless `PROPTEST_RNG_SEED` is set, so a CI failure reproduces
/// on any machine with the same case count.
///
/// # Panics
/// When `test` fails (returns an error or panics) on some input: the panic message holds the
/// shrunk input and the reason.
pub fn run<S>(
    name: &str,
    default_cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases(default_cases);
    let seed: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(0x00c1_05e1_00f5);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        // Shrinking a slow target can take longer than the fuzzing did; a few hundred steps
        // give a readable input.
        max_shrink_iters: 512,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let result = runner.run(strategy, test);
    match result {
        Ok(()) => eprintln!("fuzz {name}: {cases} cases passed (seed {seed})"),
        Err(err) => panic!("fuzz {name} failed (seed {seed}, {cases} cases): {err}"),
    }
}

/// Strings that have broken parsers and pages before: empty, blank, `.` and `..`, control and
/// bidirectional-override characters, astral and combining characters, lone-looking escapes,
/// strings at and just past the documented limits, and arbitrary Unicode.
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
            4 => "\\PC{0,24}",
            2 => ".{0,16}",
            1 => Just(String::new()),
            1 => prop::sample::select(vec![
                " ", ".", "..", "./..", "a/../b", "\u{0}", "\t", "\r\n", "\u{7f}", "\u{85}",
                "\u{202e}gnp.exe", "\u{2066}x\u{2069}", "\u{200b}", "\u{feff}", "\u{fffd}",
                "e\u{301}", "😀", "𝕏", "\\u0000", "%00", "<script>", "' OR 1=1", "null",
                "true", "1e400", "{}", "[]", "urn:closeloop:api", "URN:CLOSELOOP:x",
                "web", "in_person", "rxx/site-a/ward-7", "rxx//ward", "rxx/./ward", "/rxx",
                "2026-11-27T09:30:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                "1999-12-31T23:59:59Z", "2026-02-30", "2026-11-27",
            ])
            .prop_map(str::to_owned),
            1 => (
                prop::sample::select(vec!['a', 'é', '😀', '\u{202e}', '\u{0}']),
                prop::sample::select(vec![
    1usize, 100, 101, 128, 129, 256, 257, 20_000, 20_001]),
            )
                .prop_map(|(c, n)| c.to_string().repeat(n)),
        ]
}

/// A text at or past the story limit (100,000 bytes) or far past every limit, for the fields
/// where length matters most.
pub fn long_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!['x', 'é', '😀']),
        prop::sample::select(vec![20_001usize, 25_000, 33_334, 100_000, 100_001, 300_000]),
    )
        .prop_map(|(c, n)| c.to_string().repeat(n))
}

/// JSON numbers of every kind `serde_json` builds: small and extreme integers, fractions,
/// and the placeholder [`ODD_NUMBER`] for literals it cannot build.
pub fn odd_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (-10i64..=10).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => prop::sample::select(vec![0.5, -1.5, 1e300, -1e-300, 6.000_000_1])
            .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => Just(Value::String(ODD_NUMBER.to_owned())),
    ]
}

/// Any JSON value, a few levels deep, with [`nasty_string`] strings and [`odd_number`]s.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        odd_number(),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// `value` wrapped in `depth` arrays or objects (alternating by `objects`), to probe the
/// nesting limit.
#[must_use]
pub fn nested(value: Value, depth: usize, objects: bool) -> Value {
    (0..depth).fold(value, |inner, level| {
        if objects && level % 2 == 0 {
            let mut map = Map::new();
            map.insert("n".to_owned(), inner);
            Value::Object(map)
        } else {
            Value::Array(vec![inner])
        }
    })
}

/// Serialises `value`, then replaces each [`ODD_NUMBER`] placeholder by one of the odd number
/// literals (`pick` chooses which), so the bytes hold numbers no JSON value here can.
#[must_use]
pub fn with_odd_numbers(value: &Value, pick: usize) -> Vec<u8> {
    let text = value.to_string();
    let placeholder = Value::String(ODD_NUMBER.to_owned()).to_string();
    let literal = ODD_NUMBER_LITERALS[pick % ODD_NUMBER_LITERALS.len()];
    text.replace(&placeholder, literal).into_bytes()
}

/// One change to a JSON object (an event's data, a request body): a field removed, retyped,
/// made long or deeply nested, an unknown field added, or the whole value replaced.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Removes the field with this index (modulo the number of fields).
    Remove(usize),
    /// Replaces the field with this index by any JSON value.
    Set(usize, Value),
    /// Replaces the field with this index by a long text.
    Long(usize, String),
    /// Wraps the field with this index in so many arrays, or objects and arrays.
    Nest(usize, usize, bool),
    /// Adds a field, usually one nobody knows.
    Add(String, Value),
    /// Replaces the whole value, object or not.
    Replace(Value),
}

impl Mutation {
    /// Applies the change to `value`; field changes do nothing to a value that is not an
    /// object or has no fields.
    pub fn apply(self, value: &mut Value) {
        match self {
            Mutation::Remove(n) => {
                if let Some(name) = field_name(value, n)
                    && let Some(fields) = value.as_object_mut()
                {
                    fields.remove(&name);
                }
            }
            Mutation::Set(n, new) => set_field(value, n, |_| new),
            Mutation::Long(n, text) => set_field(value, n, |_| Value::String(text)),
            Mutation::Nest(n, depth, objects) => {
                set_field(value, n, |old| nested(old, depth, objects));
            }
            Mutation::Add(name, new) => {
                if let Some(fields) = value.as_object_mut() {
                    fields.insert(name, new);
                }
            }
            Mutation::Replace(new) => *value = new,
        }
    }
}

/// The name of the field with index `n` modulo the number of fields.
fn field_name(value: &Value, n: usize) -> Option<String> {
    let fields = value.as_object()?;
    fields.keys().nth(n % fields.len().max(1)).cloned()
}

fn set_field(value: &mut Value, n: usize, make: impl FnOnce(Value) -> Value) {
    let Some(name) = field_name(value, n) else {
        return;
    };
    if let Some(slot) = value
        .as_object_mut()
        .and_then(|fields| fields.get_mut(&name))
    {
        let old = slot.take();
        *slot = make(old);
    }
}

/// Up to three [`Mutation`]s; none in two cases of five, so that plausible inputs get
/// through often enough to test what happens after they are accepted.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => prop::collection::vec(mutation(), 1..4),
    ]
}

/// Any [`Mutation`], weighted towards retyping and adding fields.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Remove),
        3 => (any::<usize>(), json_value()).prop_map(|(n, value)| Mutation::Set(n, value)),
        1 => (any::<usize>(), long_text()).prop_map(|(n, text)| Mutation::Long(n, text)),
        1 => (any::<usize>(), 20usize..40, any::<bool>())
            .prop_map(|(n, depth, objects)| Mutation::Nest(n, depth, objects)),
        2 => (nasty_string(), json_value()).prop_map(|(name, value)| Mutation::Add(name, value)),
        1 => json_value().prop_map(Mutation::Replace),
    ]
}

/// The contract's event types by their suffix after `org.closeloop.` (contract §2).
pub const EVENT_KINDS: [&str; 8] = [
    "feedback.received",
    "loop.acknowledged",
    "loop.responded",
    "loop.action_planned",
    "loop.change_made",
    "loop.no_change",
    "loop.reported_back",
    "loop.reopened",
];

/// Plausible data of the event type `kind` (one of [`EVENT_KINDS`]), varied where the contract
/// allows (printable text, no control or format characters: the mutations add those), with
/// personal data in `feedback.received`.
pub fn event_data(kind: &str) -> BoxedStrategy<Value> {
    let by = prop_oneof![Just("pals".to_owned()), "[A-Za-z ]{1,20}"];
    match kind {
        "feedback.received" => (
            "[a-z]{1,6}(/[a-z0-9-]{1,8}){0,3}",
            prop::sample::select(vec!["web", "sms", "paper", "survey", "other"]),
            "\\PC{0,80}",
            prop::collection::btree_map("[a-z]{1,6}", 0i64..8, 1..3),
            prop::collection::vec("[a-z ]{1,12}", 0..4),
            any::<bool>(),
        )
            .prop_map(|(org_unit, channel, story, ratings, themes, consent)| {
                serde_json::json!({
                    "org_unit": org_unit, "channel": channel, "story": story,
                    "ratings": ratings, "themes": themes, "consent_to_publish": consent,
                    "author": {"name": "A. Patient", "contact": "a.patient@example.org"},
                })
            })
            .boxed(),
        "loop.acknowledged" | "loop.reported_back" => (by, "\\PC{0,40}")
            .prop_map(|(by, message)| serde_json::json!({"by": by, "message": message}))
            .boxed(),
        "loop.responded" => (by, "\\PC{1,40}")
            .prop_map(|(by, text)| serde_json::json!({"by": by, "text": text}))
            .boxed(),
        "loop.action_planned" => (by, "\\PC{1,40}")
            .prop_map(|(by, description)| {
                serde_json::json!({
                    "by": by, "description": description,
                    "owner": "ward manager", "due": "2026-12-15",
                })
            })
            .boxed(),
        "loop.change_made" => (by, "\\PC{1,40}")
            .prop_map(|(by, description)| {
                serde_json::json!({
                    "by": by, "description": description,
                    "evidence": {"url": "https://example.org/minutes"},
                })
            })
            .boxed(),
        _ => (by, "\\PC{1,40}")
            .prop_map(|(by, reason)| serde_json::json!({"by": by, "reason": reason}))
            .boxed(),
    }
}
