//! `GET /assets/{file}`: the static files the HTML pages use, embedded in the binary so that
//! Closeloop serves them itself and pages make no request elsewhere.
//!
//! Today that is the NHS design system stylesheet, built from `nhsuk-frontend` by
//! `scripts/build-assets` (Arial, no web font). Its served name carries a hash of its content
//! ([`stylesheet_path`]), so browsers may keep it for a year: a new build gets a new name.
//! Only that exact name is served; any other answers 404 `not_found`, so no path reaches the
//! file system.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// The NHS design system stylesheet, as `scripts/build-assets` wrote it.
pub(crate) const STYLESHEET: &str = include_str!("../assets/nhsuk.css");

/// How long browsers and caches may keep an asset: a year, never revalidated, as its name
/// changes with its content.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

/// The stylesheet's served file name and strong `ETag`, both from its SHA-256.
struct Named {
    file: String,
    path: String,
    etag: String,
}

static STYLESHEET_NAME: LazyLock<Named> = LazyLock::new(|| {
    let digest = hex::encode(Sha256::digest(STYLESHEET.as_bytes()));
    let file = format!("nhsuk-{}.css", &digest[..8]);
    Named {
        path: format!("/assets/{file}"),
        file,
        etag: format!("\"{digest}\""),
    }
});

/// The path the pages link the NHS design system stylesheet at, e.g.
/// `/assets/nhsuk-1a2b3c4d.css`; it changes whenever the stylesheet does.
#[must_use]
pub fn stylesheet_path() -> &'static str {
    &STYLESHEET_NAME.path
}

/// `GET /assets/{file}`: the stylesheet under its hashed name (304 when `If-None-Match` names
/// its `ETag`), 404 `not_found` for every other name.
pub(crate) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let named = &*STYLESHEET_NAME;
    if file != named.file {
        return ApiError::NotFound(
            "there is no such asset; pages link the current stylesheet by its hashed name"
                .to_owned(),
        )
        .into_response();
    }
    let etag =
        HeaderValue::from_str(&named.etag).expect("a hex digest in quotes is a header value");
    let cache = HeaderValue::from_static(CACHE_FOREVER);
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == named.etag || tag.trim() == "*");
    if unchanged {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        STYLESHEET,
    )
        .into_response()
}
