//! RFC 9457 problem details: every error the API returns.
//!
//! Handlers answer errors as [`Problem`]s (through `ApiError`). What they cannot answer —
//! an unknown path, a wrong method, a body over the limit, a timeout, a path or query the
//! extractors cannot read — [`finish`] turns into a problem too, so every error of the API
//! has the same shape; it also adds the request id to every problem, `Retry-After` to every
//! 429 and 503, and answers errors of the HTML pages as HTML pages in the NHS frame, with the
//! request id as a reference to quote.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::RETRY_AFTER_SECS;
use crate::pages::{Frame, Site, layout, page_headers};
use crate::request_id::RequestId;
use crate::{BODY_LIMIT_BYTES, REQUEST_TIMEOUT, ROUTES};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Largest problem body [`finish`] reads back to add the request id; ours are far smaller.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// An `application/problem+json` response with the contract's `code` member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, and what to do about it.
    pub detail: String,
    /// The contract's machine-readable code, e.g. `unknown_loop`.
    pub code: String,
    /// The request's `X-Request-Id`: the service log has the details of a failure under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// A problem with the given status, code and human explanation.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            request_id: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], Json(self)).into_response()
    }
}

/// The fallback for paths no route serves.
pub(crate) async fn not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "there is no endpoint at {}; see GET /v1/openapi.json for what is served",
            uri.path()
        ),
    )
}

/// Whether `path` is one `template` (e.g. `/staff/loops/{loop_id}`) serves: the same number of
/// segments, each equal or a `{parameter}`.
fn template_matches(template: &str, path: &str) -> bool {
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) => {
                let parameter = want.starts_with('{') && want.ends_with('}') && !got.is_empty();
                if !parameter && want != got {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The middleware that gives every error response its final shape (see the module docs);
/// `site` names the organisation on error pages.
pub(crate) async fn finish(
    State(site): State<Arc<Site>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Only an error needs to know whether it answers a page.
    let page = ROUTES
        .iter()
        .any(|route| route.html && template_matches(route.path, &path));
    let (mut parts, body) = response.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let is_problem = content_type.is_some_and(|value| value.as_bytes() == PROBLEM_JSON.as_bytes());
    if content_type.is_some_and(|value| value.as_bytes().starts_with(b"text/html")) {
        // A page that says itself what went wrong (a form shown again with its errors, a
        // refusal in the NHS frame) passes as it is.
        fix_headers(&mut parts.headers, status, false);
        return Response::from_parts(parts, body);
    }
    if !page && content_type.is_some_and(|value| value.as_bytes() == b"application/json") {
        // A deliberate JSON answer with an error status (`/readyz` when not ready).
        fix_headers(&mut parts.headers, status, false);
        return Response::from_parts(parts, body);
    }
    let ours = if is_problem {
        axum::body::to_bytes(body, MAX_PROBLEM_BYTES)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Problem>(&bytes).ok())
    } else {
        // Not ours (axum's or tower-http's plain text, or an empty body): its words may name
        // library internals, so they are replaced by ours.
        None
    };
    let mut problem = ours.unwrap_or_else(|| stock_problem(status, &method, &path));
    problem.request_id = request_id;
    fix_headers(&mut parts.headers, status, true);
    let body = if page {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        page_headers(&mut parts.headers);
        Body::from(error_page(&site, &problem))
    } else {
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match serde_json::to_vec(&problem) {
            Ok(json) => Body::from(json),
            Err(_) => Body::empty(),
        }
    };
    Response::from_parts(parts, body)
}

/// Headers of an error: every 429 and 503 says when to try again, and the length of a
/// `rewritten` body changes.
fn fix_headers(headers: &mut HeaderMap, status: StatusCode, rewritten: bool) {
    if rewritten {
        headers.remove(header::CONTENT_LENGTH);
    }
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && !headers.contains_key(header::RETRY_AFTER)
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
}

/// The problem for an error response that a layer or extractor made, by its status.
fn stock_problem(status: StatusCode, method: &Method, path: &str) -> Problem {
    let (code, detail) = match status {
        StatusCode::BAD_REQUEST => (
            "invalid_request",
            format!(
                "the request to {path} cannot be read: check its path, query string, headers and body against GET /v1/openapi.json"
            ),
        ),
        StatusCode::UNAUTHORIZED => (
            "unauthorized",
            "send a valid token as `Authorization: Bearer <token>`".to_owned(),
        ),
        StatusCode::FORBIDDEN => ("forbidden", "your token's role may not do this".to_owned()),
        StatusCode::NOT_FOUND => (
            "not_found",
            format!("there is no endpoint at {path}; see GET /v1/openapi.json for what is served"),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!("{path} does not take {method}; the Allow header lists the methods it takes"),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            format!(
                "the request took longer than {} s and was stopped; try again, asking for less at a time if it asked for much",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!(
                "the request body is larger than {BODY_LIMIT_BYTES} bytes (1 MiB); send less at a time"
            ),
        ),
        StatusCode::URI_TOO_LONG => (
            "uri_too_long",
            "the request's URI is too long; send fewer or shorter query parameters".to_owned(),
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers_too_large",
            "the request's headers are too large".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "invalid_request",
            "send the body as application/json".to_owned(),
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "too_many_requests",
            "too many requests; try again after the time in Retry-After".to_owned(),
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "unavailable",
            "the service cannot answer this now; try again after the time in Retry-After"
                .to_owned(),
        ),
        status if status.is_server_error() => (
            "internal",
            "internal error; the service log has the details under this request's id".to_owned(),
        ),
        _ => (
            "invalid_request",
            "the request cannot be served as sent; see GET /v1/openapi.json".to_owned(),
        ),
    };
    Problem::new(status, code, detail)
}

/// An error of an HTML page, as a page in the NHS frame: what went wrong in plain words, what
/// to do, and the request id to quote.
fn error_page(site: &Site, problem: &Problem) -> String {
    let heading = match problem.status {
        400 | 414 => "There is a problem with this web address",
        404 => "Page not found",
        408 | 429 | 503 => "Sorry, this page is busy",
        500.. => "Sorry, there is a problem with the service",
        _ => problem.title.as_str(),
    };
    let body = maud::html! {
        h1 { (heading) }
        p { (crate::pages::shown(&problem.detail)) }
        @if matches!(problem.status, 408 | 429 | 503) {
            p { "Try again in a minute." }
        }
        p { a href="/you-said-we-did" { "Go to You said, we did" } }
        @if let Some(id) = &problem.request_id {
            p class="nhsuk-body-s" { "If you contact us about this, quote this reference: " (id) }
        }
    };
    layout(site, &Frame::public(heading), &body).into_string()
}

#[cfg(test)]
mod template_tests {
    use super::template_matches;

    #[test]
    fn a_path_matches_the_template_that_serves_it() {
        assert!(template_matches(
            "/staff/loops/{loop_id}",
            "/staff/loops/demo-000001"
        ));
        assert!(template_matches("/you-said-we-did", "/you-said-we-did"));
        assert!(!template_matches("/staff/loops/{loop_id}", "/staff/loops/"));
        assert!(!template_matches(
            "/staff/loops/{loop_id}",
            "/staff/loops/a/b"
        ));
        assert!(!template_matches("/staff", "/v1/loops"));
    }
}
