//! The checks an event's data passes before it is accepted: its shape (every known field has
//! its type), then the [`Limits`] on every field.
//!
//! The shape is checked by hand, before serde sees the data, so that a publisher reads a plain
//! sentence naming the field and what it should be, never a library's message. Messages never
//! quote free text (it may be personal data); they quote only short names and times.

use std::io;

use serde_json::{Map, Value};

use crate::event::{Author, Extra, LoopEvent};
use crate::{Channel, EventType, Limits, OrgUnit, Rejection};

/// How a known field may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// It must be there, and not `null`.
    Required,
    /// It may be absent or `null`.
    Optional,
    /// It may be absent, but `null` is not a value it takes.
    Defaulted,
}

/// What JSON a known field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Timestamp,
    Date,
    Channel,
    OrgUnit,
    Ratings,
    Tags,
    Author,
    Bool,
    Any,
}

use Kind as K;
use Presence::{Defaulted, Optional, Required};

/// The known fields of each event type, in the order their problems are reported.
fn fields(event_type: EventType) -> &'static [(&'static str, Presence, Kind)] {
    match event_type {
        EventType::FeedbackReceived => &[
            ("org_unit", Required, K::OrgUnit),
            ("channel", Required, K::Channel),
            ("received_at", Optional, K::Timestamp),
            ("story", Optional, K::Text),
            ("ratings", Defaulted, K::Ratings),
            ("themes", Defaulted, K::Tags),
            ("seldom_heard", Defaulted, K::Tags),
            ("author", Optional, K::Author),
            ("consent_to_publish", Defaulted, K::Bool),
            ("language", Optional, K::Text),
            ("public_id", Optional, K::Text),
        ],
        EventType::Acknowledged => &[("by", Required, K::Text), ("message", Optional, K::Text)],
        EventType::Responded => &[("by", Required, K::Text), ("text", Required, K::Text)],
        EventType::ActionPlanned => &[
            ("by", Required, K::Text),
            ("description", Required, K::Text),
            ("owner", Optional, K::Text),
            ("due", Optional, K::Date),
        ],
        EventType::ChangeMade => &[
            ("by", Required, K::Text),
            ("description", Required, K::Text),
            ("change_id", Optional, K::Text),
            ("evidence", Optional, K::Any),
        ],
        EventType::NoChange | EventType::Reopened => {
            &[("by", Required, K::Text), ("reason", Required, K::Text)]
        }
        EventType::ReportedBack => &[
            ("by", Required, K::Text),
            ("message", Required, K::Text),
            ("channel", Optional, K::Channel),
        ],
        EventType::Erased => &[("by", Required, K::Text), ("matched_by", Optional, K::Text)],
        EventType::StoryApproved => &[("by", Required, K::Text), ("story", Optional, K::Text)],
    }
}

/// The known fields of `author`.
const AUTHOR_FIELDS: [(&str, Presence, Kind); 3] = [
    ("anonymous", Defaulted, K::Bool),
    ("name", Optional, K::Text),
    ("contact", Optional, K::Text),
];

/// Checks the raw data of `event_type` before it is parsed: nesting depth, then each known
/// field's presence and type.
pub(crate) fn check_shape(
    event_type: EventType,
    data: &Map<String, Value>,
    limits: &Limits,
) -> Result<(), Rejection> {
    for (name, value) in data {
        if deeper_than(value, limits.max_depth.saturating_sub(1)) {
            return Err(Rejection::invalid(format!(
                "{} is nested too deeply: data may hold objects and arrays at most {} levels deep, the data object itself being the first",
                label(name),
                limits.max_depth
            )));
        }
    }
    check_fields(event_type, data, fields(event_type), "")
}

fn check_fields(
    event_type: EventType,
    data: &Map<String, Value>,
    fields: &[(&str, Presence, Kind)],
    prefix: &str,
) -> Result<(), Rejection> {
    for &(name, presence, kind) in fields {
        let field = format!("{prefix}{name}");
        match (data.get(name), presence) {
            (None | Some(Value::Null), Required) => {
                return Err(Rejection::invalid(format!(
                    "{field} is missing; {event_type} needs it"
                )));
            }
            (None | Some(Value::Null), Optional) | (None, Defaulted) => {}
            (Some(value), _) => check_kind(event_type, &field, kind, value)?,
        }
    }
    Ok(())
}

fn check_kind(
    event_type: EventType,
    field: &str,
    kind: Kind,
    value: &Value,
) -> Result<(), Rejection> {
    let got = kind_of(value);
    let wrong = |expected: &str| {
        Err(Rejection::invalid(format!(
            "{field} must be {expected}, got {got}"
        )))
    };
    match (kind, value) {
        (K::Any, _) | (K::Text, Value::String(_)) | (K::Bool, Value::Bool(_)) => Ok(()),
        (K::Text, _) => wrong("text (a JSON string)"),
        (K::Bool, _) => wrong("true or false"),
        (K::Timestamp, Value::String(raw)) if raw.parse::<jiff::Timestamp>().is_ok() => Ok(()),
        (K::Timestamp, Value::String(_)) => Err(Rejection::invalid(format!(
            "{field} must be an RFC 3339 time with its offset, e.g. 2026-11-27T09:30:00Z or 2026-11-27T10:30:00+01:00"
        ))),
        (K::Timestamp, _) => wrong("an RFC 3339 time such as 2026-11-27T09:30:00Z"),
        (K::Date, Value::String(raw)) if raw.parse::<jiff::civil::Date>().is_ok() => Ok(()),
        (K::Date, Value::String(_)) => Err(Rejection::invalid(format!(
            "{field} must be a real calendar date written YYYY-MM-DD, e.g. 2027-01-15"
        ))),
        (K::Date, _) => wrong("a date written YYYY-MM-DD, e.g. 2027-01-15"),
        (K::Channel, Value::String(raw)) => Channel::parse(raw).map(drop),
        (K::Channel, _) => wrong(&format!("one of: {}", channel_names())),
        (K::OrgUnit, Value::String(raw)) => OrgUnit::parse(raw).map(drop),
        (K::OrgUnit, _) => wrong("a path such as \"rxx/site-a/ward-7\" (a JSON string)"),
        (K::Ratings, Value::Object(ratings)) => {
            for (name, rating) in ratings {
                if !rating.is_number() {
                    return Err(Rejection::invalid(format!(
                        "{field}.{} must be a number, got {}",
                        label(name),
                        kind_of(rating)
                    )));
                }
            }
            Ok(())
        }
        (K::Ratings, _) => wrong("an object of numbers, e.g. {\"fft\": 2}"),
        (K::Tags, Value::Array(tags)) => {
            for (index, tag) in tags.iter().enumerate() {
                if !tag.is_string() {
                    return Err(Rejection::invalid(format!(
                        "{field}[{index}] must be text (a JSON string), got {}",
                        kind_of(tag)
                    )));
                }
            }
            Ok(())
        }
        (K::Tags, _) => wrong("an array of text, e.g. [\"noise\"]"),
        (K::Author, Value::Object(author)) => {
            check_fields(event_type, author, &AUTHOR_FIELDS, "author.")
        }
        (K::Author, _) => {
            wrong("an object: {\"anonymous\": true}, or {\"name\": ..., \"contact\": ...}")
        }
    }
}

/// Checks a parsed event against the limits and the rules serde cannot express.
pub(crate) fn check_event(event: &LoopEvent, limits: &Limits) -> Result<(), Rejection> {
    let text =
        |field: &str, value: &str| check_text(field, value, limits.max_text_bytes, Lines::One);
    let long =
        |field: &str, value: &str| check_text(field, value, limits.max_text_bytes, Lines::Many);
    let by = |value: &str| required(&text, "by", value);
    let extra = match event {
        LoopEvent::FeedbackReceived(d) => {
            let has_story = d.story.as_deref().is_some_and(|s| !s.trim().is_empty());
            if !has_story && d.ratings.is_empty() {
                return Err(Rejection::invalid(
                    "feedback needs a story or at least one rating; neither was given",
                ));
            }
            if let Some(story) = &d.story {
                check_text("story", story, limits.max_story_bytes, Lines::Many)?;
            }
            check_ratings(&d.ratings, limits)?;
            check_tags("themes", &d.themes, limits.max_themes, limits)?;
            check_tags(
                "seldom_heard",
                &d.seldom_heard,
                limits.max_seldom_heard,
                limits,
            )?;
            if let Some(author) = &d.author {
                check_author(author, limits)?;
            }
            if let Some(language) = &d.language {
                text("language", language)?;
            }
            &d.extra
        }
        LoopEvent::Acknowledged(d) => {
            by(&d.by)?;
            if let Some(message) = &d.message {
                long("message", message)?;
            }
            &d.extra
        }
        LoopEvent::Responded(d) => {
            by(&d.by)?;
            required(&long, "text", &d.text)?;
            &d.extra
        }
        LoopEvent::ActionPlanned(d) => {
            by(&d.by)?;
            required(&long, "description", &d.description)?;
            if let Some(owner) = &d.owner {
                text("owner", owner)?;
            }
            &d.extra
        }
        LoopEvent::ChangeMade(d) => {
            by(&d.by)?;
            required(&long, "description", &d.description)?;
            if let Some(change_id) = &d.change_id {
                text("change_id", change_id)?;
            }
            if let Some(evidence) = &d.evidence {
                check_json("evidence", evidence, limits)?;
            }
            &d.extra
        }
        LoopEvent::NoChange(d) => {
            by(&d.by)?;
            required(&long, "reason", &d.reason)?;
            &d.extra
        }
        LoopEvent::ReportedBack(d) => {
            by(&d.by)?;
            required(&long, "message", &d.message)?;
            &d.extra
        }
        LoopEvent::Reopened(d) => {
            by(&d.by)?;
            required(&long, "reason", &d.reason)?;
            &d.extra
        }
        LoopEvent::Erased(d) => {
            by(&d.by)?;
            if let Some(matched_by) = &d.matched_by {
                text("matched_by", matched_by)?;
            }
            &d.extra
        }
        LoopEvent::StoryApproved(d) => {
            by(&d.by)?;
            if let Some(story) = &d.story {
                required(
                    &|field: &str, value: &str| {
                        check_text(field, value, limits.max_story_bytes, Lines::Many)
                    },
                    "story",
                    story,
                )?;
            }
            &d.extra
        }
    };
    check_extra("", extra, limits)
}

/// Required text is not blank, then passes `check`.
fn required(
    check: &impl Fn(&str, &str) -> Result<(), Rejection>,
    field: &str,
    value: &str,
) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(format!("{field} must not be empty")));
    }
    check(field, value)
}

fn check_ratings(
    ratings: &std::collections::BTreeMap<String, serde_json::Number>,
    limits: &Limits,
) -> Result<(), Rejection> {
    check_count("ratings", ratings.len(), limits.max_ratings)?;
    for name in ratings.keys() {
        let field = format!("the rating name {}", label(name));
        if name.trim().is_empty() {
            return Err(Rejection::invalid(format!(
                "ratings has a blank name; rating names are 1 to {} bytes of text",
                limits.max_rating_name_bytes
            )));
        }
        check_text(&field, name, limits.max_rating_name_bytes, Lines::One)?;
    }
    if let Some(fft) = ratings.get("fft")
        && !fft.as_u64().is_some_and(|v| (1..=6).contains(&v))
    {
        return Err(Rejection::invalid(format!(
            "ratings.fft must be a whole number from 1 (very good) to 6 (don't know), got {fft}"
        )));
    }
    Ok(())
}

fn check_tags(field: &str, tags: &[String], max: usize, limits: &Limits) -> Result<(), Rejection> {
    check_count(field, tags.len(), max)?;
    for (index, tag) in tags.iter().enumerate() {
        let entry = format!("{field}[{index}]");
        if tag.trim().is_empty() {
            return Err(Rejection::invalid(format!(
                "{entry} is blank; every entry of {field} must be 1 to {} bytes of text",
                limits.max_tag_bytes
            )));
        }
        check_text(&entry, tag, limits.max_tag_bytes, Lines::One)?;
    }
    Ok(())
}

fn check_author(author: &Author, limits: &Limits) -> Result<(), Rejection> {
    for (field, value) in [
        ("author.name", &author.name),
        ("author.contact", &author.contact),
    ] {
        if let Some(value) = value {
            check_text(field, value, limits.max_text_bytes, Lines::One)?;
        }
    }
    check_extra("author.", &author.extra, limits)
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), Rejection> {
    if count > max {
        return Err(Rejection::invalid(format!(
            "{field} has {count} entries; the limit is {max}"
        )));
    }
    Ok(())
}

/// Each unknown field: its name is one line of text, its value within the text limit.
fn check_extra(prefix: &str, extra: &Extra, limits: &Limits) -> Result<(), Rejection> {
    for (name, value) in extra {
        let field = format!("{prefix}{}", label(name));
        check_text(
            &format!("the name of {field}"),
            name,
            limits.max_text_bytes,
            Lines::One,
        )?;
        check_json(&field, value, limits)?;
    }
    Ok(())
}

/// A JSON value of any shape (`evidence`, an unknown field): a string is measured as text,
/// anything else as its serialised JSON; every string and name inside is checked for
/// characters that do not belong in text.
fn check_json(field: &str, value: &Value, limits: &Limits) -> Result<(), Rejection> {
    let max = limits.max_text_bytes;
    if let Value::String(text) = value {
        return check_text(field, text, max, Lines::Many);
    }
    if json_len_exceeds(value, max) {
        return Err(Rejection::invalid(format!(
            "{field} is over the limit of {max} bytes, measured as JSON"
        )));
    }
    // Walked with a stack, not recursion: the depth limit is checked first, but this must not
    // depend on it.
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) => check_chars(field, text, Lines::Many)?,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (name, item) in map {
                    check_chars(field, name, Lines::One)?;
                    stack.push(item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    Ok(())
}

/// Whether a text field may hold line breaks and tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    /// A name, a tag, an id: one line.
    One,
    /// Free text: line breaks and tabs are fine.
    Many,
}

/// Checks a text's length in bytes and its characters.
pub(crate) fn check_text(
    field: &str,
    value: &str,
    max: usize,
    lines: Lines,
) -> Result<(), Rejection> {
    if value.len() > max {
        return Err(Rejection::invalid(format!(
            "{field} is {} bytes long; the limit is {max}",
            value.len()
        )));
    }
    check_chars(field, value, lines)
}

/// Refuses control characters (all of them in one-line text; all but tab, line feed and
/// carriage return in free text) and the bidirectional override and isolate characters, which
/// make text display differently from what it says.
pub(crate) fn check_chars(field: &str, value: &str, lines: Lines) -> Result<(), Rejection> {
    for c in value.chars() {
        if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            return Err(Rejection::invalid(format!(
                "{field} contains a bidirectional override character (U+{:04X}), which can make text display differently from what it says; remove it",
                u32::from(c)
            )));
        }
        if !c.is_control() {
            continue;
        }
        if matches!(c, '\t' | '\n' | '\r') {
            if lines == Lines::One {
                return Err(Rejection::invalid(format!(
                    "{field} must be a single line, but it contains a tab or line break"
                )));
            }
        } else {
            return Err(Rejection::invalid(format!(
                "{field} contains a control character (U+{:04X}); remove it",
                u32::from(c)
            )));
        }
    }
    Ok(())
}

/// Whether `value` holds objects or arrays nested more than `max` levels deep (a scalar is
/// level 0, an object or array level 1 plus its deepest member). Walked with a stack, so any
/// depth is measured without recursion.
fn deeper_than(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 1_usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(_) | Value::Object(_) if level > max => return true,
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, level + 1))),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    false
}

/// Whether `value` serialises to more than `max` bytes of JSON; stops writing as soon as it
/// does, so a huge value costs no more than the limit.
fn json_len_exceeds(value: &Value, max: usize) -> bool {
    struct Counter {
        len: usize,
        max: usize,
    }
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.len += buf.len();
            if self.len > self.max {
                return Err(io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { len: 0, max };
    // Serialising a `Value` fails only when the writer refuses, i.e. past the limit.
    serde_json::to_writer(&mut counter, value).is_err()
}

/// A field name for a message: as it is when short and plain, else quoted and cut, so that a
/// huge or strange name cannot flood or garble the message.
pub(crate) fn label(name: &str) -> String {
    const MAX: usize = 64;
    let plain = name.len() <= MAX
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if plain {
        name.to_owned()
    } else if name.chars().count() <= MAX {
        format!("{name:?}")
    } else {
        let cut: String = name.chars().take(MAX).collect();
        format!("{cut:?}...")
    }
}

/// What kind of JSON value this is, for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn channel_names() -> String {
    Channel::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
