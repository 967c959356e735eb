//! The eight event types of contract §2, the two Closeloop records itself (`loop.erased`,
//! `loop.story_approved`), their data, and the envelope every stored event has.
//!
//! Each data struct keeps fields it does not know in `extra`, so a publisher's additions are
//! stored and replayed unchanged.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Channel, Limits, OrgUnit, Rejection, check};

/// Unknown fields of an event's data, kept as they came.
pub type Extra = Map<String, Value>;

/// Longest accepted story by default, in bytes ([`Limits::max_story_bytes`]).
pub const STORY_MAX_LEN: usize = Limits::DEFAULT.max_story_bytes;
/// Longest accepted value of any other text field by default, in bytes
/// ([`Limits::max_text_bytes`]).
pub const TEXT_MAX_LEN: usize = Limits::DEFAULT.max_text_bytes;

/// The type of an event: the CloudEvents `type` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// `org.closeloop.feedback.received`
    FeedbackReceived,
    /// `org.closeloop.loop.acknowledged`
    Acknowledged,
    /// `org.closeloop.loop.responded`
    Responded,
    /// `org.closeloop.loop.action_planned`
    ActionPlanned,
    /// `org.closeloop.loop.change_made`
    ChangeMade,
    /// `org.closeloop.loop.no_change`
    NoChange,
    /// `org.closeloop.loop.reported_back`
    ReportedBack,
    /// `org.closeloop.loop.reopened`
    Reopened,
    /// `org.closeloop.loop.erased`: recorded by Closeloop when an admin erases the loop's
    /// personal data (contract §3 v1.1, `POST /v1/erasures`).
    Erased,
    /// `org.closeloop.loop.story_approved`: a staff member approved the story for the public
    /// page (`POST /v1/loops/{id}/story-approvals`).
    StoryApproved,
}

/// The prefix every event type name shares.
pub const EVENT_TYPE_PREFIX: &str = "org.closeloop.";

impl EventType {
    /// Every event type, in the order a loop usually meets them.
    pub const ALL: [EventType; 10] = [
        EventType::FeedbackReceived,
        EventType::Acknowledged,
        EventType::Responded,
        EventType::ActionPlanned,
        EventType::ChangeMade,
        EventType::NoChange,
        EventType::ReportedBack,
        EventType::Reopened,
        EventType::Erased,
        EventType::StoryApproved,
    ];

    /// The short name, e.g. `loop.change_made`, used in outbound subjects.
    #[must_use]
    pub fn suffix(self) -> &'static str {
        match self {
            EventType::FeedbackReceived => "feedback.received",
            EventType::Acknowledged => "loop.acknowledged",
            EventType::Responded => "loop.responded",
            EventType::ActionPlanned => "loop.action_planned",
            EventType::ChangeMade => "loop.change_made",
            EventType::NoChange => "loop.no_change",
            EventType::ReportedBack => "loop.reported_back",
            EventType::Reopened => "loop.reopened",
            EventType::Erased => "loop.erased",
            EventType::StoryApproved => "loop.story_approved",
        }
    }

    /// The full CloudEvents type, e.g. `org.closeloop.loop.change_made`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::FeedbackReceived => "org.closeloop.feedback.received",
            EventType::Acknowledged => "org.closeloop.loop.acknowledged",
            EventType::Responded => "org.closeloop.loop.responded",
            EventType::ActionPlanned => "org.closeloop.loop.action_planned",
            EventType::ChangeMade => "org.closeloop.loop.change_made",
            EventType::NoChange => "org.closeloop.loop.no_change",
            EventType::ReportedBack => "org.closeloop.loop.reported_back",
            EventType::Reopened => "org.closeloop.loop.reopened",
            EventType::Erased => "org.closeloop.loop.erased",
            EventType::StoryApproved => "org.closeloop.loop.story_approved",
        }
    }

    /// Parses a full CloudEvents type name; `None` when it is not one of ours.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        EventType::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// The data fields that hold personal data, kept apart in stored records so they can be
    /// encrypted and erased without touching the rest: who gave the feedback, their story, and
    /// the free text addressed to them. `by`, `owner`, a change's `description` (public by
    /// design as "we did"), `reason` and `evidence` are not personal.
    #[must_use]
    pub fn personal_fields(self) -> &'static [&'static str] {
        match self {
            EventType::FeedbackReceived => &["author", "story"],
            EventType::Acknowledged | EventType::ReportedBack => &["message"],
            EventType::Responded => &["text"],
            EventType::StoryApproved => &["story"],
            _ => &[],
        }
    }

    /// Whether only Closeloop itself records events of this type (through its HTTP API):
    /// publishers on NATS may not, since erasing destroys keys and approving is a staff
    /// decision.
    #[must_use]
    pub fn recorded_by_closeloop_only(self) -> bool {
        matches!(self, EventType::Erased | EventType::StoryApproved)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who gave the feedback: personal data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Author {
    /// The person chose not to give their name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// Their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How to reach them (e-mail address, phone number, postal address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.feedback.received`: a piece of feedback was logged. Opens a loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackReceived {
    /// Where the feedback is about.
    pub org_unit: OrgUnit,
    /// How it arrived.
    pub channel: Channel,
    /// When it was received; `decide` fills it in from the event time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
    /// The person's own words: personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story: Option<String>,
    /// Ratings by name, e.g. `{"fft": 2}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ratings: BTreeMap<String, serde_json::Number>,
    /// Themes the feedback touches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub themes: Vec<String>,
    /// Seldom-heard community tags, e.g. `homeless`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seldom_heard: Vec<String>,
    /// Who gave it: personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    /// Whether the story may be shown, redacted, on the public "you said, we did" page.
    #[serde(default)]
    pub consent_to_publish: bool,
    /// Language of the story, e.g. `en` or `cy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The loop's opaque public name on the "you said, we did" page: 32 hex digits of a random
    /// 128-bit id, assigned by Closeloop when the loop is stored (a value sent in is replaced).
    /// Loops stored before public ids existed have none; they get one derived from a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_id: Option<String>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.acknowledged`: the person was told their feedback was heard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// Who acknowledged it.
    pub by: String,
    /// What they were told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.responded`: a considered reply was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Responded {
    /// Who replied.
    pub by: String,
    /// The reply.
    pub text: String,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.action_planned`: an action is owned, with a due date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionPlanned {
    /// Who recorded the plan.
    pub by: String,
    /// What will be done.
    pub description: String,
    /// Who owns the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Date>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.change_made`: something changed because of the feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeMade {
    /// Who recorded the change.
    pub by: String,
    /// What changed.
    pub description: String,
    /// Groups one change recorded across many loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// Where the change can be seen or checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.no_change`: nothing could change, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoChange {
    /// Who recorded it.
    pub by: String,
    /// Why nothing could change.
    pub reason: String,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.reported_back`: the outcome was reported back; closes the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedBack {
    /// Who reported back.
    pub by: String,
    /// What the person was told.
    pub message: String,
    /// How they were told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.reopened`: a closed loop is open again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reopened {
    /// Who reopened it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.erased`: the loop's personal data was erased by destroying the keys
/// it was encrypted with. Says who and how the loop was matched, never what was erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Erased {
    /// Who erased it (the admin credential's name).
    pub by: String,
    /// How the erasure request named the loop: `loop_id` or `contact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `org.closeloop.loop.story_approved`: a staff member approved the story for the public page,
/// optionally as an edited text (with names of staff or relatives taken out, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryApproved {
    /// Who approved it.
    pub by: String,
    /// The text to publish instead of the story as given: personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story: Option<String>,
    /// Fields we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What happened to a loop: one of the eight event types with its data.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopEvent {
    /// See [`FeedbackReceived`].
    FeedbackReceived(FeedbackReceived),
    /// See [`Acknowledged`].
    Acknowledged(Acknowledged),
    /// See [`Responded`].
    Responded(Responded),
    /// See [`ActionPlanned`].
    ActionPlanned(ActionPlanned),
    /// See [`ChangeMade`].
    ChangeMade(ChangeMade),
    /// See [`NoChange`].
    NoChange(NoChange),
    /// See [`ReportedBack`].
    ReportedBack(ReportedBack),
    /// See [`Reopened`].
    Reopened(Reopened),
    /// `loop.erased`
    Erased(Erased),
    /// `loop.story_approved`
    StoryApproved(StoryApproved),
}

impl LoopEvent {
    /// The event's type.
    #[must_use]
    pub fn event_type(&self) -> EventType {
        match self {
            LoopEvent::FeedbackReceived(_) => EventType::FeedbackReceived,
            LoopEvent::Acknowledged(_) => EventType::Acknowledged,
            LoopEvent::Responded(_) => EventType::Responded,
            LoopEvent::ActionPlanned(_) => EventType::ActionPlanned,
            LoopEvent::ChangeMade(_) => EventType::ChangeMade,
            LoopEvent::NoChange(_) => EventType::NoChange,
            LoopEvent::ReportedBack(_) => EventType::ReportedBack,
            LoopEvent::Reopened(_) => EventType::Reopened,
            LoopEvent::Erased(_) => EventType::Erased,
            LoopEvent::StoryApproved(_) => EventType::StoryApproved,
        }
    }

    /// Parses and validates an event's `data` object for the given type, under the default
    /// [`Limits`].
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] saying which field is missing, of the wrong type or out of range.
    pub fn from_data(event_type: EventType, data: Value) -> Result<Self, Rejection> {
        Self::from_data_with(event_type, data, &Limits::DEFAULT)
    }

    /// Parses and validates an event's `data` object for the given type, under `limits`: the
    /// shape of every known field first, then sizes, counts, nesting and characters.
    ///
    /// The times (`received_at`, `due`) are checked by [`decide_with`](crate::decide_with),
    /// which knows the command's time and the loop.
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] with a sentence naming the field and what is allowed.
    pub fn from_data_with(
        event_type: EventType,
        data: Value,
        limits: &Limits,
    ) -> Result<Self, Rejection> {
        let Value::Object(data) = data else {
            return Err(Rejection::invalid(format!(
                "data of {event_type} must be a JSON object"
            )));
        };
        check::check_shape(event_type, &data, limits)?;
        let event = Self::from_stored_data(event_type, Value::Object(data))?;
        check::check_event(&event, limits)?;
        Ok(event)
    }

    /// Reads an event's data as it was stored, without re-checking the rules of the day: an
    /// event that was valid when it was recorded stays readable if the rules later tighten.
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] when the data does not have the type's shape at all.
    pub fn from_stored_data(event_type: EventType, data: Value) -> Result<Self, Rejection> {
        Self::from_stored(event_type, data)
    }

    /// Reads an event's stored data straight from its JSON text, as
    /// [`from_stored_data`](Self::from_stored_data) reads it from a parsed value: one pass
    /// instead of two for every stored event without personal data.
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] when the data does not have the type's shape at all.
    pub fn from_stored_json(event_type: EventType, json: &str) -> Result<Self, Rejection> {
        Self::from_stored(event_type, json)
    }

    fn from_stored(event_type: EventType, data: impl StoredData) -> Result<Self, Rejection> {
        Ok(match event_type {
            EventType::FeedbackReceived => LoopEvent::FeedbackReceived(parse(event_type, data)?),
            EventType::Acknowledged => LoopEvent::Acknowledged(parse(event_type, data)?),
            EventType::Responded => LoopEvent::Responded(parse(event_type, data)?),
            EventType::ActionPlanned => LoopEvent::ActionPlanned(parse(event_type, data)?),
            EventType::ChangeMade => LoopEvent::ChangeMade(parse(event_type, data)?),
            EventType::NoChange => LoopEvent::NoChange(parse(event_type, data)?),
            EventType::ReportedBack => LoopEvent::ReportedBack(parse(event_type, data)?),
            EventType::Reopened => LoopEvent::Reopened(parse(event_type, data)?),
            EventType::Erased => LoopEvent::Erased(parse(event_type, data)?),
            EventType::StoryApproved => LoopEvent::StoryApproved(parse(event_type, data)?),
        })
    }

    /// The event's data as a JSON object, unknown fields included.
    #[must_use]
    pub fn to_data(&self) -> Map<String, Value> {
        let value = match self {
            LoopEvent::FeedbackReceived(d) => serde_json::to_value(d),
            LoopEvent::Acknowledged(d) => serde_json::to_value(d),
            LoopEvent::Responded(d) => serde_json::to_value(d),
            LoopEvent::ActionPlanned(d) => serde_json::to_value(d),
            LoopEvent::ChangeMade(d) => serde_json::to_value(d),
            LoopEvent::NoChange(d) => serde_json::to_value(d),
            LoopEvent::ReportedBack(d) => serde_json::to_value(d),
            LoopEvent::Reopened(d) => serde_json::to_value(d),
            LoopEvent::Erased(d) => serde_json::to_value(d),
            LoopEvent::StoryApproved(d) => serde_json::to_value(d),
        };
        match value {
            Ok(Value::Object(map)) => map,
            // The data types are plain structs of strings, numbers, maps and lists: they
            // always serialise to an object.
            _ => unreachable!("event data always serialises to a JSON object"),
        }
    }
}

/// Stored event data in either form it is read from: parsed, or as its JSON text.
trait StoredData {
    fn into_typed<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T>;
}

impl StoredData for Value {
    fn into_typed<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        serde_json::from_value(self)
    }
}

impl StoredData for &str {
    fn into_typed<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        serde_json::from_str(self)
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    event_type: EventType,
    data: impl StoredData,
) -> Result<T, Rejection> {
    // Data that passed `check_shape` always parses; this message is for stored data only, and
    // names no library type (serde's own message would).
    data.into_typed().map_err(|_| {
        Rejection::invalid(format!(
            "data of {event_type} does not have the fields of that type with their types; see docs/events.md"
        ))
    })
}

/// A stored or about-to-be-stored event: what happened, plus who said so and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's id within its source (the CloudEvents `id`).
    pub event_id: String,
    /// Who published it (the CloudEvents `source`), e.g. `urn:trust:rxx:fft-kiosk`.
    pub source: String,
    /// When it happened.
    pub time: Timestamp,
    /// What happened.
    pub payload: LoopEvent,
    /// Who did it, as authenticated: the HTTP credential's name (or a short digest of its
    /// token), or the NATS publisher's `source`. `None` in records stored before actors were
    /// recorded. `by` in the data stays the human description.
    pub actor: Option<String>,
}

impl Event {
    /// The event's type.
    #[must_use]
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let data = json!({"by": "pals", "message": "Thank you", "ticket": {"no": 7}});
        let event = LoopEvent::from_data(EventType::Acknowledged, data.clone()).unwrap();
        assert_eq!(Value::Object(event.to_data()), data);
    }

    #[test]
    fn stored_json_reads_as_the_parsed_value_does() {
        let extra =
            json!({"ticket": {"no": 7, "tags": ["a", null, 1.5]}, "n": 18446744073709551615_u64});
        let cases = [
            (
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx/site-a", "channel": "web", "story": "x", "ratings": {"fft": 1},
                       "themes": ["food"], "author": {"anonymous": false, "name": "A", "x": 1}}),
            ),
            (
                EventType::Acknowledged,
                json!({"by": "pals", "message": null}),
            ),
            (EventType::Responded, json!({"by": "pals", "text": "hello"})),
            (
                EventType::ActionPlanned,
                json!({"by": "a", "description": "b", "owner": "c", "due": "2026-12-31"}),
            ),
            (
                EventType::ChangeMade,
                json!({"by": "a", "description": "b", "change_id": "c-1", "evidence": {"url": "u"}}),
            ),
            (EventType::NoChange, json!({"by": "a", "reason": "b"})),
            (
                EventType::ReportedBack,
                json!({"by": "a", "message": "b", "channel": "phone"}),
            ),
            (EventType::Reopened, json!({"by": "a", "reason": "b"})),
            (
                EventType::Erased,
                json!({"by": "a", "matched_by": "loop_id"}),
            ),
            (EventType::StoryApproved, json!({"by": "a"})),
        ];
        assert_eq!(cases.len(), EventType::ALL.len(), "one case a type");
        for (event_type, mut data) in cases {
            data.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let json = data.to_string();
            assert_eq!(
                LoopEvent::from_stored_json(event_type, &json).unwrap(),
                LoopEvent::from_stored_data(event_type, data).unwrap(),
                "{json}"
            );
            // Ill-typed data is refused by both, with the same message.
            let bad = json!({"by": 7});
            assert_eq!(
                LoopEvent::from_stored_json(event_type, &bad.to_string()).unwrap_err(),
                LoopEvent::from_stored_data(event_type, bad).unwrap_err(),
            );
        }
    }

    #[test]
    fn feedback_needs_a_story_or_a_rating() {
        let err = LoopEvent::from_data(
            EventType::FeedbackReceived,
            json!({"org_unit": "rxx/site-a", "channel": "web"}),
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_data");
        assert!(
            LoopEvent::from_data(
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx/site-a", "channel": "web", "ratings": {"fft": 1}}),
            )
            .is_ok()
        );
    }

    #[test]
    fn ill_typed_or_missing_fields_are_invalid_data() {
        let cases = [
            (
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx", "channel": "fax", "story": "x"}),
            ),
            (
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx", "channel": "web", "ratings": {"fft": 7}}),
            ),
            (
                EventType::FeedbackReceived,
                json!({"org_unit": "rxx", "channel": "web", "ratings": {"fft": "good"}}),
            ),
            (
                EventType::FeedbackReceived,
                json!({"channel": "web", "story": "x"}),
            ),
            (EventType::Responded, json!({"by": "pals"})),
            (EventType::Responded, json!({"by": " ", "text": "hello"})),
            (
                EventType::ActionPlanned,
                json!({"by": "a", "description": "b", "due": "next week"}),
            ),
            (EventType::Acknowledged, json!("not an object")),
        ];
        for (event_type, data) in cases {
            let err = LoopEvent::from_data(event_type, data.clone()).unwrap_err();
            assert_eq!(err.code(), "invalid_data", "{data}");
        }
    }
}
