//! Logs for the read models' tests: events stored as the store stores them.

use closeloop_domain::{Event, LoopEvent, LoopId, LoopState};
use closeloop_store::{Hash, StoredEvent, record};
use jiff::Timestamp;

/// Stores `payloads` as a loop's next entries: positions after the last of `entries`,
/// versions after `state`'s, each event at `at` from `source`. Returns the loop's state after
/// them.
pub(crate) fn store_events(
    entries: &mut Vec<(StoredEvent, Event)>,
    mut state: Option<LoopState>,
    loop_id: &LoopId,
    source: &str,
    at: Timestamp,
    payloads: Vec<LoopEvent>,
) -> Option<LoopState> {
    for payload in payloads {
        let event = Event {
            event_id: format!("e-{}", entries.len()),
            source: source.to_owned(),
            time: at,
            payload,
            actor: None,
        };
        state = closeloop_domain::apply(state, &event);
        let entry = StoredEvent {
            position: entries.len() as u64 + 1,
            loop_id: loop_id.clone(),
            version: state.as_ref().map_or(1, |s| s.version),
            prev_hash: Hash::ZERO,
            hash: Hash::ZERO,
            record: record::encode(&event),
        };
        entries.push((entry, event));
    }
    state
}
