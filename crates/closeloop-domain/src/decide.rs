//! The rules of contract §1: which commands a loop accepts.

use jiff::Timestamp;
use jiff::tz::Offset;

use crate::event::LoopEvent;
use crate::{Limits, LoopId, LoopState, Rejection, Stage};

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

/// Decides what a command records, given the loop's current state (`None`: never received),
/// under the default [`Limits`]. See [`decide_with`].
///
/// # Errors
/// As [`decide_with`].
pub fn decide(state: Option<&LoopState>, command: Command) -> Result<Vec<LoopEvent>, Rejection> {
    decide_with(state, command, &Limits::DEFAULT)
}

/// Decides what a command records, given the loop's current state (`None`: never received),
/// with the time rules of `limits`.
///
/// Returns the events to append, or the [`Rejection`] that says which rule of contract §1 the
/// command breaks. Pure: the same state and command always give the same answer.
///
/// # Errors
/// - [`Rejection::InvalidData`]: a time outside the window of `limits`: the command's time
///   before [`Limits::earliest`]; `received_at` before it or more than [`Limits::max_future`]
///   after the command's time; a `due` date before it; or a step dated before the loop was
///   received. Data problems come first, as they do in [`LoopEvent::from_data`];
/// - [`Rejection::LoopExists`]: feedback for a loop that exists;
/// - [`Rejection::UnknownLoop`]: anything else for a loop that was never received;
/// - [`Rejection::LoopClosed`]: anything but a reopening on a closed loop;
/// - [`Rejection::NotClosed`]: a reopening on an open loop;
/// - [`Rejection::AlreadyAcknowledged`]: a second acknowledgement;
/// - [`Rejection::NoOutcome`]: a report-back with no outcome since receipt or reopening.
pub fn decide_with(
    state: Option<&LoopState>,
    command: Command,
    limits: &Limits,
) -> Result<Vec<LoopEvent>, Rejection> {
    let Command {
        loop_id,
        at,
        payload,
    } = command;
    check_times(state, at, &payload, limits)?;
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
        // Erasures and story approvals are accepted in every stage (contract §3 v1.1); they
        // change neither stage nor status.
        LoopEvent::Reopened(_) | LoopEvent::Erased(_) | LoopEvent::StoryApproved(_) => {}
        _ if state.stage == Stage::Closed => return Err(Rejection::LoopClosed),
        LoopEvent::Acknowledged(_) if state.acknowledged_at.is_some() => {
            return Err(Rejection::AlreadyAcknowledged);
        }
        LoopEvent::ReportedBack(_) if !state.has_outcome => return Err(Rejection::NoOutcome),
        _ => {}
    }
    Ok(vec![payload])
}

/// The time rules: every time the command names lies in the window of `limits`, and no step is
/// dated before its loop was received (a reply cannot come before the feedback it answers, and
/// due dates would count from the wrong day).
fn check_times(
    state: Option<&LoopState>,
    at: Timestamp,
    payload: &LoopEvent,
    limits: &Limits,
) -> Result<(), Rejection> {
    if let LoopEvent::FeedbackReceived(data) = payload {
        return match data.received_at {
            Some(received_at) => limits
                .check_time(received_at, at)
                .map_err(|out| Rejection::invalid(out.sentence("received_at", "the event's time"))),
            // Absent, it is the command's time, which is never ahead of itself.
            None => limits.check_time(at, at).map_err(|out| {
                Rejection::invalid(
                    out.sentence("the event's time (received_at by default)", "itself"),
                )
            }),
        };
    }
    if at < limits.earliest {
        return Err(Rejection::invalid(format!(
            "the event's time {at} is before the earliest accepted time {}; check the date",
            limits.earliest
        )));
    }
    if let LoopEvent::ActionPlanned(data) = payload
        && let Some(due) = data.due
    {
        let earliest = Offset::UTC.to_datetime(limits.earliest).date();
        if due < earliest {
            return Err(Rejection::invalid(format!(
                "due is {due}, before the earliest accepted date {earliest}; check the date"
            )));
        }
    }
    if let Some(state) = state
        && at < state.received_at
    {
        return Err(Rejection::invalid(format!(
            "this step is dated {at}, before the loop was received ({}); a step cannot come before the feedback it answers, so check the event's time",
            state.received_at
        )));
    }
    Ok(())
}
