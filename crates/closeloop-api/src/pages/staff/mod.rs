//! The staff work queue: the pages staff and admins work loops on, signed in with their
//! token (a session) or sending it as a bearer token.
//!
//! - [`queue`]: `GET /staff`, the open loops with the contract's filters, overdue first, and
//!   `POST /staff/changes`, one change recorded on the ticked loops.
//! - [`loop_page`]: `GET /staff/loops/{loop_id}`, one loop with its story and timeline and a
//!   form for each step it takes next, and `POST /staff/loops/{loop_id}/{step}`.
//! - [`steps`]: the steps' forms, and the contract's refusals in words.
//!
//! Every write goes through the API's own command functions (`commands::record_step`,
//! `commands::record_change_across`), with the credential the guard handed over; every rule is
//! checked there, never here. Answers are never cached (`Cache-Control: no-store`).

pub(crate) mod loop_page;
pub(crate) mod queue;
pub(crate) mod steps;

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use maud::{Markup, html as markup};

use super::refusal::no_store;
use super::{Frame, Site, html, layout};

/// A staff page: the frame around `body`, with `status`, never cached.
pub(crate) fn page(site: &Site, frame: &Frame<'_>, body: &Markup, status: StatusCode) -> Response {
    let mut response = html(layout(site, frame, body));
    *response.status_mut() = status;
    no_store(response.headers_mut());
    response
}

/// One entry of an error summary: the id of the field it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The id of the field (or group) on the page.
    pub(crate) anchor: String,
    /// What is wrong, and what to do.
    pub(crate) message: String,
}

/// The design system's error summary, each entry linking to its field.
pub(crate) fn error_summary(problems: &[Problem]) -> Markup {
    markup! {
        @if !problems.is_empty() {
            div class="nhsuk-error-summary" {
                div role="alert" {
                    h2 class="nhsuk-error-summary__heading" { "There is a problem" }
                    div class="nhsuk-error-summary__body" {
                        ul class="nhsuk-list nhsuk-error-summary__list" {
                            @for problem in problems {
                                li { a href={ "#" (problem.anchor) } { (problem.message) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A notification banner: green "Success" for something recorded, else "Important".
pub(crate) fn banner(success: bool, text: &str) -> Markup {
    markup! {
        div class={ "nhsuk-notification-banner" @if success { " nhsuk-notification-banner--success" } }
            role=(if success { "alert" } else { "region" }) aria-labelledby="banner-title" {
            div class="nhsuk-notification-banner__header" {
                h2 class="nhsuk-notification-banner__title" id="banner-title" {
                    (if success { "Success" } else { "Important" })
                }
            }
            div class="nhsuk-notification-banner__content" {
                p class="nhsuk-notification-banner__heading" { (text) }
            }
        }
    }
}

/// The time zone dates are shown in: the UK's, where the time zone database has it, else
/// UTC (then times say so).
fn zone() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| TimeZone::get("Europe/London").unwrap_or(TimeZone::UTC))
}

/// A day as the NHS writes it: "3 February 2026".
pub(crate) fn day(at: Timestamp) -> String {
    at.to_zoned(zone().clone())
        .strftime("%-d %B %Y")
        .to_string()
}

/// A moment: "3 February 2026 at 9:30am" (with "UTC" when the UK's zone is unknown).
pub(crate) fn moment(at: Timestamp) -> String {
    let format = if zone().iana_name().is_some() {
        "%-d %B %Y at %-I:%M%P"
    } else {
        "%-d %B %Y at %-I:%M%P UTC"
    };
    at.to_zoned(zone().clone()).strftime(format).to_string()
}

/// Words for the contract's values.
pub(crate) mod words {
    use closeloop_domain::{Channel, EventType, Stage};

    /// A stage in words.
    pub(crate) fn stage(stage: Stage) -> &'static str {
        match stage {
            Stage::Received => "Received",
            Stage::Acknowledged => "Acknowledged",
            Stage::Responded => "Responded to",
            Stage::ActionPlanned => "Action planned",
            Stage::OutcomeRecorded => "Outcome recorded",
            Stage::Closed => "Closed",
        }
    }

    /// Every stage, in order.
    pub(crate) const STAGES: [Stage; 6] = [
        Stage::Received,
        Stage::Acknowledged,
        Stage::Responded,
        Stage::ActionPlanned,
        Stage::OutcomeRecorded,
        Stage::Closed,
    ];

    /// A channel in words.
    pub(crate) fn channel(channel: Channel) -> &'static str {
        match channel {
            Channel::Web => "Web form",
            Channel::Sms => "Text message",
            Channel::Email => "Email",
            Channel::Phone => "Phone",
            Channel::Paper => "Paper",
            Channel::InPerson => "In person",
            Channel::Survey => "Survey",
            Channel::Social => "Social media",
            Channel::CommunityPartner => "Community partner",
            Channel::Other => "Other",
        }
    }

    /// What an event records, in words.
    pub(crate) fn event(event_type: EventType) -> &'static str {
        match event_type {
            EventType::FeedbackReceived => "Feedback received",
            EventType::Acknowledged => "Acknowledged",
            EventType::Responded => "Responded",
            EventType::ActionPlanned => "Action planned",
            EventType::ChangeMade => "Change made",
            EventType::NoChange => "Nothing could change",
            EventType::ReportedBack => "Reported back",
            EventType::Reopened => "Reopened",
            EventType::Erased => "Personal data erased",
            EventType::StoryApproved => "Story approved for publication",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_the_nhs_writes_them() {
        let at: Timestamp = "2026-02-03T09:30:00Z".parse().expect("time");
        assert_eq!(day(at), "3 February 2026");
        assert!(
            moment(at).starts_with("3 February 2026 at 9:30am"),
            "{}",
            moment(at)
        );
    }
}
