//! A loop's timeline without personal data, as leaders read it (contract §3 v1.1): the
//! author is left out, and the story and every text addressed to the person (the `message` of
//! acknowledgements and report-backs, the `text` of responses) are redacted as on the public
//! page, with [`redact`] and the author's name.
//!
//! Which fields are personal is decided per event type by an exhaustive `match`, so a new
//! event type cannot reach a leader before someone has said which of its fields are personal.
//! Only `data` is changed; `record` (the stored bytes the hashes cover) stays as it is, its
//! personal part being ciphertext.

use closeloop_domain::EventType;
use closeloop_projections::{REDACTED, redact};
use serde_json::{Map, Value};

/// What a leader's view does with one personal field of an event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Left out: who the person is (`author`: name, contact).
    Omit,
    /// Shown with names, e-mail addresses and phone numbers replaced by `[redacted]`.
    Redact,
}

/// The personal fields of each event type and what a leader's view does with them.
/// `by`, `owner`, `description`, `reason` and `evidence` are not among them: they name staff
/// and say what was done, public by design.
fn personal_fields(event_type: EventType) -> &'static [(&'static str, Treatment)] {
    match event_type {
        EventType::FeedbackReceived => &[("author", Treatment::Omit), ("story", Treatment::Redact)],
        EventType::Acknowledged | EventType::ReportedBack => &[("message", Treatment::Redact)],
        EventType::Responded => &[("text", Treatment::Redact)],
        EventType::StoryApproved => &[("story", Treatment::Redact)],
        EventType::Erased
        | EventType::ActionPlanned
        | EventType::ChangeMade
        | EventType::NoChange
        | EventType::Reopened => &[],
    }
}

/// Takes the personal data out of a timeline: lines in the `GET /v1/events` format, the
/// loop's events in order. A line whose type this service does not know keeps none of its data.
pub(crate) fn withhold(timeline: &mut [Value]) {
    let author_name = author_name(timeline);
    for line in timeline.iter_mut() {
        let event_type = line
            .get("type")
            .and_then(Value::as_str)
            .and_then(EventType::parse);
        let Some(data) = line.get_mut("data").and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(event_type) = event_type else {
            *data = Map::new();
            continue;
        };
        for &(field, treatment) in personal_fields(event_type) {
            match treatment {
                Treatment::Omit => {
                    data.remove(field);
                }
                Treatment::Redact => {
                    if let Some(value) = data.get_mut(field) {
                        *value = redacted(value, author_name.as_deref());
                    }
                }
            }
        }
    }
}

/// The author's name from the loop's `feedback.received` line, when it has one.
fn author_name(timeline: &[Value]) -> Option<String> {
    timeline
        .iter()
        .find(|line| {
            line.get("type").and_then(Value::as_str) == Some(EventType::FeedbackReceived.as_str())
        })
        .and_then(|line| line.pointer("/data/author/name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A personal text redacted; anything else in its place (it should be text) is withheld whole.
fn redacted(value: &Value, author_name: Option<&str>) -> Value {
    match value {
        Value::String(text) => Value::String(redact(text, author_name)),
        Value::Null => Value::Null,
        _ => Value::String(REDACTED.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn line(event_type: EventType, data: Value) -> Value {
        json!({"type": event_type.as_str(), "data": data, "record": "cmVjb3Jk", "by": "kept"})
    }

    #[test]
    fn authors_go_and_personal_texts_are_redacted() {
        let mut timeline = vec![
            line(
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx/a", "channel": "web",
                       "author": {"name": "Zoe Brown", "contact": "zoe@example.org"},
                       "story": "Zoe Brown here, call 07700 900123. The ward was noisy."}),
            ),
            line(
                EventType::Acknowledged,
                json!({"by": "pals", "message": "Dear Zoe, thank you. Email pals@example.nhs.uk"}),
            ),
            line(
                EventType::Responded,
                json!({"by": "ward manager", "text": "Ms Brown, we are fitting soft-close bins."}),
            ),
            line(
                EventType::ChangeMade,
                json!({"by": "estates", "description": "Soft-close bins fitted"}),
            ),
            line(
                EventType::ReportedBack,
                json!({"by": "pals", "message": "Zoe, the bins are fitted.", "channel": "email"}),
            ),
        ];
        withhold(&mut timeline);
        let received = &timeline[0]["data"];
        assert!(received.get("author").is_none(), "{received}");
        assert_eq!(
            received["story"],
            "[redacted] here, call [redacted]. The ward was noisy."
        );
        assert_eq!(received["org_unit"], "rxx/a");
        assert_eq!(
            timeline[1]["data"]["message"],
            "Dear [redacted], thank you. Email [redacted]"
        );
        assert_eq!(
            timeline[2]["data"]["text"],
            "Ms [redacted], we are fitting soft-close bins."
        );
        assert_eq!(timeline[3]["data"]["description"], "Soft-close bins fitted");
        assert_eq!(
            timeline[4]["data"]["message"],
            "[redacted], the bins are fitted."
        );
        assert_eq!(timeline[4]["data"]["by"], "pals");
        // The record stays: its personal part is ciphertext, and the hashes cover it.
        assert!(timeline.iter().all(|line| line["record"] == "cmVjb3Jk"));
        let shown = serde_json::to_string(&timeline).unwrap();
        for personal in [
            "Zoe",
            "Brown",
            "07700",
            "zoe@example.org",
            "pals@example.nhs.uk",
        ] {
            assert!(!shown.contains(personal), "{personal} shown: {shown}");
        }
    }

    #[test]
    fn what_is_not_text_or_not_known_is_withheld_whole() {
        let mut timeline = vec![
            line(
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx/a", "story": {"nested": "Zoe Brown"}}),
            ),
            json!({"type": "org.closeloop.loop.something_new", "data": {"note": "Zoe Brown"}}),
        ];
        withhold(&mut timeline);
        assert_eq!(timeline[0]["data"]["story"], REDACTED);
        assert_eq!(timeline[1]["data"], json!({}));
    }

    #[test]
    fn an_anonymous_or_erased_author_leaves_the_patterns() {
        let mut timeline = vec![line(
            EventType::FeedbackReceived,
            json!({"author": "[erased]", "story": "Ring me on 07700 900123 about bay 4 at 10:30."}),
        )];
        withhold(&mut timeline);
        assert_eq!(
            timeline[0]["data"]["story"],
            "Ring me on [redacted] about bay 4 at 10:30."
        );
    }
}
