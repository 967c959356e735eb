//! Signing in and out of the pages, and what the route guard asks of them.
//!
//! - `GET /sign-in`: the form, one password field for the token. It sets the form's
//!   double-submit cookie ([`SIGN_IN_COOKIE`]) and carries the same value in its `csrf`
//!   field, so a sign-in posted from another site (without the `SameSite=Strict` cookie)
//!   is refused: nobody can sign a browser in as someone else.
//! - `POST /sign-in`: checks the token as the bearer path does ([`ApiTokens::credential_of`],
//!   constant time), starts a session ([`Sessions`]) and sends its id as the session cookie;
//!   the token itself never goes back to the browser. Failed sign-ins are bounded per
//!   minute.
//! - `POST /sign-out`: ends the session and its cookie.
//! - For the guard: [`needed`] (no session: a `303` to the sign-in page for a `GET`, a 401
//!   page otherwise), [`wrong_role`] (403 in the frame) and [`check_csrf`] (every form a
//!   session posts carries the session's CSRF token in its `csrf` field).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use closeloop_store::EventStore;
use maud::{Markup, html as markup};

use super::form::{Form, same_secret};
use super::refusal::{Refusal, no_store, see_other};
use super::session::{
    SESSION_COOKIE, SIGN_IN_COOKIE, Sessions, SignedIn, cookie, expired_session_cookie,
    expired_sign_in_cookie, is_sign_in_token, local_path, new_sign_in_token, session_cookie,
    sign_in_cookie,
};
use super::{Frame, Section, Site, html, layout};
use crate::AppState;
use crate::auth::{Credential, MAX_TOKEN_LEN, READERS, WRITERS};
use crate::request_id::RequestId;
use crate::routes::Route;

/// Largest sign-in form body: a token of [`MAX_TOKEN_LEN`] percent-encoded, the form token
/// and a `next` path fit well within it.
const SIGN_IN_BODY_LIMIT: usize = 8 * 1024;
/// Largest form body a session may post (the bulk change's ticked loops are the most).
pub(crate) const FORM_BODY_LIMIT: usize = crate::BODY_LIMIT_BYTES;

/// What the sign-in page says above its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    /// Nothing.
    None,
    /// "You have signed out."
    SignedOut,
    /// "Your session has ended."
    Expired,
}

impl Notice {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "signed-out" => Some(Self::SignedOut),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// Why a sign-in failed, as the form shows it next to the token field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Empty,
    Unknown,
    FormExpired,
}

impl Failure {
    fn sentence(self) -> &'static str {
        match self {
            Failure::Empty => "Enter your access token",
            Failure::Unknown => {
                "This access token is not one we know. Check you entered all of it, or ask your administrator for a new one"
            }
            Failure::FormExpired => {
                "The sign-in form had expired, or was not sent from this site. Enter your access token again (signing in needs cookies from this site to be allowed)"
            }
        }
    }
}

/// The sign-in page's query: `next` (a path of this site to return to) and `notice`.
struct SignInQuery {
    next: Option<String>,
    notice: Notice,
}

impl SignInQuery {
    fn parse(params: &HashMap<String, String>) -> Result<Self, Refusal> {
        let bad = |text: &str| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "There is a problem with the page address",
                text,
            )
            .with_link("/sign-in", "Go to the sign-in page")
        };
        let next = match params.get("next").map(String::as_str) {
            None | Some("") => None,
            Some(raw) => Some(
                local_path(raw)
                    .ok_or_else(|| {
                        bad("The page to return to after signing in must be a page of this site.")
                    })?
                    .to_owned(),
            ),
        };
        let notice = match params.get("notice").map(String::as_str) {
            None | Some("") => Notice::None,
            Some(raw) => Notice::parse(raw)
                .ok_or_else(|| bad("This sign-in address is not one this site makes."))?,
        };
        Ok(Self { next, notice })
    }
}

/// `GET /sign-in`.
pub(crate) async fn page<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = match SignInQuery::parse(&params) {
        Ok(query) => query,
        Err(refusal) => return refusal.page(&state.site, None, Some(&request_id)),
    };
    let now = (state.clock)();
    let signed_in = cookie(&headers, SESSION_COOKIE).and_then(|id| sessions.find(id, now));
    let token = form_token(&headers);
    let view = SignInView {
        next: query.next.as_deref(),
        notice: query.notice,
        failure: None,
        signed_in: signed_in.as_ref().map(|s| &s.credential),
        form_token: &token,
    };
    sign_in_response(&state.site, &view, StatusCode::OK)
}

/// `POST /sign-in`: the form's fields `csrf`, `token` and `next`.
pub(crate) async fn sign_in<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The sign-in form was too large",
            "Go back to the sign-in page and enter your access token again.",
        )
        .with_link("/sign-in", "Go to the sign-in page")
        .page(&state.site, None, Some(&request_id))
    };
    let Ok(bytes) = axum::body::to_bytes(body, SIGN_IN_BODY_LIMIT).await else {
        return too_large();
    };
    let Ok(form) = Form::parse(&bytes) else {
        return too_large();
    };
    let next = form.get("next").and_then(local_path).map(str::to_owned);
    let now = (state.clock)();
    let token = form_token(&headers);
    let fail = |failure: Failure, status: StatusCode| {
        let view = SignInView {
            next: next.as_deref(),
            notice: Notice::None,
            failure: Some(failure),
            signed_in: None,
            form_token: &token,
        };
        sign_in_response(&state.site, &view, status)
    };
    let sent_from_our_form = match (cookie(&headers, SIGN_IN_COOKIE), form.get("csrf")) {
        (Some(cookie), Some(field)) => is_sign_in_token(cookie) && same_secret(field, cookie),
        _ => false,
    };
    if !sent_from_our_form {
        return fail(Failure::FormExpired, StatusCode::FORBIDDEN);
    }
    if let Some(wait) = sessions.sign_ins_refused_for(now) {
        tracing::warn!("sign-in refused: too many failed sign-ins this minute");
        return Refusal {
            retry_after: Some(wait),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins",
                format!("Too many sign-ins failed in the last minute, so sign-in is paused. Try again in {wait} seconds."),
            )
            .with_link("/sign-in", "Go to the sign-in page")
        }
        .page(&state.site, None, Some(&request_id));
    }
    let presented = form.get("token").unwrap_or_default().trim();
    if presented.is_empty() {
        return fail(Failure::Empty, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let credential = (presented.len() <= MAX_TOKEN_LEN)
        .then(|| state.tokens.credential_of(presented))
        .flatten();
    let Some(credential) = credential else {
        sessions.note_failed_sign_in(now);
        tracing::warn!("sign-in refused: not a configured token");
        let mut response = fail(Failure::Unknown, StatusCode::UNAUTHORIZED);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    // A new session every time, so an id known before signing in is worth nothing after.
    if let Some(old) = cookie(&headers, SESSION_COOKIE).and_then(|id| sessions.find(id, now)) {
        sessions.end(&old);
    }
    tracing::info!(credential = %credential.id, "signed in");
    let location = next.unwrap_or_else(|| landing(&credential).to_owned());
    let (id, _) = sessions.start(credential, now);
    let mut response = see_other(&location);
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session_cookie(&id));
    headers.append(header::SET_COOKIE, expired_sign_in_cookie());
    response
}

/// `POST /sign-out`: ends the session (a request signed with a bearer token has none to end)
/// and returns to the sign-in page.
pub(crate) async fn sign_out(
    Extension(sessions): Extension<Arc<Sessions>>,
    signed_in: Option<Extension<SignedIn>>,
) -> Response {
    if let Some(Extension(signed_in)) = signed_in {
        sessions.end(&signed_in);
        tracing::info!(credential = %signed_in.credential.id, "signed out");
    }
    let mut response = see_other("/sign-in?notice=signed-out");
    response
        .headers_mut()
        .append(header::SET_COOKIE, expired_session_cookie());
    response
}

/// Where a sign-in without a `next` page goes: the work queue for the roles that work loops,
/// the insights for those that read them (when this service has insights), else the public
/// page.
fn landing(credential: &Credential) -> &'static str {
    if credential.may(WRITERS) {
        "/staff"
    } else if credential.may(READERS) && crate::routes::find("GET", "/insights").is_some() {
        "/insights"
    } else {
        "/you-said-we-did"
    }
}

/// The sign-in form's token: the browser's, when it holds a well-formed one (two tabs may
/// show the form at once), else a new one.
fn form_token(headers: &HeaderMap) -> String {
    cookie(headers, SIGN_IN_COOKIE)
        .filter(|token| is_sign_in_token(token))
        .map_or_else(new_sign_in_token, str::to_owned)
}

/// What one rendering of the sign-in page shows.
struct SignInView<'a> {
    next: Option<&'a str>,
    notice: Notice,
    failure: Option<Failure>,
    signed_in: Option<&'a Credential>,
    form_token: &'a str,
}

fn sign_in_response(site: &Site, view: &SignInView<'_>, status: StatusCode) -> Response {
    let frame = Frame::public(if view.failure.is_some() {
        "Error: Sign in"
    } else {
        "Sign in"
    });
    let mut response = html(layout(site, &frame, &sign_in_body(view)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    no_store(headers);
    headers.append(header::SET_COOKIE, sign_in_cookie(view.form_token));
    response
}

fn sign_in_body(view: &SignInView<'_>) -> Markup {
    let error = view.failure.map(Failure::sentence);
    markup! {
        div class="nhsuk-grid-row" {
            div class="nhsuk-grid-column-two-thirds" {
                @if let Some(error) = error {
                    div class="nhsuk-error-summary" {
                        div role="alert" {
                            h2 class="nhsuk-error-summary__heading" { "There is a problem" }
                            div class="nhsuk-error-summary__body" {
                                ul class="nhsuk-list nhsuk-error-summary__list" {
                                    li { a href="#token" { (error) } }
                                }
                            }
                        }
                    }
                }
                @match view.notice {
                    Notice::SignedOut => {
                        div class="nhsuk-notification-banner nhsuk-notification-banner--success" role="alert" aria-labelledby="notice-title" {
                            div class="nhsuk-notification-banner__header" {
                                h2 class="nhsuk-notification-banner__title" id="notice-title" { "Success" }
                            }
                            div class="nhsuk-notification-banner__content" {
                                p class="nhsuk-notification-banner__heading" { "You have signed out." }
                            }
                        }
                    }
                    Notice::Expired => {
                        div class="nhsuk-notification-banner" role="region" aria-labelledby="notice-title" {
                            div class="nhsuk-notification-banner__header" {
                                h2 class="nhsuk-notification-banner__title" id="notice-title" { "Important" }
                            }
                            div class="nhsuk-notification-banner__content" {
                                p class="nhsuk-notification-banner__heading" {
                                    "Your session has ended. Sign in again to continue."
                                }
                            }
                        }
                    }
                    Notice::None => {}
                }
                h1 { "Sign in" }
                @if let Some(credential) = view.signed_in {
                    div class="nhsuk-inset-text" {
                        span class="nhsuk-u-visually-hidden" { "Information: " }
                        p {
                            "You are already signed in as " (credential.actor()) ". "
                            a href=(view.next.unwrap_or_else(|| landing(credential))) { "Continue" }
                        }
                    }
                }
                p { "Sign in with the access token your administrator gave you: the same token tools send to the Closeloop API." }
                p {
                    "Staff and admin tokens open the work queue of open feedback. Leader and auditor tokens sign in too, to the pages their role may read. "
                    "Your token stays on this page: once you are signed in, your browser holds only a session that ends when you sign out, after 30 minutes without use, or after 8 hours."
                }
                form method="post" action="/sign-in" novalidate {
                    input type="hidden" name="csrf" value=(view.form_token);
                    @if let Some(next) = view.next {
                        input type="hidden" name="next" value=(next);
                    }
                    div class={ "nhsuk-form-group" @if error.is_some() { " nhsuk-form-group--error" } } {
                        label class="nhsuk-label" for="token" { "Access token" }
                        div class="nhsuk-hint" id="token-hint" {
                            "A long string of letters and numbers. Keep it secret, as you would a password."
                        }
                        @if let Some(error) = error {
                            span class="nhsuk-error-message" id="token-error" {
                                span class="nhsuk-u-visually-hidden" { "Error: " } (error)
                            }
                        }
                        input class={ "nhsuk-input" @if error.is_some() { " nhsuk-input--error" } }
                            id="token" name="token" type="password" autocomplete="current-password"
                            spellcheck="false" maxlength=(MAX_TOKEN_LEN)
                            aria-describedby={ "token-hint" @if error.is_some() { " token-error" } };
                    }
                    button class="nhsuk-button" type="submit" { "Sign in" }
                }
            }
        }
    }
}

/// The answer to a request for a page that needs a session but has none: for a `GET`, a
/// `303` to the sign-in page, which returns here after (with a notice when the browser still
/// sent a session cookie, so the session has ended); for anything else, a 401 page, as the
/// form that was posted cannot be sent again from there.
pub(crate) fn needed(site: &Site, request: &Request, request_id: Option<&RequestId>) -> Response {
    let had_session = cookie(request.headers(), SESSION_COOKIE).is_some();
    if request.method() == Method::GET || request.method() == Method::HEAD {
        let here = request
            .uri()
            .path_and_query()
            .map_or("/", axum::http::uri::PathAndQuery::as_str);
        let mut location = String::from("/sign-in?next=");
        location.extend(form_urlencoded::byte_serialize(
            local_path(here).unwrap_or("/").as_bytes(),
        ));
        if had_session {
            location.push_str("&notice=expired");
        }
        let mut response = see_other(&location);
        if had_session {
            response
                .headers_mut()
                .append(header::SET_COOKIE, expired_session_cookie());
        }
        return response;
    }
    let text = if had_session {
        "Your session has ended, so what you sent was not recorded. Sign in again, then go back and send it again."
    } else {
        "You need to sign in to do this. Nothing was recorded."
    };
    let mut response = Refusal::new(StatusCode::UNAUTHORIZED, "Sign in to continue", text)
        .with_link("/sign-in", "Sign in")
        .page(site, None, request_id);
    if had_session {
        response
            .headers_mut()
            .append(header::SET_COOKIE, expired_session_cookie());
    }
    response
}

/// The 403 page for a credential whose role may not use a page.
pub(crate) fn wrong_role(
    site: &Site,
    signed_in: Option<&SignedIn>,
    credential: &Credential,
    route: &Route,
    request_id: Option<&RequestId>,
) -> Response {
    let allowed = route
        .access
        .roles()
        .unwrap_or_default()
        .iter()
        .map(|role| role.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "You are signed in as {} with the {} role, and this page is for these roles: {allowed}. If you need it, ask your administrator for a token with one of them.",
        credential.actor(),
        credential.role,
    );
    Refusal::new(StatusCode::FORBIDDEN, "You cannot use this page", text)
        .with_link(landing(credential), "Go to your start page")
        .page(site, signed_in, request_id)
}

/// Checks that a form a session posted carries the session's CSRF token in its `csrf` field,
/// in constant time, reading at most [`FORM_BODY_LIMIT`] bytes of it; hands the request on
/// with its body intact, or answers for it (403, nothing recorded).
pub(crate) async fn check_csrf(
    request: Request,
    signed_in: &SignedIn,
    site: &Site,
    request_id: Option<&RequestId>,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let refuse = |status: StatusCode, heading: &str, text: &str| {
        Refusal::new(status, heading, text)
            .with_link("/staff", "Go to the work queue")
            .page(site, Some(signed_in), request_id)
    };
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form was too large",
            "Nothing was recorded. Send less at once: tick fewer loops, or shorten the text.",
        )
    };
    if declared.is_some_and(|length| length > FORM_BODY_LIMIT) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(body, FORM_BODY_LIMIT)
        .await
        .map_err(|_| too_large())?;
    let matches = Form::parse(&bytes)
        .ok()
        .and_then(|form| {
            form.get("csrf")
                .map(|csrf| same_secret(csrf, &signed_in.csrf))
        })
        .unwrap_or(false);
    if !matches {
        tracing::warn!(credential = %signed_in.credential.id, "a form without the session's CSRF token was refused");
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "This form cannot be sent",
            "The form did not come from this session: it may be from before you last signed in, or from another site. Nothing was recorded. Go back, reload the page and try again.",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The frame of a signed-in page: the staff section, who is signed in and the sign-out
/// form's CSRF token. A page opened with a bearer token has no session to sign out of.
pub(crate) fn staff_frame<'a>(
    title: &'a str,
    credential: &'a Credential,
    signed_in: Option<&'a SignedIn>,
) -> Frame<'a> {
    Frame {
        title,
        section: Section::Staff,
        signed_in: signed_in.map(|_| credential.actor()),
        csrf: signed_in.map(|signed_in| &*signed_in.csrf),
        head: None,
    }
}
