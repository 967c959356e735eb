//! The steps staff record on a loop from its page, one form each: their fields, the event data
//! a submitted form becomes, which steps a loop takes next, and the contract's refusals in
//! words next to the field they are about.
//!
//! A form's fields are named as the event's data fields (`by`, `message`, `text`, …), so the
//! data is the form minus its empty optional fields; every rule is then checked where the
//! API checks it (`commands::record_step`), never here.

use closeloop_domain::{Channel, EventType, LoopState, Rejection, Stage};
use maud::{Markup, html as markup};
use serde_json::{Map, Value};

use super::words;
use crate::error::ApiError;
use crate::pages::form::Form;
use crate::pages::shown;

/// How a field is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One line of text.
    Line,
    /// Free text (a textarea).
    Text,
    /// A date, written `YYYY-MM-DD`.
    Date,
    /// One of the contract's channels, from a list.
    Channel,
}

/// One field of a step's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    /// The form field's name, which is the event data's field.
    pub(crate) name: &'static str,
    /// Its label.
    pub(crate) label: &'static str,
    /// What helps to fill it in.
    pub(crate) hint: Option<&'static str>,
    /// How it is entered.
    pub(crate) kind: Kind,
    /// Whether the event needs it.
    pub(crate) required: bool,
    /// The field as the subject of a sentence ("The reply"), for the limits' messages.
    pub(crate) noun: &'static str,
    /// What to say when it is left empty ("Enter the reply").
    pub(crate) missing: &'static str,
}

const BY: Field = Field {
    name: "by",
    label: "Your name or role",
    hint: Some("Recorded as who did this, for example Ward 7 manager."),
    kind: Kind::Line,
    required: true,
    noun: "Your name or role",
    missing: "Enter your name or role",
};

const fn text(
    name: &'static str,
    label: &'static str,
    hint: Option<&'static str>,
    required: bool,
    noun: &'static str,
    missing: &'static str,
) -> Field {
    Field {
        name,
        label,
        hint,
        kind: Kind::Text,
        required,
        noun,
        missing,
    }
}

/// One step of a loop, as its form records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Its last path segment: `POST /staff/loops/{loop_id}/{slug}`.
    pub(crate) slug: &'static str,
    /// The event it records.
    pub(crate) event_type: EventType,
    /// The form's heading.
    pub(crate) title: &'static str,
    /// What the step means, above the form's fields.
    pub(crate) intro: &'static str,
    /// The submit button's words.
    pub(crate) button: &'static str,
    /// The success banner once recorded.
    pub(crate) done: &'static str,
    /// Its fields, `by` first.
    pub(crate) fields: &'static [Field],
}

impl Step {
    /// The field a refusal that names no field is shown next to: the first after `by`.
    pub(crate) fn main_field(&self) -> &'static Field {
        self.fields.get(1).unwrap_or(&self.fields[0])
    }
}

/// Every step, in the order a loop usually takes them.
pub(crate) const STEPS: [Step; 8] = [
    Step {
        slug: "acknowledge",
        event_type: EventType::Acknowledged,
        title: "Acknowledge",
        intro: "Record that the person was told their feedback was heard. A loop is acknowledged once.",
        button: "Record acknowledgement",
        done: "Acknowledgement recorded.",
        fields: &[
            BY,
            text(
                "message",
                "What the person was told (optional)",
                None,
                false,
                "The message",
                "Enter what the person was told",
            ),
        ],
    },
    Step {
        slug: "respond",
        event_type: EventType::Responded,
        title: "Respond",
        intro: "Record the considered reply the person was given.",
        button: "Record response",
        done: "Response recorded.",
        fields: &[
            BY,
            text(
                "text",
                "The reply",
                None,
                true,
                "The reply",
                "Enter the reply",
            ),
        ],
    },
    Step {
        slug: "plan",
        event_type: EventType::ActionPlanned,
        title: "Plan an action",
        intro: "Record an action someone owns, with a date it is due.",
        button: "Record action",
        done: "Action recorded.",
        fields: &[
            BY,
            text(
                "description",
                "What will be done",
                None,
                true,
                "What will be done",
                "Enter what will be done",
            ),
            Field {
                name: "owner",
                label: "Who owns the action (optional)",
                hint: None,
                kind: Kind::Line,
                required: false,
                noun: "The owner",
                missing: "Enter who owns the action",
            },
            Field {
                name: "due",
                label: "When it is due (optional)",
                hint: Some("Write the date as year-month-day, for example 2027-01-15."),
                kind: Kind::Date,
                required: false,
                noun: "The due date",
                missing: "Enter when it is due",
            },
        ],
    },
    Step {
        slug: "change",
        event_type: EventType::ChangeMade,
        title: "Record a change",
        intro: "Record what changed because of this feedback. It is public on \u{201c}You said, we did\u{201d} once the loop is closed, if the person agreed.",
        button: "Record change",
        done: "Change recorded.",
        fields: CHANGE_FIELDS,
    },
    Step {
        slug: "no-change",
        event_type: EventType::NoChange,
        title: "Record that nothing could change",
        intro: "Record why nothing could change, so it can be reported back.",
        button: "Record no change",
        done: "Recorded that nothing could change.",
        fields: &[
            BY,
            text(
                "reason",
                "Why nothing could change",
                None,
                true,
                "The reason",
                "Enter why nothing could change",
            ),
        ],
    },
    Step {
        slug: "report-back",
        event_type: EventType::ReportedBack,
        title: "Report back",
        intro: "Record that the outcome was reported back to the person. This closes the loop.",
        button: "Record report back",
        done: "Report back recorded. The loop is closed.",
        fields: &[
            BY,
            text(
                "message",
                "What the person was told",
                None,
                true,
                "The message",
                "Enter what the person was told",
            ),
            Field {
                name: "channel",
                label: "How they were told (optional)",
                hint: None,
                kind: Kind::Channel,
                required: false,
                noun: "How they were told",
                missing: "Select how they were told",
            },
        ],
    },
    Step {
        slug: "reopen",
        event_type: EventType::Reopened,
        title: "Reopen",
        intro: "Reopen a closed loop. Closing it again needs a new outcome and a new report back.",
        button: "Reopen loop",
        done: "Loop reopened.",
        fields: &[
            BY,
            text(
                "reason",
                "Why it is reopened",
                None,
                true,
                "The reason",
                "Enter why it is reopened",
            ),
        ],
    },
    Step {
        slug: "approve",
        event_type: EventType::StoryApproved,
        title: "Approve the story for publication",
        intro: "Stories appear on \u{201c}You said, we did\u{201d} only once approved. Names, e-mail addresses and phone numbers are taken out either way.",
        button: "Approve story",
        done: "Story approved for publication.",
        fields: &[
            BY,
            text(
                "story",
                "The story to publish, if edited (optional)",
                Some(
                    "Leave this empty to publish the story as given. Edit it to take out anything else that could identify someone.",
                ),
                false,
                "The story",
                "Enter the story to publish",
            ),
        ],
    },
];

/// The fields of a change: on one loop's page and for many loops at once.
pub(crate) const CHANGE_FIELDS: &[Field] = &[
    BY,
    text(
        "description",
        "What changed",
        None,
        true,
        "What changed",
        "Enter what changed",
    ),
    Field {
        name: "evidence",
        label: "Where the change can be seen or checked (optional)",
        hint: Some("For example, a link to minutes or a photo."),
        kind: Kind::Text,
        required: false,
        noun: "The evidence",
        missing: "Enter where the change can be seen",
    },
];

/// The step whose path segment is `slug`.
pub(crate) fn step(slug: &str) -> Option<&'static Step> {
    STEPS.iter().find(|step| step.slug == slug)
}

/// The steps a loop in `state` takes next, as the rules of contract §1 allow them: a closed
/// loop only a reopening; an open one every step but a second acknowledgement, and a report
/// back only once it has an outcome. Approving the story is offered in every stage when
/// stories need approval.
pub(crate) fn next_steps(state: &LoopState, approval: bool) -> Vec<&'static Step> {
    STEPS
        .iter()
        .filter(|step| match step.event_type {
            EventType::Reopened => state.stage == Stage::Closed,
            EventType::StoryApproved => approval,
            _ if state.stage == Stage::Closed => false,
            EventType::Acknowledged => state.acknowledged_at.is_none(),
            EventType::ReportedBack => state.has_outcome,
            _ => true,
        })
        .collect()
}

/// The event data a submitted form of `fields` stands for: each field as sent (one-line
/// fields trimmed, line breaks as `\n`); an empty optional field is left out, an empty
/// required one sent empty, for the contract's check to refuse.
pub(crate) fn data_of(fields: &[Field], form: &Form) -> Map<String, Value> {
    let mut data = Map::new();
    for field in fields {
        let raw = form.get(field.name).unwrap_or_default();
        let value = match field.kind {
            Kind::Text => raw.replace("\r\n", "\n"),
            Kind::Line | Kind::Date | Kind::Channel => raw.trim().to_owned(),
        };
        if value.trim().is_empty() && !field.required {
            continue;
        }
        data.insert(field.name.to_owned(), Value::String(value));
    }
    data
}

/// A refusal shown next to a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The field's name.
    pub(crate) field: &'static str,
    /// What is wrong, and what to do, in words.
    pub(crate) message: String,
}

/// The words for a §1 rule's refusal; `None` for invalid data, whose message names its field.
pub(crate) fn rule_sentence(rejection: &Rejection) -> Option<&'static str> {
    Some(match rejection {
        Rejection::NoOutcome => {
            "You cannot report back yet. First record what changed, or that nothing could change."
        }
        Rejection::LoopClosed => {
            "This feedback is closed. Reopen it before recording anything else."
        }
        Rejection::AlreadyAcknowledged => "This feedback has already been acknowledged.",
        Rejection::NotClosed => {
            "This feedback is still open. Only closed feedback can be reopened."
        }
        Rejection::LoopExists(_) => "This feedback already exists.",
        Rejection::UnknownLoop(_) => {
            "There is no such feedback, or it is outside the part of the organisation you work in."
        }
        Rejection::InvalidData(_) => return None,
    })
}

/// The field error a refusal of a form of `fields` becomes, `main` taking what names no
/// field; `None` for errors that are not about the form (a conflict, a failure).
pub(crate) fn field_error(
    fields: &[Field],
    main: &'static Field,
    err: &ApiError,
) -> Option<FieldError> {
    match err {
        ApiError::Rejected(Rejection::InvalidData(detail)) => {
            let named = fields.iter().find(|field| names(detail, field.name));
            Some(match named {
                Some(field) => FieldError {
                    field: field.name,
                    message: invalid_sentence(field, detail),
                },
                None => FieldError {
                    field: main.name,
                    message: sentence_case(detail),
                },
            })
        }
        ApiError::Rejected(rejection) => Some(FieldError {
            field: main.name,
            message: rule_sentence(rejection).unwrap_or_default().to_owned(),
        }),
        ApiError::IdempotencyKeyReused => Some(FieldError {
            field: main.name,
            message: "This form was already sent with other answers. Reload the page to record something new.".to_owned(),
        }),
        _ => None,
    }
}

/// Whether the contract's message `detail` is about the field `name` (it starts with it).
fn names(detail: &str, name: &str) -> bool {
    detail
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with([' ', '.', '[', ':']))
}

/// Invalid data in `field` in words: "Enter …" when it is empty or missing, else the
/// contract's own sentence with the field's name in words.
fn invalid_sentence(field: &Field, detail: &str) -> String {
    let rest = &detail[field.name.len()..];
    if rest.starts_with(" is missing") || rest.starts_with(" must not be empty") {
        return field.missing.to_owned();
    }
    let mut sentence = format!("{}{rest}", field.noun);
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

fn sentence_case(detail: &str) -> String {
    let mut chars = detail.chars();
    let mut sentence: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

/// One field of a form, in the design system's markup: its label, hint, error (with
/// `Error:` for screen readers) and input, its value kept. `id` is unique on the page.
pub(crate) fn field_markup(id: &str, field: &Field, value: &str, error: Option<&str>) -> Markup {
    let hint_id = format!("{id}-hint");
    let error_id = format!("{id}-error");
    let mut described = Vec::new();
    if field.hint.is_some() {
        described.push(hint_id.as_str());
    }
    if error.is_some() {
        described.push(error_id.as_str());
    }
    let described = (!described.is_empty()).then(|| described.join(" "));
    let group = if error.is_some() {
        "nhsuk-form-group nhsuk-form-group--error"
    } else {
        "nhsuk-form-group"
    };
    let input_class = |base: &str| {
        if error.is_some() {
            format!("{base} {base}--error")
        } else {
            base.to_owned()
        }
    };
    markup! {
        div class=(group) {
            label class="nhsuk-label" for=(id) { (field.label) }
            @if let Some(hint) = field.hint {
                div class="nhsuk-hint" id=(hint_id) { (hint) }
            }
            @if let Some(error) = error {
                span class="nhsuk-error-message" id=(error_id) {
                    span class="nhsuk-u-visually-hidden" { "Error: " } (error)
                }
            }
            @match field.kind {
                Kind::Text => {
                    textarea class=(input_class("nhsuk-textarea")) id=(id) name=(field.name) rows="4"
                        aria-describedby=[described.as_deref()] { (shown(value)) }
                }
                Kind::Channel => {
                    select class=(input_class("nhsuk-select")) id=(id) name=(field.name)
                        aria-describedby=[described.as_deref()] {
                        option value="" selected[value.is_empty()] { "Not recorded" }
                        @for channel in Channel::ALL {
                            option value=(channel.as_str()) selected[value == channel.as_str()] {
                                (words::channel(channel))
                            }
                        }
                    }
                }
                Kind::Line | Kind::Date => {
                    input class=(input_class(if field.kind == Kind::Date { "nhsuk-input nhsuk-input--width-10" } else { "nhsuk-input" }))
                        id=(id) name=(field.name) type="text" value=(shown(value))
                        spellcheck=[(field.kind == Kind::Date).then_some("false")]
                        aria-describedby=[described.as_deref()];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> &'static Step {
        step("change").expect("change")
    }

    #[test]
    fn a_form_becomes_the_events_data_without_its_empty_optional_fields() {
        let form =
            Form::parse(b"by=+Ward+7+manager+&description=Quieter%0D%0Abins&evidence=&csrf=x")
                .expect("form");
        let data = data_of(change().fields, &form);
        assert_eq!(
            Value::Object(data),
            serde_json::json!({"by": "Ward 7 manager", "description": "Quieter\nbins"})
        );
        let empty = data_of(change().fields, &Form::default());
        assert_eq!(
            Value::Object(empty),
            serde_json::json!({"by": "", "description": ""}),
            "required fields are sent empty, for the contract to refuse"
        );
    }

    #[test]
    fn refusals_are_put_in_words_next_to_their_field() {
        let step = change();
        let check = |detail: &str| {
            field_error(
                step.fields,
                step.main_field(),
                &ApiError::Rejected(Rejection::invalid(detail)),
            )
            .expect("a field error")
        };
        let missing = check("description must not be empty");
        assert_eq!(
            (missing.field, missing.message.as_str()),
            ("description", "Enter what changed")
        );
        let long = check("by is 20001 bytes long; the limit is 20000");
        assert_eq!(long.field, "by");
        assert_eq!(
            long.message,
            "Your name or role is 20001 bytes long; the limit is 20000."
        );
        let elsewhere =
            check("this step is dated 1999-01-01T00:00:00Z, before the loop was received");
        assert_eq!(elsewhere.field, "description");
        assert!(elsewhere.message.starts_with("This step"), "{elsewhere:?}");

        let report_back = super::step("report-back").expect("report back");
        let rule = field_error(
            report_back.fields,
            report_back.main_field(),
            &ApiError::Rejected(Rejection::NoOutcome),
        )
        .expect("a field error");
        assert_eq!(rule.field, "message");
        assert!(
            rule.message.starts_with("You cannot report back yet"),
            "{rule:?}"
        );
        assert!(
            field_error(
                step.fields,
                step.main_field(),
                &ApiError::VersionConflict("moved".into())
            )
            .is_none()
        );
    }

    #[test]
    fn a_loop_is_offered_the_steps_its_stage_allows() {
        let mut state = LoopState {
            version: 1,
            stage: Stage::Received,
            org_unit: closeloop_domain::OrgUnit::parse("rxx/a").expect("unit"),
            channel: Channel::Web,
            themes: Vec::new(),
            seldom_heard: Vec::new(),
            ratings: std::collections::BTreeMap::new(),
            consent_to_publish: false,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            acknowledged_at: None,
            first_contact_at: None,
            closed_at: None,
            close_clock_from: jiff::Timestamp::UNIX_EPOCH,
            has_outcome: false,
        };
        let slugs = |state: &LoopState, approval| {
            next_steps(state, approval)
                .iter()
                .map(|step| step.slug)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            slugs(&state, false),
            ["acknowledge", "respond", "plan", "change", "no-change"]
        );
        state.acknowledged_at = Some(jiff::Timestamp::UNIX_EPOCH);
        state.has_outcome = true;
        state.stage = Stage::OutcomeRecorded;
        assert_eq!(
            slugs(&state, true),
            [
                "respond",
                "plan",
                "change",
                "no-change",
                "report-back",
                "approve"
            ]
        );
        state.stage = Stage::Closed;
        assert_eq!(slugs(&state, false), ["reopen"]);
    }
}
