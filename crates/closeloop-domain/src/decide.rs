//! The rules of contract §1: which commands a loop accepts.

use jiff::Timestamp;

use crate::event::LoopEvent;
use crate::{LoopId, LoopState, Rejection, Stage};

/// A request to record something about a loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The loop it is about.
    pub loop_id: LoopId,
    /// When it happened; fills in defaults such as `received_at`.
    pub at: Timestamp,
    /// What to record.
    pub payload: LoopEvent,
}

/// Decides what a command records, given the loop's current state (`None`: never received).
///
/// Returns the events to append, or the [`Rejection`] that says which rule of contract §1 the
/// command breaks. Pure: the same state and command always give the same answer.
///
/// # Errors
/// - [`Rejection::LoopExists`]: feedback for a loop that exists;
/// - [`Rejection::UnknownLoop`]: anything else for a loop that was never received;
/// - [`Rejection::LoopClosed`]: anything but a reopening on a closed loop;
/// - [`Rejection::NotClosed`]: a reopening on an open loop;
/// - [`Rejection::AlreadyAcknowledged`]: a second acknowledgement;
/// - [`Rejection::NoOutcome`]: a report-back with no outcome since receipt or reopening.
pub fn decide(state: Option<&LoopState>, command: Command) -> Result<Vec<LoopEvent>, Rejection> {
    let Command {
        loop_id,
        at,
        payload,
    } = command;
    let Some(state) = state else {
        return match payload {
            LoopEvent::FeedbackReceived(mut data) => {
                data.received_at.get_or_insert(at);
                Ok(vec![LoopEvent::FeedbackReceived(data)])
            }
            _ => Err(Rejection::UnknownLoop(loop_id.as_str().to_owned())),
        };
    };
    match &payload {
        LoopEvent::FeedbackReceived(_) => {
            return Err(Rejection::LoopExists(loop_id.as_str().to_owned()));
        }
        LoopEvent::Reopened(_) if state.stage != Stage::Closed => return Err(Rejection::NotClosed),
        LoopEvent::Reopened(_) => {}
        _ if state.stage == Stage::Closed => return Err(Rejection::LoopClosed),
        LoopEvent::Acknowledged(_) if state.acknowledged_at.is_some() => {
            return Err(Rejection::AlreadyAcknowledged);
        }
        LoopEvent::ReportedBack(_) if !state.has_outcome => return Err(Rejection::NoOutcome),
        _ => {}
    }
    Ok(vec![payload])
}
