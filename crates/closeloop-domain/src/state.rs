//! A loop's state, folded from its events.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::{Event, LoopEvent};
use crate::{Channel, OrgUnit};

/// How far a loop has come. Stages are ordered: a loop never moves to an earlier stage except
/// by `loop.reopened`, which sets it back to [`Stage::Responded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Logged.
    Received,
    /// The person was told it was heard.
    Acknowledged,
    /// A considered reply was given.
    Responded,
    /// An action is owned, with a due date.
    ActionPlanned,
    /// What changed (or why nothing could) is on record.
    OutcomeRecorded,
    /// The outcome was reported back: the loop is closed.
    Closed,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] = [
        Stage::Received,
        Stage::Acknowledged,
        Stage::Responded,
        Stage::ActionPlanned,
        Stage::OutcomeRecorded,
        Stage::Closed,
    ];

    /// The contract's name for the stage.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Acknowledged => "acknowledged",
            Stage::Responded => "responded",
            Stage::ActionPlanned => "action_planned",
            Stage::OutcomeRecorded => "outcome_recorded",
            Stage::Closed => "closed",
        }
    }

    /// Parses a stage name; `None` when it is not one.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        Stage::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// `closed` when the stage is [`Stage::Closed`], otherwise `open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still being worked.
    Open,
    /// Reported back.
    Closed,
}

/// Everything the rules and the due dates need to know about one loop.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopState {
    /// How many events the loop has (its stream version).
    pub version: u64,
    /// How far it has come.
    pub stage: Stage,
    /// Where the feedback is about.
    pub org_unit: OrgUnit,
    /// How it arrived.
    pub channel: Channel,
    /// Its themes.
    pub themes: Vec<String>,
    /// Its seldom-heard community tags.
    pub seldom_heard: Vec<String>,
    /// Its ratings.
    pub ratings: BTreeMap<String, serde_json::Number>,
    /// Whether the person agreed to publication of their (redacted) story.
    pub consent_to_publish: bool,
    /// When the feedback was received.
    pub received_at: Timestamp,
    /// When `loop.acknowledged` was recorded.
    pub acknowledged_at: Option<Timestamp>,
    /// When the person first heard back in any way (an acknowledgement or any later step):
    /// this is what meets the acknowledgement due date.
    pub first_contact_at: Option<Timestamp>,
    /// When the loop was last closed; `None` while open.
    pub closed_at: Option<Timestamp>,
    /// When the clock for closing started: `received_at`, or the last reopening.
    pub close_clock_from: Timestamp,
    /// Whether a change or no-change was recorded since receipt or the last reopening.
    pub has_outcome: bool,
}

impl LoopState {
    /// `open` or `closed`.
    #[must_use]
    pub fn status(&self) -> Status {
        if self.stage == Stage::Closed {
            Status::Closed
        } else {
            Status::Open
        }
    }

    /// Folds a loop's events, in version order, into its state; `None` for no events.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        events.into_iter().fold(None, apply)
    }

    fn advance_to(&mut self, stage: Stage) {
        self.stage = self.stage.max(stage);
    }
}

/// Applies one recorded event to a loop's state.
///
/// `feedback.received` creates the state; every other event needs one. Events come from
/// [`decide`](crate::decide) and the log, so they already obey the rules: `apply` does not
/// check them again.
#[must_use]
pub fn apply(state: Option<LoopState>, event: &Event) -> Option<LoopState> {
    if let LoopEvent::FeedbackReceived(data) = &event.payload {
        let received_at = data.received_at.unwrap_or(event.time);
        return Some(LoopState {
            version: 1,
            stage: Stage::Received,
            org_unit: data.org_unit.clone(),
            channel: data.channel,
            themes: data.themes.clone(),
            seldom_heard: data.seldom_heard.clone(),
            ratings: data.ratings.clone(),
            consent_to_publish: data.consent_to_publish,
            received_at,
            acknowledged_at: None,
            first_contact_at: None,
            closed_at: None,
            close_clock_from: received_at,
            has_outcome: false,
        });
    }
    let mut state = state?;
    state.version += 1;
    let contacts_the_person = !matches!(
        event.payload,
        LoopEvent::Reopened(_) | LoopEvent::Erased(_) | LoopEvent::StoryApproved(_)
    );
    if state.first_contact_at.is_none() && contacts_the_person {
        state.first_contact_at = Some(event.time);
    }
    match &event.payload {
        LoopEvent::FeedbackReceived(_) => unreachable!("handled above"),
        LoopEvent::Acknowledged(_) => {
            state.acknowledged_at = Some(event.time);
            state.advance_to(Stage::Acknowledged);
        }
        LoopEvent::Responded(_) => state.advance_to(Stage::Responded),
        LoopEvent::ActionPlanned(_) => state.advance_to(Stage::ActionPlanned),
        LoopEvent::ChangeMade(_) | LoopEvent::NoChange(_) => {
            state.has_outcome = true;
            state.advance_to(Stage::OutcomeRecorded);
        }
        LoopEvent::ReportedBack(_) => {
            state.closed_at = Some(event.time);
            state.advance_to(Stage::Closed);
        }
        LoopEvent::Erased(_) | LoopEvent::StoryApproved(_) => {}
        LoopEvent::Reopened(_) => {
            state.stage = Stage::Responded;
            state.closed_at = None;
            state.has_outcome = false;
            state.close_clock_from = event.time;
        }
    }
    Some(state)
}
