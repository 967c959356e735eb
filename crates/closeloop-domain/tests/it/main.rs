//! Tests of the loop state machine, written as given-events / when-command / then-events-or-rejection.
//!
//! ```text
//! given(&[received(), acknowledged()]).when(acknowledged()).then_rejects("already_acknowledged");
//! given(&[received()]).when(responded()).then_records(EventType::Responded).at_stage(Stage::Responded);
//! ```
//!
//! Every step's data goes through [`LoopEvent::from_data`], so validation is exercised too, and
//! every given history goes through [`decide`] first: a history the rules would refuse is a
//! mistake in the test, reported as such, not a state to test against.

mod calendar;
mod limits;
mod properties;
mod rules;

use closeloop_domain::{
    Command, Event, EventType, LoopEvent, LoopId, LoopState, Rejection, Stage, Status, apply,
    decide,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

/// The loop every rule test is about.
pub const LOOP_ID: &str = "fft-rxx-000123";

/// When a given history starts: Monday 23 November 2026, 10:00 UTC. Each further given step and
/// the command come one hour after the one before, unless a step names its own time.
pub const START: &str = "2026-11-23T10:00:00Z";

/// Parses an RFC 3339 instant; panics on a typo in a test.
pub fn ts(raw: &str) -> Timestamp {
    raw.parse()
        .unwrap_or_else(|err| panic!("bad timestamp {raw:?} in test: {err}"))
}

/// The loop id of [`LOOP_ID`].
pub fn loop_id() -> LoopId {
    LoopId::parse(LOOP_ID).expect("the test loop id is valid")
}

/// One step of a loop's life: an event type, its raw `data`, and optionally when it happened.
/// Used both for the given history and for the command.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What kind of event.
    pub event_type: EventType,
    /// Its data, as a publisher would send it.
    pub data: Value,
    /// When it happens; `None`: one hour after the previous step.
    pub at: Option<Timestamp>,
}

impl Step {
    /// A step with exactly this data, valid or not.
    pub fn raw(event_type: EventType, data: Value) -> Self {
        Self {
            event_type,
            data,
            at: None,
        }
    }

    /// The same step with `field` set to `value` (added or replaced).
    pub fn with(mut self, field: &str, value: Value) -> Self {
        self.data
            .as_object_mut()
            .expect("step data is an object")
            .insert(field.to_owned(), value);
        self
    }

    /// The same step without `field`.
    pub fn without(mut self, field: &str) -> Self {
        self.data
            .as_object_mut()
            .expect("step data is an object")
            .remove(field);
        self
    }

    /// The same step, happening at `instant` (RFC 3339).
    pub fn at(mut self, instant: &str) -> Self {
        self.at = Some(ts(instant));
        self
    }

    /// Parses the step's data into a payload, as ingestion and the API do.
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] when the data does not validate.
    pub fn into_payload(self) -> Result<LoopEvent, Rejection> {
        LoopEvent::from_data(self.event_type, self.data)
    }
}

/// A valid step of the given type, with typical data.
pub fn step(event_type: EventType) -> Step {
    let data = match event_type {
        EventType::FeedbackReceived => json!({
            "org_unit": "rxx/site-a/ward-7",
            "channel": "web",
            "story": "The night staff were kind but nobody explained my discharge letter.",
            "ratings": {"fft": 2},
            "themes": ["communication", "discharge"],
        }),
        EventType::Acknowledged => {
            json!({"by": "pals-officer", "message": "Thank you, we have your feedback."})
        }
        EventType::Responded => {
            json!({"by": "ward-7-manager", "text": "We are sorry; we will look at discharge letters."})
        }
        EventType::ActionPlanned => json!({
            "by": "ward-7-manager",
            "description": "Add a plain-English summary to discharge letters",
            "owner": "discharge-lead",
            "due": "2027-01-15",
        }),
        EventType::ChangeMade => json!({
            "by": "discharge-lead",
            "description": "Discharge letters now open with a plain-English summary",
            "change_id": "chg-2027-001",
        }),
        EventType::NoChange => {
            json!({"by": "ward-7-manager", "reason": "The letter format is set nationally."})
        }
        EventType::ReportedBack => json!({
            "by": "pals-officer",
            "message": "You said the letter was unclear; we added a summary.",
            "channel": "email",
        }),
        EventType::Reopened => json!({"by": "pals-officer", "reason": "The person wrote back."}),
        EventType::Erased => json!({"by": "admin:ig-lead", "matched_by": "loop_id"}),
        EventType::StoryApproved => {
            json!({"by": "ward-7-manager", "story": "The night staff were kind."})
        }
    };
    Step::raw(event_type, data)
}

/// `feedback.received` with typical data.
pub fn received() -> Step {
    step(EventType::FeedbackReceived)
}

/// `loop.acknowledged` with typical data.
pub fn acknowledged() -> Step {
    step(EventType::Acknowledged)
}

/// `loop.responded` with typical data.
pub fn responded() -> Step {
    step(EventType::Responded)
}

/// `loop.action_planned` with typical data.
pub fn action_planned() -> Step {
    step(EventType::ActionPlanned)
}

/// `loop.change_made` with typical data.
pub fn change_made() -> Step {
    step(EventType::ChangeMade)
}

/// `loop.no_change` with typical data.
pub fn no_change() -> Step {
    step(EventType::NoChange)
}

/// `loop.reported_back` with typical data.
pub fn reported_back() -> Step {
    step(EventType::ReportedBack)
}

/// `loop.reopened` with typical data.
pub fn reopened() -> Step {
    step(EventType::Reopened)
}

/// The shortest history of a closed loop.
pub fn closed_loop() -> Vec<Step> {
    vec![received(), change_made(), reported_back()]
}

/// A loop that was closed, then reopened.
pub fn reopened_loop() -> Vec<Step> {
    vec![
        received(),
        acknowledged(),
        change_made(),
        reported_back(),
        reopened(),
    ]
}

/// A loop with this history, folded by [`LoopState::replay`].
#[derive(Debug, Clone)]
pub struct Given {
    state: Option<LoopState>,
    next_at: Timestamp,
}

/// Starts a test from a loop with this history (`&[]`: a loop never received). Panics when the
/// history is not one the rules accept.
pub fn given(history: &[Step]) -> Given {
    let mut events: Vec<Event> = Vec::new();
    let mut next_at = ts(START);
    for (index, step) in history.iter().enumerate() {
        let at = step.at.unwrap_or(next_at);
        let payload = step.clone().into_payload().unwrap_or_else(|err| {
            panic!("given step {index} ({}) is invalid: {err}", step.event_type)
        });
        let state = LoopState::replay(&events);
        let decided = decide(
            state.as_ref(),
            Command {
                loop_id: loop_id(),
                at,
                payload,
            },
        )
        .unwrap_or_else(|err| {
            panic!(
                "given step {index} ({}) is refused by the rules: {}",
                step.event_type,
                err.code()
            )
        });
        events.extend(decided.into_iter().enumerate().map(|(n, payload)| Event {
            event_id: format!("given-{index}-{n}"),
            source: "urn:test:given".to_owned(),
            time: at,
            payload,
            actor: None,
        }));
        next_at = at + SignedDuration::from_hours(1);
    }
    Given {
        state: LoopState::replay(&events),
        next_at,
    }
}

impl Given {
    /// The loop's state: `None` for a loop never received.
    pub fn into_state(self) -> Option<LoopState> {
        self.state
    }

    /// Parses the command's data and decides it against the loop.
    pub fn when(self, command: Step) -> Outcome {
        let at = command.at.unwrap_or(self.next_at);
        let event_type = command.event_type;
        let result = command.into_payload().and_then(|payload| {
            decide(
                self.state.as_ref(),
                Command {
                    loop_id: loop_id(),
                    at,
                    payload,
                },
            )
        });
        Outcome {
            before: self.state,
            command: event_type,
            at,
            result,
        }
    }
}

/// What [`decide`] answered.
#[derive(Debug)]
pub struct Outcome {
    before: Option<LoopState>,
    command: EventType,
    at: Timestamp,
    result: Result<Vec<LoopEvent>, Rejection>,
}

impl Outcome {
    /// Asserts the command was refused with this contract code.
    pub fn then_rejects(self, code: &str) {
        match self.result {
            Err(rejection) => assert_eq!(
                rejection.code(),
                code,
                "{} was refused, but for the wrong reason: {rejection}",
                self.command
            ),
            Ok(events) => panic!(
                "{} was accepted, recording {events:?}; expected rejection {code:?}",
                self.command
            ),
        }
    }

    /// Asserts the command was refused with this contract code and a message that mentions
    /// every one of `fragments`.
    pub fn then_rejects_saying(self, code: &str, fragments: &[&str]) {
        let command = self.command;
        let Err(rejection) = self.result else {
            panic!("{command} was accepted; expected rejection {code:?} saying {fragments:?}");
        };
        let message = rejection.to_string();
        assert_eq!(
            rejection.code(),
            code,
            "{command} was refused with {message:?}"
        );
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "the refusal of {command}, {message:?}, should mention {fragment:?}"
            );
        }
    }

    /// Asserts the command was accepted and records exactly one event of `event_type`; returns
    /// it with the loop's state once it is applied (at the command's time).
    pub fn then_records(self, event_type: EventType) -> Recorded {
        let events = self.result.unwrap_or_else(|rejection| {
            panic!(
                "{} was refused with {} ({rejection}); expected it to record {event_type}",
                self.command,
                rejection.code()
            )
        });
        let [event] = <[LoopEvent; 1]>::try_from(events).unwrap_or_else(|events| {
            panic!("expected exactly one {event_type} event, got {events:?}")
        });
        assert_eq!(event.event_type(), event_type, "recorded {event:?}");
        let stored = Event {
            event_id: "when-0".to_owned(),
            source: "urn:test:when".to_owned(),
            time: self.at,
            payload: event.clone(),
            actor: None,
        };
        let after = apply(self.before, &stored).expect("an accepted event leaves a loop");
        Recorded { event, after }
    }
}

/// An accepted command: the event it records and the loop's state after it.
#[derive(Debug)]
pub struct Recorded {
    /// The recorded event.
    pub event: LoopEvent,
    /// The loop once the event is applied.
    pub after: LoopState,
}

impl Recorded {
    /// Asserts the loop is now at `stage`, with the status that stage implies.
    pub fn at_stage(self, stage: Stage) -> Self {
        assert_eq!(
            self.after.stage,
            stage,
            "stage after {}",
            self.event.event_type()
        );
        let status = if stage == Stage::Closed {
            Status::Closed
        } else {
            Status::Open
        };
        assert_eq!(self.after.status(), status, "status at stage {stage:?}");
        self
    }

    /// Asserts the recorded event's data has `field` equal to `value`.
    pub fn with_field(self, field: &str, value: &Value) -> Self {
        assert_eq!(
            self.data().get(field),
            Some(value),
            "field {field:?} of the recorded {}",
            self.event.event_type()
        );
        self
    }

    /// The recorded event's data, as it would be stored.
    pub fn data(&self) -> Map<String, Value> {
        self.event.to_data()
    }
}

/// Every event type but `feedback.received`.
pub fn loop_event_types() -> impl Iterator<Item = EventType> {
    EventType::ALL
        .into_iter()
        .filter(|&t| t != EventType::FeedbackReceived)
}

/// A history after which a valid `event_type` is accepted.
pub fn history_accepting(event_type: EventType) -> Vec<Step> {
    match event_type {
        EventType::FeedbackReceived => vec![],
        EventType::ReportedBack => vec![received(), change_made()],
        EventType::Reopened => closed_loop(),
        _ => vec![received()],
    }
}
