//! Integration tests of the read models and the projector, as one test binary.
//!
//! [`Log`] builds a valid global log the way the service does: each command goes through
//! `closeloop_domain::decide`, and what it accepts becomes a [`StoredEvent`] with the next
//! position and version. Tests then feed that log to [`ReadModels`] and check the answers.

mod insights;
mod limits;
mod list;
mod projector;
mod properties;
mod published;
mod redact;
mod snapshot;
mod stats;
mod story_cache;
mod summary;

use std::collections::BTreeMap;

use closeloop_domain::{Command, Event, EventType, LoopEvent, LoopId, LoopState, Rejection, Sla};
use closeloop_projections::{LoopQuery, ReadModels, StatusFilter};
use closeloop_store::{Hash, StoredEvent, record};
use jiff::Timestamp;
use serde_json::{Value, json};

/// Parses an RFC 3339 instant.
pub fn ts(raw: &str) -> Timestamp {
    raw.parse().expect("valid timestamp")
}

/// Parses a loop id.
pub fn id(raw: &str) -> LoopId {
    LoopId::parse(raw).expect("valid loop id")
}

/// The contract's default SLA: 3 and 25 working days, Monday to Friday.
pub fn sla() -> Sla {
    Sla::default()
}

/// A global log built through the domain's rules.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub entries: Vec<(StoredEvent, Event)>,
    states: BTreeMap<String, LoopState>,
}

impl Log {
    /// Decides `payload` for `loop_id` at `at`; on acceptance appends the events to the log.
    pub fn try_command(
        &mut self,
        loop_id: &str,
        at: Timestamp,
        payload: LoopEvent,
    ) -> Result<(), Rejection> {
        let state = self.states.get(loop_id).cloned();
        let events = closeloop_domain::decide(
            state.as_ref(),
            Command {
                loop_id: id(loop_id),
                at,
                payload,
            },
        )?;
        let mut state = state;
        for payload in events {
            let position = self.entries.len() as u64 + 1;
            let event = Event {
                event_id: format!("e-{position}"),
                source: "urn:test:projections".to_owned(),
                time: at,
                payload,
                actor: None,
            };
            state = closeloop_domain::apply(state, &event);
            let version = state
                .as_ref()
                .expect("accepted events make a state")
                .version;
            let entry = StoredEvent {
                position,
                loop_id: id(loop_id),
                version,
                prev_hash: Hash::ZERO,
                hash: Hash::ZERO,
                record: record::encode(&event),
            };
            self.entries.push((entry, event));
        }
        self.states.insert(
            loop_id.to_owned(),
            state.expect("accepted events make a state"),
        );
        Ok(())
    }

    /// Appends `payload` as stored, without asking `decide`: for events a log may hold from
    /// before today's limits, which `decide` would now refuse.
    pub fn stored(&mut self, loop_id: &str, at: &str, payload: LoopEvent) -> &mut Self {
        let at = ts(at);
        let state = self.states.get(loop_id).cloned();
        let position = self.entries.len() as u64 + 1;
        let event = Event {
            event_id: format!("e-{position}"),
            source: "urn:test:projections".to_owned(),
            time: at,
            payload,
            actor: None,
        };
        let state = closeloop_domain::apply(state, &event).expect("the event makes a state");
        let entry = StoredEvent {
            position,
            loop_id: id(loop_id),
            version: state.version,
            prev_hash: Hash::ZERO,
            hash: Hash::ZERO,
            record: record::encode(&event),
        };
        self.entries.push((entry, event));
        self.states.insert(loop_id.to_owned(), state);
        self
    }

    /// Records an event that must be accepted.
    pub fn cmd(
        &mut self,
        loop_id: &str,
        at: &str,
        event_type: EventType,
        data: Value,
    ) -> &mut Self {
        let payload = LoopEvent::from_data(event_type, data).expect("valid test data");
        self.try_command(loop_id, ts(at), payload)
            .unwrap_or_else(|r| panic!("{event_type} for {loop_id} was refused: {r}"));
        self
    }

    /// Receives feedback: `data` is the `feedback.received` data.
    pub fn receive(&mut self, loop_id: &str, at: &str, data: Value) -> &mut Self {
        self.cmd(loop_id, at, EventType::FeedbackReceived, data)
    }

    /// Receives minimal feedback in `org_unit` via the web.
    pub fn feedback(&mut self, loop_id: &str, at: &str, org_unit: &str) -> &mut Self {
        self.receive(
            loop_id,
            at,
            json!({"org_unit": org_unit, "channel": "web", "ratings": {"fft": 1}}),
        )
    }

    /// Acknowledges, records a change and reports back: the loop ends closed.
    pub fn close(&mut self, loop_id: &str, at: &str) -> &mut Self {
        let state = &self.states[loop_id];
        if state.first_contact_at.is_none() {
            self.cmd(loop_id, at, EventType::Acknowledged, json!({"by": "pals"}));
        }
        self.cmd(
            loop_id,
            at,
            EventType::ChangeMade,
            json!({"by": "ward manager", "description": "Added evening visiting hours"}),
        )
        .cmd(
            loop_id,
            at,
            EventType::ReportedBack,
            json!({"by": "pals", "message": "We changed it"}),
        )
    }

    /// The domain state of a loop, folded by `closeloop_domain::apply`.
    pub fn state(&self, loop_id: &str) -> &LoopState {
        &self.states[loop_id]
    }

    /// Every loop id, sorted.
    pub fn loop_ids(&self) -> Vec<String> {
        self.states.keys().cloned().collect()
    }

    /// Read models with the whole log applied.
    pub fn models(&self) -> ReadModels {
        let mut models = ReadModels::default();
        self.apply_to(&mut models);
        models
    }

    /// Applies the entries `models` has not seen yet.
    pub fn apply_to(&self, models: &mut ReadModels) {
        let done = usize::try_from(models.checkpoint()).unwrap();
        for (entry, event) in &self.entries[done..] {
            models.apply(entry, event);
        }
    }
}

/// A query for every loop, in one page.
pub fn all() -> LoopQuery {
    LoopQuery {
        status: StatusFilter::All,
        limit: 100_000,
        ..LoopQuery::default()
    }
}

/// The loop ids of one page of `query`.
pub fn ids_of(models: &ReadModels, query: &LoopQuery, now: Timestamp) -> Vec<String> {
    models
        .list(query, now, &sla())
        .expect("valid query")
        .items
        .into_iter()
        .map(|s| s.loop_id.as_str().to_owned())
        .collect()
}
