//! One loop's page (`GET /staff/loops/{loop_id}`): its summary, the story and who gave it,
//! the timeline, and a form for each step the loop takes next; and the forms' target (`POST
//! /staff/loops/{loop_id}/{step}`).
//!
//! The page shows personal data, so each time it is shown the read is recorded in the access
//! log first (what `timeline`), and refused with 503 when it cannot be. A loop outside the
//! credential's org-unit scope is answered as one that does not exist.
//!
//! Each form carries the loop's version as `version`: a form filled in while someone else
//! recorded a step is refused (409, as `If-Match` is) and the page shows the loop's new state
//! with the form as it was filled in. A rule or data error shows the page again with the
//! error next to its field (422). A form also carries a random `form_key`, sent as its
//! idempotency key, so the same form sent twice records once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use closeloop_access::What;
use closeloop_domain::{Event, LoopEvent, LoopId, LoopState, Rejection};
use closeloop_projections::LoopSummary;
use closeloop_store::EventStore;
use maud::{Markup, html as markup};

use super::steps::{self, FieldError, Step};
use super::{Problem, banner, day, error_summary, moment, page, words};
use crate::AppState;
use crate::access;
use crate::auth::Credential;
use crate::commands::{self, Idempotency};
use crate::error::ApiError;
use crate::pages::form::{Form, random_token};
use crate::pages::refusal::{Refusal, see_other};
use crate::pages::session::SignedIn;
use crate::pages::shown;
use crate::pages::sign_in::staff_frame;
use crate::reads::{caught_up, models};
use crate::request_id::RequestId;

/// Random bytes of a form's idempotency key.
const FORM_KEY_BYTES: usize = 16;

/// Who is asking, as the guard handed them over.
pub(crate) struct Caller {
    pub(crate) credential: Credential,
    pub(crate) signed_in: Option<SignedIn>,
    pub(crate) request_id: RequestId,
}

impl Caller {
    /// A field of a form as it is shown: as it was sent, when the form is shown again after a
    /// refusal; else empty, but for `by`, which starts as the credential's name.
    pub(crate) fn prefilled(&self, sent: Option<&Form>, name: &str) -> String {
        match sent {
            Some(form) => form.get(name).unwrap_or_default().to_owned(),
            None if name == "by" => self.credential.name.clone().unwrap_or_default(),
            None => String::new(),
        }
    }

    /// A form's idempotency key: the one it was sent with, when it is shown again after a
    /// refusal (nothing was recorded under it); else a new one.
    pub(crate) fn form_key(sent: Option<&Form>) -> String {
        sent.and_then(|form| form.get("form_key"))
            .filter(|key| !key.is_empty())
            .map_or_else(random_token::<FORM_KEY_BYTES>, str::to_owned)
    }

    /// A refusal page for this caller.
    pub(crate) fn refuse<S>(&self, state: &AppState<S>, refusal: &Refusal) -> Response {
        refusal.page(&state.site, self.signed_in.as_ref(), Some(&self.request_id))
    }
}

/// What a rendering of the page adds to the loop: a banner for a step just recorded, or the
/// form that failed.
#[derive(Default)]
struct View<'a> {
    done: Option<&'static Step>,
    failed: Option<Failed<'a>>,
}

/// A form that was sent and not recorded, shown again as it was filled in.
struct Failed<'a> {
    step: &'static Step,
    form: &'a Form,
    /// The error next to a field; `None` for a version conflict.
    error: Option<FieldError>,
}

/// `GET /staff/loops/{loop_id}`; `done` names the step just recorded, for its banner.
pub(crate) async fn show<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    signed_in: Option<Extension<SignedIn>>,
    Extension(request_id): Extension<RequestId>,
    Path(loop_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let caller = Caller {
        credential,
        signed_in: signed_in.map(|Extension(signed_in)| signed_in),
        request_id,
    };
    let done = match params.get("done").map(String::as_str) {
        None | Some("") => None,
        Some(slug) => match steps::step(slug) {
            Some(step) => Some(step),
            None => {
                return caller.refuse(
                    &state,
                    &Refusal::of(&ApiError::InvalidRequest(format!(
                        "query parameter done: {slug:?} is not a step this page records"
                    ))),
                );
            }
        },
    };
    let Ok(loop_id) = LoopId::parse(&loop_id) else {
        return caller.refuse(
            &state,
            &Refusal::of(&Rejection::UnknownLoop(loop_id).into()),
        );
    };
    let view = View { done, failed: None };
    render(&state, &caller, &loop_id, &view, StatusCode::OK).await
}

/// `POST /staff/loops/{loop_id}/{step}`: records the step through the API's command path;
/// on success `303` back to the loop's page with a banner.
pub(crate) async fn record<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    signed_in: Option<Extension<SignedIn>>,
    Extension(request_id): Extension<RequestId>,
    OriginalUri(uri): OriginalUri,
    Path((loop_id, slug)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let caller = Caller {
        credential,
        signed_in: signed_in.map(|Extension(signed_in)| signed_in),
        request_id,
    };
    let Some(step) = steps::step(&slug) else {
        return caller.refuse(
            &state,
            &Refusal::of(&ApiError::NotFound(format!("no step {slug}"))),
        );
    };
    let Ok(loop_id) = LoopId::parse(&loop_id) else {
        return caller.refuse(
            &state,
            &Refusal::of(&Rejection::UnknownLoop(loop_id).into()),
        );
    };
    let Ok(form) = Form::parse(&body) else {
        return caller.refuse(&state, &too_many_fields());
    };
    let Some(expected) = form.get("version").and_then(|raw| raw.parse::<u64>().ok()) else {
        return caller.refuse(&state, &incomplete_form(&loop_id));
    };
    let data = steps::data_of(step.fields, &form);
    let key = form
        .get("form_key")
        .and_then(|key| Idempotency::new(&caller.credential, key, uri.path(), &data));
    let recorded = commands::record_step(
        &state,
        &caller.credential,
        loop_id.clone(),
        step.event_type,
        data,
        key,
        Some(expected),
    )
    .await;
    let Err(err) = recorded else {
        return see_other(&format!("/staff/loops/{loop_id}?done={}", step.slug));
    };
    let (status, error) = match &err {
        ApiError::VersionConflict(_) => (StatusCode::CONFLICT, None),
        ApiError::Rejected(Rejection::UnknownLoop(_)) => {
            return caller.refuse(&state, &Refusal::of(&err));
        }
        _ => match steps::field_error(step.fields, step.main_field(), &err) {
            Some(error) => (StatusCode::UNPROCESSABLE_ENTITY, Some(error)),
            None => return caller.refuse(&state, &Refusal::of(&err)),
        },
    };
    let view = View {
        done: None,
        failed: Some(Failed {
            step,
            form: &form,
            error,
        }),
    };
    render(&state, &caller, &loop_id, &view, status).await
}

pub(crate) fn too_many_fields() -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "The form was too large",
        "Nothing was recorded. Send less at once.",
    )
    .with_link("/staff", "Go to the work queue")
}

fn incomplete_form(loop_id: &LoopId) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "The form was incomplete",
        "The form did not say which version of the loop it was filled in on, so nothing was recorded. Open the loop again and use its forms.",
    )
    .with_link(&format!("/staff/loops/{loop_id}"), "Open the loop again")
}

/// What the page shows of a loop, read for one request.
struct Shown {
    summary: LoopSummary,
    events: Vec<Event>,
    state: LoopState,
}

/// Reads a loop for its page: after the read models have caught up, its summary (refused as
/// unknown outside the caller's scope) and its events with their personal data; records the
/// read in the access log before returning it.
async fn read<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loop_id: &LoopId,
) -> Result<Shown, ApiError> {
    let unknown = || ApiError::from(Rejection::UnknownLoop(loop_id.as_str().to_owned()));
    caught_up(state).await?;
    let now = (state.clock)();
    let summary = models(state)?
        .summary(loop_id, now, &state.sla)
        .filter(|summary| credential.covers(&summary.org_unit))
        .ok_or_else(unknown)?;
    let entries = state.store.read_loop(loop_id).await?;
    let mut events = Vec::with_capacity(entries.len());
    for entry in &entries {
        events.push(
            entry
                .event_as(state.reveal())
                .map_err(|err| ApiError::Internal(format!("position {}: {err}", entry.position)))?,
        );
    }
    let loop_state = LoopState::replay(&events).ok_or_else(unknown)?;
    access::record_read(state, credential, Some(loop_id), What::Timeline).await?;
    Ok(Shown {
        summary,
        events,
        state: loop_state,
    })
}

async fn render<S: EventStore>(
    state: &AppState<S>,
    caller: &Caller,
    loop_id: &LoopId,
    view: &View<'_>,
    status: StatusCode,
) -> Response {
    let shown = match read(state, &caller.credential, loop_id).await {
        Ok(shown) => shown,
        Err(err) => return caller.refuse(state, &Refusal::of(&err)),
    };
    let place = state.site.place_name(shown.summary.org_unit.as_str());
    // A page shown again with an error says so first in its title, as screen readers read it.
    let error = if status.is_client_error() {
        "Error: "
    } else {
        ""
    };
    let title = format!("{error}Feedback about {place}");
    let frame = staff_frame(&title, &caller.credential, caller.signed_in.as_ref());
    let body = body(state, caller, loop_id, &shown, &place, view);
    page(&state.site, &frame, &body, status)
}

fn body<S>(
    state: &AppState<S>,
    caller: &Caller,
    loop_id: &LoopId,
    shown: &Shown,
    place: &str,
    view: &View<'_>,
) -> Markup {
    let mut next = steps::next_steps(&shown.state, state.publish_requires_approval);
    if let Some(failed) = &view.failed
        && !next.iter().any(|step| step.slug == failed.step.slug)
    {
        next.push(failed.step);
    }
    let problems: Vec<Problem> = view
        .failed
        .iter()
        .filter_map(|failed| {
            failed.error.as_ref().map(|error| Problem {
                anchor: format!("{}-{}", failed.step.slug, error.field),
                message: error.message.clone(),
            })
        })
        .collect();
    let conflict = view
        .failed
        .as_ref()
        .filter(|failed| failed.error.is_none())
        .map(|failed| {
            format!(
                "Someone else changed this loop while you were filling in \u{201c}{}\u{201d}, so it was not recorded. This is the loop as it is now: check it, then send the form again if it is still needed.",
                failed.step.title
            )
        });
    let summary = &shown.summary;
    markup! {
        a class="nhsuk-back-link" href="/staff" { "Back to open loops" }
        (error_summary(&problems))
        @if let Some(conflict) = &conflict { (banner(false, conflict)) }
        @if let Some(done) = view.done { (banner(true, done.done)) }
        span class="nhsuk-caption-l" { (place) }
        h1 { "Feedback received " (day(summary.received_at)) }
        (summary_list(state, summary, &shown.state))
        h2 { "What they said" }
        (story(&shown.events))
        h2 { "Next steps" }
        @if next.is_empty() {
            p { "Nothing more can be recorded on this loop now." }
        }
        @for step in &next {
            (step_form(caller, loop_id, shown.state.version, step, view.failed.as_ref().filter(|failed| failed.step.slug == step.slug)))
        }
        h2 { "Timeline" }
        ol class="nhsuk-list" {
            @for event in &shown.events {
                li { (timeline_entry(event)) }
            }
        }
    }
}

fn summary_list<S>(state: &AppState<S>, summary: &LoopSummary, loop_state: &LoopState) -> Markup {
    let rows: Vec<(&str, Markup)> = vec![
        ("Status", status_tag(summary)),
        ("Stage", markup! { (words::stage(summary.stage)) }),
        (
            "Place",
            markup! { (state.site.place_name(summary.org_unit.as_str())) },
        ),
        ("Org unit", markup! { (summary.org_unit.as_str()) }),
        ("Channel", markup! { (words::channel(summary.channel)) }),
        ("Themes", list_or_none(&summary.themes)),
        ("Ratings", ratings(summary)),
        (
            "Seldom-heard communities",
            list_or_none(&summary.seldom_heard),
        ),
        ("Received", markup! { (moment(summary.received_at)) }),
        (
            "Acknowledge by",
            markup! {
                (day(summary.acknowledge_by))
                @if let Some(at) = summary.acknowledged_at { " (acknowledged " (day(at)) ")" }
            },
        ),
        (
            "Close by",
            markup! {
                (day(summary.close_by))
                @if let Some(at) = summary.closed_at { " (closed " (day(at)) ")" }
            },
        ),
        (
            "Agreed to publication",
            markup! { (if loop_state.consent_to_publish { "Yes" } else { "No" }) },
        ),
        ("Public id", markup! { (summary.public_id) }),
        ("Loop reference", markup! { (summary.loop_id.as_str()) }),
    ];
    markup! {
        dl class="nhsuk-summary-list" {
            @for (key, value) in rows {
                div class="nhsuk-summary-list__row" {
                    dt class="nhsuk-summary-list__key" { (key) }
                    dd class="nhsuk-summary-list__value" { (value) }
                }
            }
        }
    }
}

/// The loop's status as a tag with words (never colour alone).
pub(crate) fn status_tag(summary: &LoopSummary) -> Markup {
    markup! {
        @if summary.overdue {
            strong class="nhsuk-tag nhsuk-tag--red" { "Overdue" }
        } @else if summary.closed_at.is_some() && summary.stage == closeloop_domain::Stage::Closed {
            strong class="nhsuk-tag nhsuk-tag--grey" { "Closed" }
        } @else {
            strong class="nhsuk-tag nhsuk-tag--blue" { "Open" }
        }
    }
}

fn list_or_none(items: &[String]) -> Markup {
    markup! {
        @if items.is_empty() { "None" } @else { (shown(&items.join(", "))) }
    }
}

fn ratings(summary: &LoopSummary) -> Markup {
    markup! {
        @if summary.ratings.is_empty() { "None" }
        @for (name, value) in &summary.ratings {
            @if name == "fft" {
                "Friends and Family Test: " (value) (fft_words(value)) br;
            } @else {
                (shown(name)) ": " (value) br;
            }
        }
    }
}

/// The Friends and Family Test answer in words (contract §2).
fn fft_words(value: &serde_json::Number) -> &'static str {
    match value.as_u64() {
        Some(1) => " (very good)",
        Some(2) => " (good)",
        Some(3) => " (neither good nor poor)",
        Some(4) => " (poor)",
        Some(5) => " (very poor)",
        Some(6) => " (don't know)",
        _ => "",
    }
}

/// The story and who gave it, from the loop's first event; after an erasure, that they were
/// erased.
fn story(events: &[Event]) -> Markup {
    let Some(LoopEvent::FeedbackReceived(received)) = events.first().map(|event| &event.payload)
    else {
        return markup! { p { "The feedback cannot be read." } };
    };
    let erased = events
        .iter()
        .any(|event| matches!(event.payload, LoopEvent::Erased(_)));
    markup! {
        @match received.story.as_deref() {
            Some(story) if !story.trim().is_empty() => {
                div class="nhsuk-inset-text" {
                    span class="nhsuk-u-visually-hidden" { "Story: " }
                    (text_block(story))
                }
            }
            _ => { p { "No story was given, only ratings." } }
        }
        dl class="nhsuk-summary-list" {
            div class="nhsuk-summary-list__row" {
                dt class="nhsuk-summary-list__key" { "Given by" }
                dd class="nhsuk-summary-list__value" {
                    @match &received.author {
                        Some(author) if author.anonymous => "Anonymous",
                        Some(author) => {
                            @if let Some(name) = &author.name { (shown(name)) br; }
                            @if let Some(contact) = &author.contact { (shown(contact)) }
                            @if author.name.is_none() && author.contact.is_none() { "Not recorded" }
                        }
                        None if erased => "Erased",
                        None => "Not recorded",
                    }
                }
            }
            @if let Some(language) = &received.language {
                div class="nhsuk-summary-list__row" {
                    dt class="nhsuk-summary-list__key" { "Language" }
                    dd class="nhsuk-summary-list__value" { (shown(language)) }
                }
            }
        }
    }
}

/// Free text as paragraphs, its line breaks kept.
fn text_block(text: &str) -> Markup {
    markup! {
        @for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            p {
                @for (i, line) in paragraph.lines().enumerate() {
                    @if i > 0 { br; }
                    (shown(line))
                }
            }
        }
    }
}

fn step_form(
    caller: &Caller,
    loop_id: &LoopId,
    version: u64,
    step: &Step,
    failed: Option<&Failed<'_>>,
) -> Markup {
    let value = |name: &str| caller.prefilled(failed.map(|failed| failed.form), name);
    let key = Caller::form_key(failed.map(|failed| failed.form));
    let error = failed.and_then(|failed| failed.error.as_ref());
    markup! {
        details class="nhsuk-details" id={ "step-" (step.slug) } open[failed.is_some()] {
            summary class="nhsuk-details__summary" {
                span class="nhsuk-details__summary-text" { (step.title) }
            }
            div class="nhsuk-details__text" {
                p { (step.intro) }
                form method="post" action={ "/staff/loops/" (loop_id.as_str()) "/" (step.slug) } novalidate {
                    @if let Some(signed_in) = &caller.signed_in {
                        input type="hidden" name="csrf" value=(signed_in.csrf);
                    }
                    input type="hidden" name="version" value=(version);
                    input type="hidden" name="form_key" value=(key);
                    @for field in step.fields {
                        (steps::field_markup(
                            &format!("{}-{}", step.slug, field.name),
                            field,
                            &value(field.name),
                            error.filter(|error| error.field == field.name).map(|error| error.message.as_str()),
                        ))
                    }
                    button class="nhsuk-button" type="submit" { (step.button) }
                }
            }
        }
    }
}

fn timeline_entry(event: &Event) -> Markup {
    let rows = event_fields(&event.payload);
    markup! {
        h3 class="nhsuk-heading-s nhsuk-u-margin-bottom-2" { (words::event(event.event_type())) }
        dl class="nhsuk-summary-list" {
            div class="nhsuk-summary-list__row" {
                dt class="nhsuk-summary-list__key" { "When" }
                dd class="nhsuk-summary-list__value" { (moment(event.time)) }
            }
            div class="nhsuk-summary-list__row" {
                dt class="nhsuk-summary-list__key" { "Recorded by" }
                dd class="nhsuk-summary-list__value" {
                    (shown(event.actor.as_deref().unwrap_or("Not recorded")))
                }
            }
            @for (key, value) in rows {
                div class="nhsuk-summary-list__row" {
                    dt class="nhsuk-summary-list__key" { (key) }
                    dd class="nhsuk-summary-list__value" { (text_block(&value)) }
                }
            }
        }
    }
}

/// The fields of an event worth showing, in words.
fn event_fields(payload: &LoopEvent) -> Vec<(&'static str, String)> {
    let mut rows: Vec<(&'static str, String)> = Vec::new();
    let mut add = |key: &'static str, value: Option<&str>| {
        if let Some(value) = value {
            rows.push((key, value.to_owned()));
        }
    };
    match payload {
        LoopEvent::FeedbackReceived(d) => {
            add("Channel", Some(words::channel(d.channel)));
            add("Org unit", Some(d.org_unit.as_str()));
        }
        LoopEvent::Acknowledged(d) => {
            add("By", Some(&d.by));
            add("Message", d.message.as_deref());
        }
        LoopEvent::Responded(d) => {
            add("By", Some(&d.by));
            add("Reply", Some(&d.text));
        }
        LoopEvent::ActionPlanned(d) => {
            add("By", Some(&d.by));
            add("What will be done", Some(&d.description));
            add("Owner", d.owner.as_deref());
            add("Due", d.due.map(|due| due.to_string()).as_deref());
        }
        LoopEvent::ChangeMade(d) => {
            add("By", Some(&d.by));
            add("What changed", Some(&d.description));
            let evidence = d.evidence.as_ref().map(|evidence| match evidence {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            });
            add("Evidence", evidence.as_deref());
            add("Change id", d.change_id.as_deref());
        }
        LoopEvent::NoChange(d) => {
            add("By", Some(&d.by));
            add("Why nothing could change", Some(&d.reason));
        }
        LoopEvent::ReportedBack(d) => {
            add("By", Some(&d.by));
            add("What they were told", Some(&d.message));
            add("How", d.channel.map(words::channel));
        }
        LoopEvent::Reopened(d) => {
            add("By", Some(&d.by));
            add("Why", Some(&d.reason));
        }
        LoopEvent::Erased(d) => {
            add("By", Some(&d.by));
        }
        LoopEvent::StoryApproved(d) => {
            add("By", Some(&d.by));
            add("Story as published", d.story.as_deref());
        }
    }
    rows
}
