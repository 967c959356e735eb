//! Decoding one NATS message, a CloudEvents 1.0 event, into the domain [`Command`] the HTTP API
//! also records (contract §2).
//!
//! Two content modes are understood:
//!
//! - **structured** (the contract's mode, the default): the payload is the whole event as a JSON
//!   object, `{"specversion":"1.0","id","source","type","subject"?,"time"?,"datacontenttype"?,
//!   "data":{…}}`. Extension attributes are allowed and ignored; `data_base64` is not supported.
//! - **binary** (an extension): when the message has a `ce-specversion` header, the attributes
//!   come from the `ce-id`, `ce-source`, `ce-type`, `ce-subject` and `ce-time` headers (names
//!   compared case-insensitively) and the payload is the event's `data` object.
//!
//! Nothing here does I/O or reads a clock: the caller passes the time the message was received,
//! which stands in for an absent `time` attribute and bounds a present one (not before
//! [`Limits::earliest`], at most [`Limits::max_future`] after it). The data goes through the
//! same [`Limits`] as an HTTP request's, and sources beginning `urn:closeloop:` are refused:
//! they name Closeloop's own writers (contract §2, v1.1). Every refusal is a [`DecodeError`] whose
//! [`code`](DecodeError::code) and [`detail`](DecodeError::detail) go into the dead letter's
//! `Closeloop-Error` and `Closeloop-Error-Detail` headers.

use closeloop_domain::event::EVENT_TYPE_PREFIX;
use closeloop_domain::{Command, EventType, Limits, LoopEvent, LoopId, Rejection};
use closeloop_store::RequestDigest;
use closeloop_store::write::Origin;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The only CloudEvents `specversion` accepted.
pub const SPEC_VERSION: &str = "1.0";

/// Longest accepted `id` or `source`, in characters.
pub const ATTRIBUTE_MAX_LEN: usize = 256;

/// Longest [`DecodeError::detail`], in characters, so that it fits comfortably in a header.
pub const DETAIL_MAX_LEN: usize = 300;

/// The prefix of the sources Closeloop's own writers use (e.g. `urn:closeloop:api`); a message
/// from a publisher may not claim one (contract §2, v1.1). Compared case-insensitively, as URN
/// namespace identifiers are.
pub const RESERVED_SOURCE_PREFIX: &str = "urn:closeloop:";

/// The UUID namespace of [`derived_loop_id`]: `80e0da4b-db7f-5606-9edc-7ef6fcc2b855`, which is
/// itself the UUID v5 of the name `urn:closeloop:cloudevents:loop-id` in the RFC 9562 URL
/// namespace (`6ba7b811-9dad-11d1-80b4-00c04fd430c8`).
pub const LOOP_ID_NAMESPACE: Uuid = Uuid::from_u128(0x80e0_da4b_db7f_5606_9edc_7ef6_fcc2_b855);

/// The event types a publisher may use, for error messages.
const TYPES_HINT: &str = "org.closeloop.feedback.received or org.closeloop.loop.<acknowledged|responded|action_planned|change_made|no_change|reported_back|reopened>";

/// How long an echoed attribute value may be in an error message, in characters.
const ECHO_MAX_LEN: usize = 64;

/// A decoded message: the command to record and the idempotency key of its event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// What to record: the loop (the `subject`, or derived for new feedback), the event time
    /// (`time`, or when the message was received) and the event with its data.
    pub command: Command,
    /// Who says so: the CloudEvents `source` and `id`. A second message with the same pair is a
    /// duplicate.
    pub origin: Origin,
}

/// Why a message cannot be decoded into a command. It is dead-lettered with
/// [`code`](DecodeError::code) in `Closeloop-Error` and [`detail`](DecodeError::detail) in
/// `Closeloop-Error-Detail`.
///
/// The messages name what is wrong and how to fix it, and never quote story text or author
/// details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `invalid_json`: the payload is not JSON (in binary mode: the data is not JSON).
    #[error("{0}")]
    InvalidJson(String),
    /// `invalid_cloudevent`: not a CloudEvents 1.0 event Closeloop can read: a required
    /// attribute is missing or ill-typed, `source` begins with `urn:closeloop:`, `time` is not
    /// RFC 3339 or outside the window of [`Limits`], `subject` is not a loop id or is missing on
    /// a follow-up event, `data` is missing or not a JSON object, or the data is not
    /// `application/json`.
    #[error("{0}")]
    InvalidCloudEvent(String),
    /// `unknown_type`: `type` is not one of the eight `org.closeloop.*` event types.
    #[error("{0}")]
    UnknownType(String),
    /// `invalid_data`: the event's `data` was refused by the domain: a field is missing,
    /// ill-typed or out of range. Holds the domain's explanation.
    #[error("{0}")]
    InvalidData(String),
}

impl DecodeError {
    /// The contract's code for this error: `invalid_json`, `invalid_cloudevent`,
    /// `unknown_type` or `invalid_data`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::InvalidCloudEvent(_) => "invalid_cloudevent",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::InvalidData(_) => "invalid_data",
        }
    }

    /// The explanation as a header value: one line, no control characters, at most
    /// [`DETAIL_MAX_LEN`] characters (longer ones end in `...`).
    #[must_use]
    pub fn detail(&self) -> String {
        let line: String = self
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if line.chars().count() <= DETAIL_MAX_LEN {
            return line;
        }
        let mut cut: String = line.chars().take(DETAIL_MAX_LEN - 3).collect();
        cut.push_str("...");
        cut
    }
}

/// Decodes one NATS message into the command it asks for, under the default [`Limits`].
///
/// `headers` are the message's headers as (name, value) pairs; `received_at` is when the
/// message was received (its JetStream timestamp, or now), used when the event has no `time`.
/// With a `ce-specversion` header the message is read in binary mode, otherwise in structured
/// mode (see the [module docs](self)).
///
/// # Errors
/// A [`DecodeError`] saying what is wrong with the message; checks run in the order bytes,
/// envelope, type, data, so the first problem a publisher has to fix is the one reported.
pub fn decode(
    payload: &[u8],
    headers: &[(&str, &str)],
    received_at: Timestamp,
) -> Result<Decoded, DecodeError> {
    decode_with(payload, headers, received_at, &Limits::DEFAULT)
}

/// Decodes one NATS message as [`decode`] does, under `limits`: the window for the `time`
/// attribute and the bounds on the data.
///
/// # Errors
/// As [`decode`].
pub fn decode_with(
    payload: &[u8],
    headers: &[(&str, &str)],
    received_at: Timestamp,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let context = Context {
        received_at,
        limits,
    };
    if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("ce-specversion"))
    {
        decode_binary(payload, headers, context)
    } else {
        decode_structured(payload, context)
    }
}

/// What decoding compares a message with: when it arrived, and the limits.
#[derive(Debug, Clone, Copy)]
struct Context<'l> {
    received_at: Timestamp,
    limits: &'l Limits,
}

/// The loop id of an `org.closeloop.feedback.received` event that has no `subject`: the same
/// (`source`, `id`) pair always gives the same loop, so a redelivered message cannot open a
/// second one.
///
/// Publishers who want to know the id in advance compute it like this: take the name
/// `<L>:<source><id>`, where `<L>` is the length of `source` in UTF-8 bytes written in decimal
/// (the length prefix keeps (`a`, `bc`) and (`ab`, `c`) apart); take its UUID v5 in the
/// namespace [`LOOP_ID_NAMESPACE`] (`80e0da4b-db7f-5606-9edc-7ef6fcc2b855`); the loop id is
/// `fb-` followed by the UUID's 32 lowercase hex digits without hyphens. In Python:
///
/// ```text
/// "fb-" + uuid.uuid5(uuid.UUID("80e0da4b-db7f-5606-9edc-7ef6fcc2b855"),
///                    f"{len(source.encode())}:{source}{id}").hex
/// ```
///
/// For source `urn:trust:rxx:fft-kiosk` and id `fft-000123` that is
/// `fb-330fa50032075c75853d94f6bb9e1054`.
#[must_use]
pub fn derived_loop_id(source: &str, id: &str) -> LoopId {
    let name = format!("{}:{source}{id}", source.len());
    let uuid = Uuid::new_v5(&LOOP_ID_NAMESPACE, name.as_bytes());
    LoopId::parse(&format!("fb-{}", uuid.simple())).expect("a UUID makes a valid loop id")
}

/// Where the attributes came from, so error messages name them as the publisher wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Structured,
    Binary,
}

impl Mode {
    /// How the publisher wrote the attribute `name`: `id` in structured mode, the header
    /// `ce-id` in binary mode.
    fn label(self, name: &str) -> String {
        match self {
            Mode::Structured => name.to_owned(),
            Mode::Binary => format!("header ce-{name}"),
        }
    }
}

/// The CloudEvents attributes Closeloop reads, as found, before any checks.
#[derive(Debug, Default)]
struct Attributes<'a> {
    specversion: Option<&'a str>,
    id: Option<&'a str>,
    source: Option<&'a str>,
    event_type: Option<&'a str>,
    subject: Option<&'a str>,
    time: Option<&'a str>,
}

/// The checked attributes.
#[derive(Debug)]
struct Envelope<'a> {
    id: &'a str,
    source: &'a str,
    event_type: &'a str,
    subject: Option<LoopId>,
    at: Timestamp,
}

fn decode_structured(payload: &[u8], context: Context<'_>) -> Result<Decoded, DecodeError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::InvalidJson(
            "the message is empty; publish one CloudEvent as a JSON object".to_owned(),
        ));
    }
    // The whole event is read into a map: the attributes are a handful of short strings and
    // `data` has to become a `Value` for the domain anyway, so nothing is parsed twice.
    let value: Value = serde_json::from_slice(payload).map_err(|err| {
        DecodeError::InvalidJson(format!(
            "the message is not valid JSON ({err}); publish one CloudEvent as a UTF-8 JSON object"
        ))
    })?;
    let mut event = match value {
        Value::Object(event) => event,
        Value::Array(_) => {
            return Err(invalid_cloudevent(
                "the message is a JSON array, but batches are not supported; publish one CloudEvent object per message",
            ));
        }
        other => {
            return Err(invalid_cloudevent(format!(
                "the message is {}, not a CloudEvent; publish a JSON object with specversion, id, source, type and data",
                kind(&other)
            )));
        }
    };
    let data = event.remove("data");
    let has_data_base64 = event.contains_key("data_base64");

    let attributes = Attributes {
        specversion: string_attribute(&event, "specversion")?,
        id: string_attribute(&event, "id")?,
        source: string_attribute(&event, "source")?,
        event_type: string_attribute(&event, "type")?,
        subject: string_attribute(&event, "subject")?,
        time: string_attribute(&event, "time")?,
    };
    let envelope = check_envelope(Mode::Structured, &attributes, context)?;

    if let Some(content_type) = string_attribute(&event, "datacontenttype")?
        && !is_json_media_type(content_type)
    {
        return Err(invalid_cloudevent(format!(
            "datacontenttype is {}, but Closeloop reads only JSON data; set it to application/json or leave it out",
            echo(content_type)
        )));
    }
    if has_data_base64 {
        return Err(invalid_cloudevent(
            "data_base64 is not supported; put the event's fields as a JSON object in data",
        ));
    }
    let data = match data {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => {
            return Err(invalid_cloudevent(format!(
                "data is missing; put the fields of {} in a JSON object under data",
                echo(envelope.event_type)
            )));
        }
        Some(other) => {
            return Err(invalid_cloudevent(format!(
                "data must be a JSON object holding the event's fields, got {}",
                kind(&other)
            )));
        }
    };
    finish(envelope, data, context.limits)
}

fn decode_binary(
    payload: &[u8],
    headers: &[(&str, &str)],
    context: Context<'_>,
) -> Result<Decoded, DecodeError> {
    let attributes = Attributes {
        specversion: header(headers, "ce-specversion")?,
        id: header(headers, "ce-id")?,
        source: header(headers, "ce-source")?,
        event_type: header(headers, "ce-type")?,
        subject: header(headers, "ce-subject")?,
        time: header(headers, "ce-time")?,
    };
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::InvalidJson(
            "the payload is empty; in binary mode (header ce-specversion) it must be the event's data as a JSON object".to_owned(),
        ));
    }
    let data: Value = serde_json::from_slice(payload).map_err(|err| {
        DecodeError::InvalidJson(format!(
            "the payload is not valid JSON ({err}); in binary mode (header ce-specversion) it must be the event's data as a UTF-8 JSON object"
        ))
    })?;
    let envelope = check_envelope(Mode::Binary, &attributes, context)?;

    for name in ["Content-Type", "ce-datacontenttype"] {
        if let Some(content_type) = header(headers, name)?
            && !is_json_media_type(content_type)
        {
            return Err(invalid_cloudevent(format!(
                "header {name} is {}, but in binary mode the payload must be the event's data as application/json; set it to application/json or leave it out",
                echo(content_type)
            )));
        }
    }
    let Value::Object(data) = data else {
        return Err(invalid_cloudevent(format!(
            "in binary mode the payload must be the event's data as a JSON object, got {}",
            kind(&data)
        )));
    };
    finish(envelope, data, context.limits)
}

/// Checks the attributes every event has, in the order a publisher would fix them.
fn check_envelope<'a>(
    mode: Mode,
    attributes: &Attributes<'a>,
    context: Context<'_>,
) -> Result<Envelope<'a>, DecodeError> {
    match attributes.specversion {
        None => {
            return Err(invalid_cloudevent(
                "specversion is missing, so this is not a CloudEvent; add \"specversion\": \"1.0\"",
            ));
        }
        Some(SPEC_VERSION) => {}
        Some(other) => {
            return Err(invalid_cloudevent(format!(
                "{} is {}; only CloudEvents 1.0 is supported, so set it to \"1.0\"",
                mode.label("specversion"),
                echo(other)
            )));
        }
    }
    let id = identifier(
        mode,
        "id",
        attributes.id,
        "give each event an id that is unique within its source",
    )?;
    let source = identifier(
        mode,
        "source",
        attributes.source,
        "set it to a URI naming the publisher, e.g. urn:trust:rxx:fft-kiosk",
    )?;
    if source
        .get(..RESERVED_SOURCE_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RESERVED_SOURCE_PREFIX))
    {
        return Err(invalid_cloudevent(format!(
            "{} {} begins with {RESERVED_SOURCE_PREFIX}, which names Closeloop's own writers; use a URI naming the publisher, e.g. urn:trust:rxx:fft-kiosk",
            mode.label("source"),
            echo(source)
        )));
    }
    let event_type = match attributes.event_type {
        Some(raw) if !raw.trim().is_empty() => raw,
        _ => {
            return Err(invalid_cloudevent(format!(
                "{} is missing or empty; set it to {TYPES_HINT}",
                mode.label("type")
            )));
        }
    };
    let at = match attributes.time {
        None => context.received_at,
        Some(raw) => {
            let at = raw.parse::<Timestamp>().map_err(|_| {
                invalid_cloudevent(format!(
                    "{} {} is not an RFC 3339 timestamp; write it like \"2026-11-27T09:30:00Z\" or leave it out",
                    mode.label("time"),
                    echo(raw)
                ))
            })?;
            // A time in the future would keep the event out of every report until it came;
            // one before 2000 is a typo. Both are refused here, before the data is looked at.
            context
                .limits
                .check_time(at, context.received_at)
                .map_err(|out| {
                    invalid_cloudevent(
                        out.sentence(&mode.label("time"), "when the message reached Closeloop"),
                    )
                })?;
            at
        }
    };
    let subject = match attributes.subject {
        None => None,
        Some(raw) => Some(LoopId::parse(raw).map_err(|rejection| {
            invalid_cloudevent(format!(
                "{} must be the loop id, but it is not valid: {rejection}",
                mode.label("subject")
            ))
        })?),
    };
    Ok(Envelope {
        id,
        source,
        event_type,
        subject,
        at,
    })
}

/// Turns checked attributes and a data object into the command: type, then loop, then data.
fn finish(
    envelope: Envelope<'_>,
    data: Map<String, Value>,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let Some(event_type) = EventType::parse(envelope.event_type) else {
        let known_prefix = envelope.event_type.starts_with(EVENT_TYPE_PREFIX);
        return Err(DecodeError::UnknownType(format!(
            "type {} is not {}; use {TYPES_HINT}",
            echo(envelope.event_type),
            if known_prefix {
                "one of the eight Closeloop event types"
            } else {
                "a Closeloop event type"
            },
        )));
    };
    if event_type.recorded_by_closeloop_only() {
        return Err(DecodeError::UnknownType(format!(
            "type {} is recorded by Closeloop itself, through its HTTP API (erasures by an admin, story approvals by staff); publishers cannot send it",
            echo(envelope.event_type)
        )));
    }
    let loop_id = match envelope.subject {
        Some(loop_id) => loop_id,
        None if event_type == EventType::FeedbackReceived => {
            derived_loop_id(envelope.source, envelope.id)
        }
        None => {
            return Err(invalid_cloudevent(format!(
                "subject must name the loop that this {event_type} event is about; only {} may leave it out",
                EventType::FeedbackReceived
            )));
        }
    };
    let data = Value::Object(data);
    // The (source, id) is bound to what it says — type, subject and data, compared as JSON —
    // so that an id reused for another event is refused (`id_reused`) instead of being taken
    // for a redelivery. The time is left out: a redelivered message without `time` gets a new
    // receive time and is still the same event.
    let request = RequestDigest::of(&[event_type.as_str(), loop_id.as_str()], &data);
    let payload = LoopEvent::from_data_with(event_type, data, limits).map_err(invalid_data)?;
    Ok(Decoded {
        command: Command {
            loop_id,
            at: envelope.at,
            payload,
        },
        origin: Origin {
            source: envelope.source.to_owned(),
            event_id: envelope.id.to_owned(),
            request: Some(request),
            // A NATS publisher is known by its source: that is who acted.
            actor: Some(envelope.source.to_owned()),
        },
    })
}

/// An optional string attribute of a structured event; JSON `null` counts as absent.
fn string_attribute<'a>(
    event: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, DecodeError> {
    match event.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(other) => Err(invalid_cloudevent(format!(
            "{name} must be a string, got {}",
            kind(other)
        ))),
    }
}

/// The value of a header, by case-insensitive name, without surrounding whitespace. A header
/// that is repeated with different values is refused rather than guessed at.
fn header<'h>(headers: &[(&str, &'h str)], name: &str) -> Result<Option<&'h str>, DecodeError> {
    let mut found: Option<&'h str> = None;
    for (header_name, value) in headers {
        if !header_name.eq_ignore_ascii_case(name) {
            continue;
        }
        let value = value.trim();
        match found {
            Some(previous) if previous != value => {
                return Err(invalid_cloudevent(format!(
                    "header {name} is given more than once with different values; send it once"
                )));
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

/// Checks `id` or `source`: present, non-empty, at most [`ATTRIBUTE_MAX_LEN`] characters, no
/// control characters.
fn identifier<'a>(
    mode: Mode,
    name: &str,
    value: Option<&'a str>,
    hint: &str,
) -> Result<&'a str, DecodeError> {
    let label = mode.label(name);
    let Some(value) = value else {
        return Err(invalid_cloudevent(format!("{label} is missing; {hint}")));
    };
    if value.trim().is_empty() {
        return Err(invalid_cloudevent(format!("{label} is empty; {hint}")));
    }
    let len = value.chars().count();
    if len > ATTRIBUTE_MAX_LEN {
        return Err(invalid_cloudevent(format!(
            "{label} is {len} characters long; the limit is {ATTRIBUTE_MAX_LEN}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid_cloudevent(format!(
            "{label} contains a control character; use printable text only"
        )));
    }
    Ok(value)
}

/// Whether a media type is `application/json`, possibly with parameters such as
/// `; charset=utf-8`.
fn is_json_media_type(raw: &str) -> bool {
    let essence = raw.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn invalid_cloudevent(detail: impl Into<String>) -> DecodeError {
    DecodeError::InvalidCloudEvent(detail.into())
}

/// The domain's explanation, minus any string value it quotes: serde describes a string where
/// an object was expected as `string "…"`, and that string could be a person's name.
fn invalid_data(rejection: Rejection) -> DecodeError {
    DecodeError::InvalidData(redact_quoted_strings(&rejection.to_string()))
}

/// Replaces every `string "…"` (serde's description of an unexpected string value, with
/// Rust-escaped contents) by `a string`.
fn redact_quoted_strings(message: &str) -> String {
    const MARKER: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(MARKER) {
        out.push_str(&rest[..start]);
        let quoted = &rest[start + MARKER.len()..];
        let mut escaped = false;
        let mut end = None;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        out.push_str("a string");
        // An unterminated quote runs to the end of the message: drop it all.
        rest = end.map_or("", |end| &quoted[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// An attribute value quoted for an error message, cut to [`ECHO_MAX_LEN`] characters.
fn echo(value: &str) -> String {
    if value.chars().count() <= ECHO_MAX_LEN {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(ECHO_MAX_LEN).collect();
        format!("{cut:?}...")
    }
}

/// What kind of JSON value this is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_documented_v5_of_its_urn() {
        let derived = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:closeloop:cloudevents:loop-id");
        assert_eq!(derived, LOOP_ID_NAMESPACE);
        assert_eq!(
            LOOP_ID_NAMESPACE.to_string(),
            "80e0da4b-db7f-5606-9edc-7ef6fcc2b855"
        );
    }

    #[test]
    fn quoted_strings_are_redacted() {
        let cases = [
            (
                r#"data is not valid: invalid type: string "Jane Doe", expected struct Author"#,
                "data is not valid: invalid type: a string, expected struct Author",
            ),
            (
                r#"invalid type: string "say \"hi\" x", expected a map and string "b""#,
                "invalid type: a string, expected a map and a string",
            ),
            (r#"cut string "unterminated"#, "cut a string"),
            (
                "unknown variant `fax`, expected one of `web`",
                "unknown variant `fax`, expected one of `web`",
            ),
            ("by must not be empty", "by must not be empty"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_quoted_strings(input), expected, "{input}");
        }
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/jsonx",
            "application/cloudevents+json",
            "application/xml; x=application/json",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn echo_quotes_and_cuts() {
        assert_eq!(echo("0.3"), "\"0.3\"");
        assert_eq!(echo("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(200);
        let echoed = echo(&long);
        assert!(echoed.ends_with("\"..."), "{echoed}");
        assert_eq!(echoed.len(), ECHO_MAX_LEN + 5);
    }

    #[test]
    fn detail_is_one_short_line() {
        let err = DecodeError::InvalidData(format!("first\nsecond\r{}", "y".repeat(500)));
        let detail = err.detail();
        assert!(!detail.chars().any(char::is_control), "{detail}");
        assert_eq!(detail.chars().count(), DETAIL_MAX_LEN);
        assert!(detail.starts_with("first second "), "{detail}");
        assert!(detail.ends_with("..."), "{detail}");
        let short = DecodeError::UnknownType("type \"x\" is unknown".to_owned());
        assert_eq!(short.detail(), short.to_string());
    }

    #[test]
    fn repeated_headers_must_agree() {
        let headers = [("ce-id", "a"), ("CE-ID", " a ")];
        assert_eq!(header(&headers, "ce-id"), Ok(Some("a")));
        let headers = [("ce-id", "a"), ("Ce-Id", "b")];
        let err = header(&headers, "ce-id").unwrap_err();
        assert_eq!(err.code(), "invalid_cloudevent");
        assert!(err.detail().contains("more than once"), "{err}");
        assert_eq!(header(&headers, "ce-source"), Ok(None));
    }
}
