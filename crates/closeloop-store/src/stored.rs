//! One entry of the global log, and its line in `replay` / `GET /v1/events`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use closeloop_domain::{Event, LoopId};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::chain::{Hash, entry_hash};
use crate::record::{self, RecordError, Reveal};

/// An event as the log holds it: the record bytes and where they sit in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the global log, from 1, gapless.
    pub position: u64,
    /// The loop the event belongs to.
    pub loop_id: LoopId,
    /// Version within the loop, from 1, gapless.
    pub version: u64,
    /// The `hash` of the loop's previous entry; zeros for version 1.
    pub prev_hash: Hash,
    /// This entry's hash (see [`entry_hash`]).
    pub hash: Hash,
    /// The exact stored record bytes (see [`record`]).
    pub record: Vec<u8>,
}

impl StoredEvent {
    /// Decodes the record into the typed event, its sealed personal data unread (text fields
    /// read `"[encrypted]"`, `author` is absent): all the read models and the write path need.
    ///
    /// # Errors
    /// When the record cannot be read (see [`RecordError`]).
    pub fn event(&self) -> Result<Event, RecordError> {
        record::decode(&self.record)
    }

    /// Decodes the record into the typed event, opening its personal data as `reveal` allows.
    ///
    /// # Errors
    /// When the record cannot be read, or its personal data does not open with its key.
    pub fn event_as(&self, reveal: Reveal<'_>) -> Result<Event, RecordError> {
        record::decode_as(self.loop_id.as_str(), &self.record, reveal)
    }

    /// The hash recomputed from this entry's fields: equal to `hash` unless it was altered.
    #[must_use]
    pub fn recomputed_hash(&self) -> Hash {
        entry_hash(
            self.position,
            self.version,
            self.loop_id.as_str(),
            &self.prev_hash,
            &self.record,
        )
    }

    /// The entry as one line of `replay` and `GET /v1/events` (contract §3), personal data as
    /// `reveal` allows (`"[erased]"` once its key was destroyed, `"[encrypted]"` without keys).
    ///
    /// # Errors
    /// When the record cannot be read (see [`RecordError`]).
    pub fn to_line(&self, reveal: Reveal<'_>) -> Result<EventLine<'_>, RecordError> {
        let view = record::decode_view(self.loop_id.as_str(), &self.record, reveal)?;
        Ok(EventLine {
            position: self.position,
            loop_id: self.loop_id.as_str(),
            version: self.version,
            event_id: view.event_id,
            source: view.source,
            event_type: view.event_type,
            time: view.time.to_string(),
            actor: view.actor,
            data: view.data,
            record: BASE64.encode(&self.record),
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The line format of `GET /v1/events` and `closeloop replay`.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine<'a> {
    /// Global position.
    pub position: u64,
    /// The loop.
    pub loop_id: &'a str,
    /// Version within the loop.
    pub version: u64,
    /// The event's id within its source.
    pub event_id: String,
    /// The event's source.
    pub source: String,
    /// The full CloudEvents type name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// Who did it, as authenticated (extension; absent in records from before actors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Its data, personal fields included as the reader may see them.
    pub data: Map<String, Value>,
    /// The exact stored record bytes, base64.
    pub record: String,
    /// The loop's previous entry's hash.
    pub prev_hash: Hash,
    /// This entry's hash.
    pub hash: Hash,
}
