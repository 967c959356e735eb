//! The stored bytes of one event: a schema-versioned JSON document.
//!
//! ```json
//! {"schema_version":1,"event_id":"fft-000123","source":"urn:trust:rxx:fft-kiosk",
//!  "type":"org.closeloop.feedback.received","time":"2026-11-27T09:30:00Z",
//!  "data":{"org_unit":"rxx/site-a/ward-7","channel":"survey","ratings":{"fft":2}},
//!  "personal":{"enc":"none","data":{"story":"…","author":{"anonymous":true}}}}
//! ```
//!
//! Personal data (the fields [`EventType::personal_fields`] names: `author` and `story`) lives
//! in `personal`, apart from everything else. `enc` says how it is stored; `none` (plain) is
//! the only encoding of schema 1, and a later one can encrypt it per subject without changing
//! the rest of the record or the hash chain's definition. Records are never rewritten: a newer
//! schema is read by upcasting old records on the way out.

use closeloop_domain::event::{Author, FeedbackReceived};
use closeloop_domain::{Event, EventType, LoopEvent, Rejection};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The schema version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The largest record the store accepts, in bytes. Well below what NATS carries in one message
/// (1 MiB by default) with a CloudEvent envelope and headers around it, so every stored event
/// can be published on the outbound feed; with room for the encryption and actor fields a
/// later schema adds to the field limits of [`closeloop_domain::Limits`].
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// Why stored bytes could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a JSON record of the expected shape.
    #[error("record is not valid: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer Closeloop.
    #[error("record schema version {0} is newer than this build reads ({SCHEMA_VERSION})")]
    UnsupportedSchema(u32),
    /// An event type this build does not know.
    #[error("record has unknown event type {0:?}")]
    UnknownType(String),
    /// Personal data in an encoding this build does not know.
    #[error("record's personal data uses unknown encoding {0:?}")]
    UnknownEncoding(String),
    /// The data does not have the event type's shape.
    #[error("record data does not fit its type: {0}")]
    Data(#[from] Rejection),
}

#[derive(Serialize)]
struct RecordOut<'a> {
    schema_version: u32,
    event_id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'static str,
    time: Timestamp,
    data: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    personal: Option<PersonalOut>,
}

#[derive(Serialize)]
struct PersonalOut {
    enc: &'static str,
    data: Map<String, Value>,
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    schema_version: u32,
    event_id: String,
    source: String,
    #[serde(rename = "type", borrow)]
    event_type: &'a str,
    time: Timestamp,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    personal: Option<PersonalIn<'a>>,
}

#[derive(Deserialize)]
struct PersonalIn<'a> {
    #[serde(borrow)]
    enc: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// The personal fields of `feedback.received`, read on their own.
#[derive(Deserialize)]
struct FeedbackPersonal {
    #[serde(default)]
    author: Option<Author>,
    #[serde(default)]
    story: Option<String>,
}

/// Encodes an event as record bytes, personal data apart.
#[must_use]
pub fn encode(event: &Event) -> Vec<u8> {
    let event_type = event.event_type();
    let mut data = event.payload.to_data();
    let mut personal = Map::new();
    for field in event_type.personal_fields() {
        if let Some(value) = data.remove(*field) {
            personal.insert((*field).to_owned(), value);
        }
    }
    let record = RecordOut {
        schema_version: SCHEMA_VERSION,
        event_id: &event.event_id,
        source: &event.source,
        event_type: event_type.as_str(),
        time: event.time,
        data,
        personal: (!personal.is_empty()).then_some(PersonalOut {
            enc: "none",
            data: personal,
        }),
    };
    serde_json::to_vec(&record).expect("records are plain JSON values and always serialise")
}

/// Decodes record bytes into the typed event.
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read.
pub fn decode(bytes: &[u8]) -> Result<Event, RecordError> {
    let record: RecordIn<'_> = serde_json::from_slice(bytes)?;
    check_schema(record.schema_version)?;
    let event_type = EventType::parse(record.event_type)
        .ok_or_else(|| RecordError::UnknownType(record.event_type.to_owned()))?;
    let personal = record.personal.map(plain_personal).transpose()?;
    let payload = if event_type == EventType::FeedbackReceived {
        // The hot path of every scan: read the typed struct straight from the raw JSON.
        let mut data: FeedbackReceived = serde_json::from_str(record.data.get())?;
        if let Some(personal) = personal {
            let personal: FeedbackPersonal = serde_json::from_str(personal.get())?;
            data.author = personal.author;
            data.story = personal.story;
        }
        LoopEvent::FeedbackReceived(data)
    } else {
        let data = merged_data(record.data, personal)?;
        LoopEvent::from_stored_data(event_type, Value::Object(data))?
    };
    Ok(Event {
        event_id: record.event_id,
        source: record.source,
        time: record.time,
        payload,
    })
}

/// A record read without typing its data: what `replay` and `GET /v1/events` print.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    /// The schema version it was written with.
    pub schema_version: u32,
    /// The event's id within its source.
    pub event_id: String,
    /// The event's source.
    pub source: String,
    /// The full CloudEvents type name.
    pub event_type: String,
    /// When it happened.
    pub time: Timestamp,
    /// Its data, personal fields merged back in.
    pub data: Map<String, Value>,
}

/// Decodes record bytes without typing the data.
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read.
pub fn decode_view(bytes: &[u8]) -> Result<RecordView, RecordError> {
    let record: RecordIn<'_> = serde_json::from_slice(bytes)?;
    check_schema(record.schema_version)?;
    let personal = record.personal.map(plain_personal).transpose()?;
    Ok(RecordView {
        schema_version: record.schema_version,
        event_id: record.event_id,
        source: record.source,
        event_type: record.event_type.to_owned(),
        time: record.time,
        data: merged_data(record.data, personal)?,
    })
}

/// Decodes record bytes without typing the data and without their personal part: `data`
/// holds only what the record keeps outside `personal`, less any field
/// [`EventType::personal_fields`] names (a record written before a field joined that list keeps
/// it in `data`). Needs no key and never reads personal data, whatever its encoding: what the
/// outbound feed publishes.
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read.
pub fn decode_public_view(bytes: &[u8]) -> Result<RecordView, RecordError> {
    let record: RecordIn<'_> = serde_json::from_slice(bytes)?;
    check_schema(record.schema_version)?;
    let mut data: Map<String, Value> = serde_json::from_str(record.data.get())?;
    if let Some(event_type) = EventType::parse(record.event_type) {
        for field in event_type.personal_fields() {
            data.remove(*field);
        }
    }
    Ok(RecordView {
        schema_version: record.schema_version,
        event_id: record.event_id,
        source: record.source,
        event_type: record.event_type.to_owned(),
        time: record.time,
        data,
    })
}

fn check_schema(version: u32) -> Result<(), RecordError> {
    if version == 0 || version > SCHEMA_VERSION {
        return Err(RecordError::UnsupportedSchema(version));
    }
    Ok(())
}

fn plain_personal(personal: PersonalIn<'_>) -> Result<&RawValue, RecordError> {
    match personal.enc {
        "none" => Ok(personal.data),
        other => Err(RecordError::UnknownEncoding(other.to_owned())),
    }
}

fn merged_data(
    data: &RawValue,
    personal: Option<&RawValue>,
) -> Result<Map<String, Value>, RecordError> {
    let mut data: Map<String, Value> = serde_json::from_str(data.get())?;
    if let Some(personal) = personal {
        let personal: Map<String, Value> = serde_json::from_str(personal.get())?;
        data.extend(personal);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feedback() -> Event {
        let data = json!({
            "org_unit": "rxx/site-a/ward-7", "channel": "survey", "story": "The nurse, Ann, was kind",
            "ratings": {"fft": 2}, "author": {"name": "Jo Bloggs", "contact": "jo@example.org"},
            "consent_to_publish": true, "kiosk": "k-7"
        });
        Event {
            event_id: "fft-1".into(),
            source: "urn:trust:rxx:fft-kiosk".into(),
            time: "2026-11-27T09:30:00Z".parse().unwrap(),
            payload: LoopEvent::from_data(EventType::FeedbackReceived, data).unwrap(),
        }
    }

    #[test]
    fn personal_data_is_kept_apart_from_the_rest() {
        let bytes = encode(&feedback());
        let raw: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(raw["schema_version"], 1);
        assert!(raw["data"].get("story").is_none());
        assert!(raw["data"].get("author").is_none());
        assert_eq!(raw["data"]["kiosk"], "k-7");
        assert_eq!(raw["personal"]["enc"], "none");
        assert_eq!(raw["personal"]["data"]["author"]["name"], "Jo Bloggs");
    }

    #[test]
    fn records_decode_to_the_event_they_encode() {
        let event = feedback();
        assert_eq!(decode(&encode(&event)).unwrap(), event);
        let ack = Event {
            payload: LoopEvent::from_data(EventType::Acknowledged, json!({"by": "pals", "x": 1}))
                .unwrap(),
            ..event
        };
        assert_eq!(decode(&encode(&ack)).unwrap(), ack);
    }

    #[test]
    fn view_merges_personal_data_back() {
        let view = decode_view(&encode(&feedback())).unwrap();
        assert_eq!(view.event_type, "org.closeloop.feedback.received");
        assert_eq!(view.data["story"], "The nurse, Ann, was kind");
        assert_eq!(view.data["kiosk"], "k-7");
    }

    #[test]
    fn the_public_view_leaves_personal_data_out_whatever_its_encoding() {
        let mut raw: Value = serde_json::from_slice(&encode(&feedback())).unwrap();
        raw["personal"]["enc"] = json!("a-cipher-of-tomorrow");
        // A field that joined the personal list after the record was written.
        raw["data"]["story"] = json!("Written before story was personal");
        let view = decode_public_view(&serde_json::to_vec(&raw).unwrap()).unwrap();
        assert_eq!(view.data.get("story"), None);
        assert_eq!(view.data.get("author"), None);
        assert_eq!(view.data["kiosk"], "k-7");
        assert_eq!(view.data["ratings"]["fft"], 2);
        assert_eq!(view.event_id, "fft-1");
    }

    #[test]
    fn newer_schemas_and_unknown_encodings_are_refused_with_a_reason() {
        let mut raw: Value = serde_json::from_slice(&encode(&feedback())).unwrap();
        raw["schema_version"] = json!(2);
        let err = decode(&serde_json::to_vec(&raw).unwrap()).unwrap_err();
        assert!(matches!(err, RecordError::UnsupportedSchema(2)), "{err}");
        raw["schema_version"] = json!(1);
        raw["personal"]["enc"] = json!("rot13");
        let err = decode(&serde_json::to_vec(&raw).unwrap()).unwrap_err();
        assert!(matches!(err, RecordError::UnknownEncoding(_)), "{err}");
    }
}
