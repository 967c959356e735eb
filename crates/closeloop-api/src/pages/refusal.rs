//! Pages that say no: a request the pages cannot serve (a malformed address, no session, the
//! wrong role, an unknown loop, a busy or failing service), answered in the NHS frame with
//! what went wrong and what to do next, never with backend error text.
//!
//! These are complete pages with their own status; `problem::finish` passes HTML it did not
//! make through unchanged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html as markup;

use super::session::SignedIn;
use super::{Frame, Section, Site, html, layout};
use crate::error::{ApiError, RETRY_AFTER_SECS, STORE_RETRY_AFTER_SECS};
use crate::request_id::RequestId;

/// What a refusal page says.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The answer's status.
    pub(crate) status: StatusCode,
    /// The page's heading (and title).
    pub(crate) heading: String,
    /// What went wrong and what to do, in a sentence or two.
    pub(crate) text: String,
    /// A way on: where, and the link's words.
    pub(crate) link: Option<(String, String)>,
    /// Seconds to wait before trying again (429 and 503 say it in `Retry-After`).
    pub(crate) retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal with a status, a heading and a sentence.
    pub(crate) fn new(status: StatusCode, heading: &str, text: impl Into<String>) -> Self {
        Self {
            status,
            heading: heading.to_owned(),
            text: text.into(),
            link: None,
            retry_after: match status {
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                    Some(RETRY_AFTER_SECS)
                }
                _ => None,
            },
        }
    }

    /// The same with a link on.
    pub(crate) fn with_link(mut self, href: &str, label: &str) -> Self {
        self.link = Some((href.to_owned(), label.to_owned()));
        self
    }

    /// What a page says for an error of the API's own path (a read or a command), in words:
    /// the detail of a 400 or 503 names the problem; a 500 says only that the log has it.
    pub(crate) fn of(err: &ApiError) -> Self {
        match err {
            ApiError::InvalidRequest(detail) => Self::new(
                StatusCode::BAD_REQUEST,
                "There is a problem with the page address",
                format!("{detail}. Go back and try again, or start again from the work queue."),
            )
            .with_link("/staff", "Go to the work queue"),
            ApiError::Rejected(closeloop_domain::Rejection::UnknownLoop(_))
            | ApiError::NotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is no feedback at this address, or it is outside the part of the organisation you work in. Check the address, or find the feedback in the work queue.",
            )
            .with_link("/staff", "Go to the work queue"),
            ApiError::Forbidden { .. }
            | ApiError::NeedsUnscoped { .. }
            | ApiError::OutsideScope { .. } => Self::new(
                StatusCode::FORBIDDEN,
                "You cannot do this",
                err.to_string(),
            ),
            ApiError::Unavailable(detail) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sorry, the service cannot answer now",
                format!("{detail}."),
            ),
            ApiError::StoreUnavailable => Self {
                retry_after: Some(STORE_RETRY_AFTER_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sorry, the service cannot answer now",
                    "The event store is not accepting requests after a failure, and nothing was recorded. Try again later.",
                )
            },
            ApiError::Busy { retry_after, .. } => Self {
                retry_after: Some((*retry_after).max(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sorry, the service is busy",
                    format!("{err}."),
                )
            },
            ApiError::Unauthorized => Self::new(
                StatusCode::UNAUTHORIZED,
                "Sign in to continue",
                "You need to sign in to see this page.",
            )
            .with_link("/sign-in", "Sign in"),
            ApiError::Rejected(_) | ApiError::VersionConflict(_) | ApiError::IdempotencyKeyReused => {
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "This cannot be recorded",
                    format!("{err}."),
                )
            }
            ApiError::Internal(detail) => {
                // The detail stays in the log: it may describe stored data.
                tracing::error!(%detail, "a page failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sorry, there is a problem with the service",
                    "Something went wrong on our side and nothing was shown. Try again later; if it keeps happening, tell your administrator the reference below.",
                )
            }
        }
    }

    /// The page, in the staff frame when someone is signed in, else the public one.
    pub(crate) fn page(
        &self,
        site: &Site,
        signed_in: Option<&SignedIn>,
        request_id: Option<&RequestId>,
    ) -> Response {
        let actor = signed_in.map(|signed_in| signed_in.credential.actor());
        let frame = Frame {
            title: &self.heading,
            section: if signed_in.is_some() {
                Section::Staff
            } else {
                Section::Public
            },
            signed_in: actor,
            csrf: signed_in.map(|signed_in| &*signed_in.csrf),
            head: None,
        };
        let body = markup! {
            div class="nhsuk-grid-row" {
                div class="nhsuk-grid-column-two-thirds" {
                    h1 { (self.heading) }
                    p { (self.text) }
                    @if let Some((href, label)) = &self.link {
                        p { a href=(href) { (label) } }
                    }
                    @if let Some(id) = request_id {
                        p class="nhsuk-body-s" { "Reference: " (id.as_str()) }
                    }
                }
            }
        };
        let mut response = html(layout(site, &frame, &body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        no_store(headers);
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Marks a response as one no browser or proxy may keep: signed-in pages hold personal data.
pub(crate) fn no_store(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A `303 See Other` to `location`, which must be a path of this site, and not kept by
/// caches.
pub(crate) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    no_store(response.headers_mut());
    response
}
