//! The stored bytes of one event: a schema-versioned JSON document.
//!
//! ```json
//! {"schema_version":2,"event_id":"fft-000123","source":"urn:trust:rxx:fft-kiosk",
//!  "type":"org.closeloop.feedback.received","time":"2026-11-27T09:30:00Z",
//!  "actor":"urn:trust:rxx:fft-kiosk",
//!  "data":{"org_unit":"rxx/site-a/ward-7","channel":"survey","ratings":{"fft":2}},
//!  "personal":{"enc":"xchacha20poly1305","kid":17,"fields":["author","story"],
//!              "nonce":"…","ct":"…"}}
//! ```
//!
//! Personal data (the fields [`EventType::personal_fields`] names: `author`, `story`, and the
//! free text addressed to the person) lives in `personal`, apart from everything else, sealed
//! with the loop's own data key (XChaCha20-Poly1305, a fresh nonce per record, the loop id,
//! source and event id bound in as associated data). `kid` names the key in the key store
//! (`closeloop-keys`); `fields` names what is sealed (names are not personal), so a record
//! whose key was destroyed still reads as `"[erased]"` field by field. Erasure destroys the
//! key and never touches the record, so the hash chain and the Merkle head stay as they were.
//!
//! `enc: "none"` (plain) is what schema 1 wrote, and what the store writes when it runs
//! without a key store (tests and benchmarks). Records are never rewritten: older schemas
//! are read as they are.

use std::borrow::Cow;

use closeloop_domain::event::{Author, FeedbackReceived};
use closeloop_domain::{Event, EventType, LoopEvent, Rejection};
use closeloop_keys::{DataKey, KeyId, KeyState, KeyStore};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The schema version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 2;

/// The largest record the store accepts, in bytes. Well below what NATS carries in one message
/// (1 MiB by default) with a CloudEvent envelope and headers around it, so every stored event
/// can be published on the outbound feed.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// What a personal field reads as once its key was destroyed (contract §3 erasures).
pub const ERASED: &str = "[erased]";
/// What a personal field reads as when the reader has no master key (contract §4).
pub const ENCRYPTED: &str = "[encrypted]";

/// The encoding name of sealed personal data.
const SEALED_ENCODING: &str = "xchacha20poly1305";

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
    /// The sealed personal data did not open with its key: the record or the key store was
    /// altered, or the key store belongs to another data directory.
    #[error(
        "record's personal data does not open with key {kid}: {detail}; run `closeloop verify`"
    )]
    Unsealing {
        /// The key the record names.
        kid: KeyId,
        /// What went wrong.
        detail: String,
    },
    /// The key store could not be read.
    #[error("key store failed: {0}")]
    Keys(String),
}

/// An event encoded up to its personal data, which is sealed last, once its loop's key is
/// known (the store's writer creates keys in order, so two first writes never make two).
#[derive(Debug)]
pub struct Draft {
    /// The record's JSON up to (not including) the closing brace.
    head: String,
    /// The personal fields' names and their plain JSON object.
    personal: Option<(Vec<&'static str>, Zeroizing<Vec<u8>>)>,
    /// Bound into the seal: the loop, source and event id.
    aad: Vec<u8>,
}

#[derive(Serialize)]
struct HeadOut<'a> {
    schema_version: u32,
    event_id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'static str,
    time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    data: Map<String, Value>,
}

#[derive(Serialize)]
struct SealedOut<'a> {
    enc: &'static str,
    kid: KeyId,
    fields: &'a [&'static str],
    nonce: String,
    ct: String,
}

#[derive(Serialize)]
struct PlainOut<'a> {
    enc: &'static str,
    data: &'a RawValue,
}

impl Draft {
    /// Splits `event` into its plain part and its personal fields.
    #[must_use]
    pub fn new(loop_id: &str, event: &Event) -> Self {
        let event_type = event.event_type();
        let mut data = event.payload.to_data();
        let mut personal = Map::new();
        let mut fields = Vec::new();
        for field in event_type.personal_fields() {
            if let Some(value) = data.remove(*field) {
                personal.insert((*field).to_owned(), value);
                fields.push(*field);
            }
        }
        let head = HeadOut {
            schema_version: SCHEMA_VERSION,
            event_id: &event.event_id,
            source: &event.source,
            event_type: event_type.as_str(),
            time: event.time,
            actor: event.actor.as_deref(),
            data,
        };
        let mut head = serde_json::to_string(&head)
            .expect("records are plain JSON values and always serialise");
        head.pop(); // the closing brace: `finish` adds the personal part first
        let personal = (!fields.is_empty()).then(|| {
            let plain = serde_json::to_vec(&personal)
                .expect("records are plain JSON values and always serialise");
            (fields, Zeroizing::new(plain))
        });
        Self {
            head,
            personal,
            aad: associated_data(loop_id, &event.source, &event.event_id),
        }
    }

    /// Whether the record has personal data to seal, so needs its loop's key.
    #[must_use]
    pub fn needs_key(&self) -> bool {
        self.personal.is_some()
    }

    /// The most bytes [`finish`](Self::finish) can produce: for checking the record limit before
    /// a key is made.
    #[must_use]
    pub fn max_len(&self) -> usize {
        let personal = self.personal.as_ref().map_or(0, |(fields, plain)| {
            let names: usize = fields.iter().map(|f| f.len() + 3).sum();
            // base64 of plain + 16-byte tag, base64 of the 24-byte nonce, 20 digits of kid,
            // and the member names and punctuation around them.
            (plain.len() + 16).div_ceil(3) * 4 + 32 + 20 + names + 80
        });
        self.head.len() + 1 + personal
    }

    /// The record bytes, personal data sealed with `key`, or plain when `key` is `None` (a
    /// store run without a key store).
    #[must_use]
    pub fn finish(self, key: Option<&DataKey>) -> Vec<u8> {
        let mut out = self.head.into_bytes();
        if let Some((fields, plain)) = &self.personal {
            out.extend_from_slice(b",\"personal\":");
            let part = match key {
                Some(key) => {
                    let sealed = key.seal(&self.aad, plain);
                    serde_json::to_vec(&SealedOut {
                        enc: SEALED_ENCODING,
                        kid: key.id,
                        fields,
                        nonce: BASE64.encode(sealed.nonce),
                        ct: BASE64.encode(&sealed.ciphertext),
                    })
                }
                None => {
                    let text = std::str::from_utf8(plain).expect("serde_json writes UTF-8");
                    let raw: &RawValue =
                        serde_json::from_str(text).expect("serde_json reads what it wrote");
                    serde_json::to_vec(&PlainOut {
                        enc: "none",
                        data: raw,
                    })
                }
            };
            out.extend(part.expect("records are plain JSON values and always serialise"));
        }
        out.push(b'}');
        out
    }
}

fn associated_data(loop_id: &str, source: &str, event_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + loop_id.len() + source.len() + event_id.len());
    aad.extend_from_slice(b"closeloop-record-v2");
    for part in [loop_id, source, event_id] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Encodes an event with its personal data in plain: for tests and tools that run without a
/// key store. The store seals personal data through [`Draft`].
#[must_use]
pub fn encode(event: &Event) -> Vec<u8> {
    Draft::new("", event).finish(None)
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    schema_version: u32,
    event_id: String,
    source: String,
    #[serde(rename = "type", borrow)]
    event_type: &'a str,
    time: Timestamp,
    #[serde(default)]
    actor: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    personal: Option<PersonalIn<'a>>,
}

#[derive(Deserialize)]
struct PersonalIn<'a> {
    #[serde(borrow)]
    enc: &'a str,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    kid: Option<KeyId>,
    #[serde(default)]
    fields: Vec<String>,
    /// Borrowed where the JSON has no escapes (base64 needs none, though a writer may escape
    /// `/`): the ciphertext is most of a record, and every scan reads past it.
    #[serde(default, borrow)]
    nonce: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ct: Option<Cow<'a, str>>,
}

/// How a reader gets at personal data: with the key store, or without (sealed parts read as
/// `"[encrypted]"`).
#[derive(Clone, Copy)]
pub enum Reveal<'a> {
    /// No key store: sealed personal data reads as [`ENCRYPTED`].
    Sealed,
    /// Open sealed personal data with these keys; destroyed keys read as [`ERASED`].
    With(&'a dyn KeyStore),
}

impl<'a> Reveal<'a> {
    /// Opens with `keys` when there are some, else reads sealed parts as [`ENCRYPTED`].
    #[must_use]
    pub fn with_keys(keys: Option<&'a dyn KeyStore>) -> Self {
        keys.map_or(Reveal::Sealed, Reveal::With)
    }
}

impl std::fmt::Debug for Reveal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reveal::Sealed => f.write_str("Reveal::Sealed"),
            Reveal::With(_) => f.write_str("Reveal::With(..)"),
        }
    }
}

/// The personal part of a record as this reader can see it.
enum Personal {
    /// Plain JSON object text.
    Plain(Zeroizing<String>),
    /// Not readable: every named field shows `marker`.
    Hidden {
        fields: Vec<String>,
        marker: &'static str,
    },
}

impl Personal {
    fn read(
        part: PersonalIn<'_>,
        loop_id: &str,
        source: &str,
        event_id: &str,
        reveal: Reveal<'_>,
    ) -> Result<Self, RecordError> {
        match part.enc {
            "none" => {
                let data = part
                    .data
                    .ok_or_else(|| RecordError::UnknownEncoding("none without data".to_owned()))?;
                // A loop erased before its records were sealed (a store from before
                // encryption) still reads as erased, though its bytes stay.
                if let Reveal::With(keys) = reveal
                    && keys.is_erased(loop_id)
                {
                    let fields: Map<String, Value> = serde_json::from_str(data.get())?;
                    return Ok(Personal::Hidden {
                        fields: fields.keys().cloned().collect(),
                        marker: ERASED,
                    });
                }
                Ok(Personal::Plain(Zeroizing::new(data.get().to_owned())))
            }
            SEALED_ENCODING => {
                let fields = part.fields;
                // Each path below calls it at most once, so the names move, not copy.
                let hidden = |marker| Personal::Hidden { fields, marker };
                let Reveal::With(keys) = reveal else {
                    return Ok(hidden(ENCRYPTED));
                };
                let kid = part.kid.ok_or_else(|| {
                    RecordError::UnknownEncoding(format!("{SEALED_ENCODING} without kid"))
                })?;
                let key = match keys
                    .key(loop_id, kid)
                    .map_err(|err| RecordError::Keys(err.to_string()))?
                {
                    KeyState::Live(key) => key,
                    KeyState::Destroyed => return Ok(hidden(ERASED)),
                    KeyState::Sealed => return Ok(hidden(ENCRYPTED)),
                    KeyState::Unknown => {
                        return Err(RecordError::Unsealing {
                            kid,
                            detail: "the key store has no such key for this loop".to_owned(),
                        });
                    }
                };
                let unsealing = |detail: &str| RecordError::Unsealing {
                    kid,
                    detail: detail.to_owned(),
                };
                let nonce = part
                    .nonce
                    .as_deref()
                    .and_then(|n| BASE64.decode(n).ok())
                    .and_then(|n| <[u8; 24]>::try_from(n).ok())
                    .ok_or_else(|| unsealing("the nonce is missing or not 24 bytes of base64"))?;
                let ct = part
                    .ct
                    .as_deref()
                    .and_then(|c| BASE64.decode(c).ok())
                    .ok_or_else(|| unsealing("the ciphertext is missing or not base64"))?;
                let aad = associated_data(loop_id, source, event_id);
                let plain = key
                    .open(&aad, &nonce, &ct)
                    .map_err(|_| unsealing("authentication failed"))?;
                let text = String::from_utf8(plain.to_vec())
                    .map_err(|_| unsealing("the plaintext is not UTF-8"))?;
                Ok(Personal::Plain(Zeroizing::new(text)))
            }
            other => Err(RecordError::UnknownEncoding(other.to_owned())),
        }
    }

    fn into_map(self) -> Result<Map<String, Value>, RecordError> {
        match self {
            Personal::Plain(text) => Ok(serde_json::from_str(&text)?),
            Personal::Hidden { fields, marker } => Ok(fields
                .into_iter()
                .map(|field| (field, Value::String(marker.to_owned())))
                .collect()),
        }
    }
}

/// The personal fields of `feedback.received`, read on their own.
#[derive(Deserialize)]
struct FeedbackPersonal {
    #[serde(default)]
    author: Option<Author>,
    #[serde(default)]
    story: Option<String>,
}

/// Decodes record bytes into the typed event without a key store: sealed personal data reads
/// as [`ENCRYPTED`] (text fields) or absent (`author`). What the read models and the write
/// path use: they need no personal data.
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read.
pub fn decode(bytes: &[u8]) -> Result<Event, RecordError> {
    decode_as("", bytes, Reveal::Sealed)
}

/// The key a record's personal data is sealed with, if it has sealed personal data: read
/// without decoding the rest (recovering pooled keys' assignments after a crash reads every
/// record since the key store's watermark).
///
/// # Errors
/// [`RecordError`] when the bytes are not JSON of a record.
pub fn sealed_with(bytes: &[u8]) -> Result<Option<KeyId>, RecordError> {
    #[derive(Deserialize)]
    struct Outer {
        #[serde(default)]
        personal: Option<Kid>,
    }
    #[derive(Deserialize)]
    struct Kid {
        #[serde(default)]
        kid: Option<KeyId>,
    }
    let outer: Outer = serde_json::from_slice(bytes)?;
    Ok(outer.personal.and_then(|personal| personal.kid))
}

/// Parses a record's JSON. The bytes are checked to be UTF-8 once, as a whole, so that each
/// string borrowed from them is not checked again (a record's ciphertext alone is hundreds of
/// bytes); bytes that are not UTF-8 fail as they always did, with serde_json's error.
fn from_record_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// Decodes record bytes into the typed event, opening personal data as `reveal` allows.
/// Fields whose key was destroyed read as [`ERASED`] (`author`: absent).
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read, or its sealed part
/// does not open with its key.
pub fn decode_as(loop_id: &str, bytes: &[u8], reveal: Reveal<'_>) -> Result<Event, RecordError> {
    let record: RecordIn<'_> = from_record_bytes(bytes)?;
    check_schema(record.schema_version)?;
    let event_type = EventType::parse(record.event_type)
        .ok_or_else(|| RecordError::UnknownType(record.event_type.to_owned()))?;
    let personal = record
        .personal
        .map(|part| Personal::read(part, loop_id, &record.source, &record.event_id, reveal))
        .transpose()?;
    let payload = if event_type == EventType::FeedbackReceived {
        // The hot path of every scan: read the typed struct straight from the raw JSON.
        let mut data: FeedbackReceived = serde_json::from_str(record.data.get())?;
        match personal {
            Some(Personal::Plain(text)) => {
                let personal: FeedbackPersonal = serde_json::from_str(&text)?;
                data.author = personal.author;
                data.story = personal.story;
            }
            Some(Personal::Hidden { fields, marker }) if fields.iter().any(|f| f == "story") => {
                data.story = Some(marker.to_owned());
            }
            Some(Personal::Hidden { .. }) | None => {}
        }
        LoopEvent::FeedbackReceived(data)
    } else if let Some(personal) = personal {
        let mut data: Map<String, Value> = serde_json::from_str(record.data.get())?;
        data.extend(personal.into_map()?);
        LoopEvent::from_stored_data(event_type, Value::Object(data))?
    } else {
        LoopEvent::from_stored_json(event_type, record.data.get())?
    };
    Ok(Event {
        event_id: record.event_id,
        source: record.source,
        time: record.time,
        payload,
        actor: record.actor,
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
    /// Who did it, as authenticated (`None` in records from before actors were recorded).
    pub actor: Option<String>,
    /// Its data, personal fields merged back in as `reveal` allows.
    pub data: Map<String, Value>,
}

/// Decodes record bytes without typing the data, personal data as `reveal` allows.
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read.
pub fn decode_view(
    loop_id: &str,
    bytes: &[u8],
    reveal: Reveal<'_>,
) -> Result<RecordView, RecordError> {
    let record: RecordIn<'_> = from_record_bytes(bytes)?;
    check_schema(record.schema_version)?;
    let personal = record
        .personal
        .map(|part| Personal::read(part, loop_id, &record.source, &record.event_id, reveal))
        .transpose()?;
    let mut data: Map<String, Value> = serde_json::from_str(record.data.get())?;
    if let Some(personal) = personal {
        data.extend(personal.into_map()?);
    }
    Ok(RecordView {
        schema_version: record.schema_version,
        event_id: record.event_id,
        source: record.source,
        event_type: record.event_type.to_owned(),
        time: record.time,
        actor: record.actor,
        data,
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
    let record: RecordIn<'_> = from_record_bytes(bytes)?;
    check_schema(record.schema_version)?;
    let data = public_data(record.event_type, record.data)?.into_map()?;
    Ok(RecordView {
        schema_version: record.schema_version,
        event_id: record.event_id,
        source: record.source,
        event_type: record.event_type.to_owned(),
        time: record.time,
        actor: record.actor,
        data,
    })
}

/// A record's public part, borrowed from its bytes where it can be: what the outbound feed
/// publishes. Decoding it allocates nothing for most records (see [`PublicData`]).
#[derive(Debug)]
pub struct PublicRecord<'a> {
    /// The event's id within its source.
    pub event_id: Cow<'a, str>,
    /// The event's source.
    pub source: Cow<'a, str>,
    /// The full CloudEvents type name.
    pub event_type: &'a str,
    /// When it happened.
    pub time: Timestamp,
    /// Its data without the event type's personal fields.
    pub data: PublicData<'a>,
}

/// A record's data without personal fields: its stored JSON as it is when that names none
/// of them (every record this build writes keeps them in `personal`, sealed or plain), else
/// parsed with them taken out (records written before personal data was kept apart).
/// Serializes to the same bytes either way.
#[derive(Debug)]
pub enum PublicData<'a> {
    /// The stored JSON, which holds no personal field.
    Stored(&'a RawValue),
    /// The data with the personal fields removed.
    Filtered(Map<String, Value>),
}

impl PublicData<'_> {
    /// The data as a JSON object.
    ///
    /// # Errors
    /// [`RecordError`] when stored data is not a JSON object.
    pub fn into_map(self) -> Result<Map<String, Value>, RecordError> {
        match self {
            PublicData::Stored(raw) => Ok(serde_json::from_str(raw.get())?),
            PublicData::Filtered(map) => Ok(map),
        }
    }
}

impl Serialize for PublicData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PublicData::Stored(raw) => raw.serialize(serializer),
            PublicData::Filtered(map) => map.serialize(serializer),
        }
    }
}

#[derive(Deserialize)]
struct PublicIn<'a> {
    schema_version: u32,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: &'a str,
    time: Timestamp,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Decodes a record's public part, as [`decode_public_view`] does but borrowing from `bytes`.
///
/// # Errors
/// [`RecordError`] when the bytes are not a record this build can read.
pub fn decode_public(bytes: &[u8]) -> Result<PublicRecord<'_>, RecordError> {
    let record: PublicIn<'_> = from_record_bytes(bytes)?;
    check_schema(record.schema_version)?;
    let data = public_data(record.event_type, record.data)?;
    Ok(PublicRecord {
        event_id: record.event_id,
        source: record.source,
        event_type: record.event_type,
        time: record.time,
        data,
    })
}

/// A record's `data` without the personal fields of `event_type`: as stored when it names
/// none of them, else parsed and filtered (the other fields keep their order).
fn public_data<'a>(event_type: &str, data: &'a RawValue) -> Result<PublicData<'a>, RecordError> {
    let personal = EventType::parse(event_type).map_or(&[][..], EventType::personal_fields);
    if !may_name_any(data.get(), personal) {
        return Ok(PublicData::Stored(data));
    }
    let mut data: Map<String, Value> = serde_json::from_str(data.get())?;
    for field in personal {
        data.shift_remove(*field);
    }
    Ok(PublicData::Filtered(data))
}

/// Whether the JSON text `json` may hold a key named one of `names`: false only when none of
/// them appears quoted and nothing is escaped (an escape could spell a name differently).
fn may_name_any(json: &str, names: &[&str]) -> bool {
    json.contains('\\')
        || names.iter().any(|name| {
            json.match_indices(name).any(|(at, _)| {
                json[..at].ends_with('"') && json[at + name.len()..].starts_with('"')
            })
        })
}

fn check_schema(version: u32) -> Result<(), RecordError> {
    if version == 0 || version > SCHEMA_VERSION {
        return Err(RecordError::UnsupportedSchema(version));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeloop_keys::{KeyRequest, MasterKey, MemoryKeyStore};
    use serde_json::json;

    const LOOP: &str = "fft-rxx-000123";

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
            actor: Some("urn:trust:rxx:fft-kiosk".into()),
        }
    }

    fn response() -> Event {
        Event {
            event_id: "r-1".into(),
            payload: LoopEvent::from_data(
                EventType::Responded,
                json!({"by": "ward manager", "text": "Dear Jo, thank you"}),
            )
            .unwrap(),
            ..feedback()
        }
    }

    fn keys() -> MemoryKeyStore {
        MemoryKeyStore::new(&MasterKey::generate())
    }

    fn sealed(keys: &MemoryKeyStore, loop_id: &str, event: &Event) -> Vec<u8> {
        let key = keys
            .keys_for_writing(&[KeyRequest {
                loop_id,
                contact: None,
            }])
            .unwrap()
            .remove(0);
        Draft::new(loop_id, event).finish(Some(&key))
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    #[test]
    fn the_public_part_is_borrowed_when_the_data_names_no_personal_field() {
        let keys = keys();
        for bytes in [
            encode(&feedback()),
            sealed(&keys, LOOP, &feedback()),
            sealed(&keys, LOOP, &response()),
        ] {
            let public = decode_public(&bytes).unwrap();
            let view = decode_public_view(&bytes).unwrap();
            assert!(matches!(public.data, PublicData::Stored(_)), "{public:?}");
            assert_eq!(
                serde_json::to_value(&public.data).unwrap(),
                Value::Object(view.data)
            );
            assert_eq!(public.event_id, view.event_id);
            assert_eq!(public.source, view.source);
            assert_eq!(public.event_type, view.event_type);
            assert_eq!(public.time, view.time);
        }
    }

    #[test]
    fn personal_fields_kept_in_the_data_are_taken_out_in_order() {
        // As an event could have been written before personal data was kept apart.
        let bytes = br#"{"schema_version":1,"event_id":"fft-1","source":"urn:s","type":"org.closeloop.feedback.received","time":"2026-11-27T09:30:00Z","data":{"org_unit":"rxx/a","story":"Jo was kind","channel":"survey","author":{"name":"Jo"},"kiosk":"k-7"}}"#;
        let public = decode_public(bytes).unwrap();
        assert!(matches!(public.data, PublicData::Filtered(_)), "{public:?}");
        assert_eq!(
            serde_json::to_string(&public.data).unwrap(),
            r#"{"org_unit":"rxx/a","channel":"survey","kiosk":"k-7"}"#
        );
    }

    #[test]
    fn only_a_quoted_name_or_an_escape_may_name_a_field() {
        let names = &["story", "author"][..];
        assert!(!may_name_any(
            r#"{"history":"a story","co_author":1}"#,
            names
        ));
        assert!(
            may_name_any(r#"{"a":"story"}"#, names),
            "a value spelt like a name: parse to be sure"
        );
        assert!(may_name_any(r#"{"story":1}"#, names));
        assert!(
            may_name_any(r#"{"st\u006fry":1}"#, names),
            "an escape may spell a name"
        );
        assert!(!may_name_any(r#"{"story":1}"#, &[]));
    }

    #[test]
    fn personal_data_is_kept_apart_from_the_rest() {
        let bytes = encode(&feedback());
        let raw: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(raw["schema_version"], SCHEMA_VERSION);
        assert!(raw["data"].get("story").is_none());
        assert!(raw["data"].get("author").is_none());
        assert_eq!(raw["data"]["kiosk"], "k-7");
        assert_eq!(raw["actor"], "urn:trust:rxx:fft-kiosk");
        assert_eq!(raw["personal"]["enc"], "none");
        assert_eq!(raw["personal"]["data"]["author"]["name"], "Jo Bloggs");
    }

    #[test]
    fn sealed_records_hold_no_personal_text_and_open_with_their_key() {
        let keys = keys();
        for event in [feedback(), response()] {
            let bytes = sealed(&keys, LOOP, &event);
            for secret in ["Jo Bloggs", "jo@example.org", "Ann, was kind", "Dear Jo"] {
                assert!(!contains(&bytes, secret), "{secret} is in the record");
            }
            let raw: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(raw["personal"]["enc"], "xchacha20poly1305");
            let opened = decode_as(LOOP, &bytes, Reveal::With(&keys)).unwrap();
            assert_eq!(opened, event);
        }
    }

    #[test]
    fn each_record_gets_its_own_nonce() {
        let keys = keys();
        let one = sealed(&keys, LOOP, &feedback());
        let two = sealed(&keys, LOOP, &feedback());
        assert_ne!(one, two);
    }

    #[test]
    fn without_keys_sealed_fields_read_encrypted_and_after_erasure_erased() {
        let keys = keys();
        let bytes = sealed(&keys, LOOP, &feedback());
        let view = decode_view(LOOP, &bytes, Reveal::Sealed).unwrap();
        assert_eq!(view.data["story"], ENCRYPTED);
        assert_eq!(view.data["author"], ENCRYPTED);
        assert_eq!(view.data["kiosk"], "k-7");
        keys.destroy_loop(LOOP).unwrap();
        let view = decode_view(LOOP, &bytes, Reveal::With(&keys)).unwrap();
        assert_eq!(view.data["story"], ERASED);
        assert_eq!(view.data["author"], ERASED);
        let typed = decode_as(LOOP, &bytes, Reveal::With(&keys)).unwrap();
        let LoopEvent::FeedbackReceived(data) = typed.payload else {
            panic!("feedback")
        };
        assert_eq!(data.story.as_deref(), Some(ERASED));
        assert_eq!(data.author, None);
        let reply = sealed(&keys, LOOP, &response());
        assert_eq!(
            decode_view(LOOP, &reply, Reveal::With(&keys)).unwrap().data["text"],
            "Dear Jo, thank you",
            "a write after the erasure gets a new key"
        );
    }

    #[test]
    fn escaped_ciphertext_opens_and_bytes_that_are_not_utf8_are_refused() {
        let keys = keys();
        let bytes = sealed(&keys, LOOP, &feedback());
        // Any JSON writer may escape `/` in base64; the parts are then read owned, not borrowed.
        let text = String::from_utf8(bytes).unwrap().replace('/', "\\/");
        assert!(
            text.contains("\\/"),
            "the ciphertext has a slash to escape: {text}"
        );
        let opened = decode_as(LOOP, text.as_bytes(), Reveal::With(&keys)).unwrap();
        assert_eq!(opened, feedback());
        let sealed_view = decode(text.as_bytes()).unwrap();
        assert_eq!(sealed_view.event_id, "fft-1");

        let mut broken = encode(&response());
        let at = broken.len() - 10;
        broken[at] = 0xff;
        assert!(matches!(decode(&broken), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn a_sealed_part_does_not_open_under_another_loop_or_once_altered() {
        let keys = keys();
        let bytes = sealed(&keys, LOOP, &feedback());
        let err = decode_as("another-loop", &bytes, Reveal::With(&keys)).unwrap_err();
        assert!(matches!(err, RecordError::Unsealing { .. }), "{err}");
        let mut raw: Value = serde_json::from_slice(&bytes).unwrap();
        let ct = raw["personal"]["ct"].as_str().unwrap().to_owned();
        let mut flipped = BASE64.decode(ct).unwrap();
        flipped[0] ^= 1;
        raw["personal"]["ct"] = json!(BASE64.encode(flipped));
        let altered = serde_json::to_vec(&raw).unwrap();
        let err = decode_as(LOOP, &altered, Reveal::With(&keys)).unwrap_err();
        assert!(matches!(err, RecordError::Unsealing { .. }), "{err}");
    }

    #[test]
    fn the_size_bound_covers_the_sealed_record() {
        let keys = keys();
        for event in [feedback(), response()] {
            let draft = Draft::new(LOOP, &event);
            let bound = draft.max_len();
            assert!(sealed(&keys, LOOP, &event).len() <= bound);
        }
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
    fn the_public_view_leaves_personal_data_out() {
        let view = decode_public_view(&encode(&feedback())).unwrap();
        assert!(view.data.get("story").is_none());
        assert!(view.data.get("author").is_none());
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
        raw["schema_version"] = json!(SCHEMA_VERSION + 1);
        let err = decode(&serde_json::to_vec(&raw).unwrap()).unwrap_err();
        assert!(matches!(err, RecordError::UnsupportedSchema(_)), "{err}");
        raw["schema_version"] = json!(1);
        raw["personal"]["enc"] = json!("rot13");
        let err = decode(&serde_json::to_vec(&raw).unwrap()).unwrap_err();
        assert!(matches!(err, RecordError::UnknownEncoding(_)), "{err}");
    }
}
