//! `GET /assets/{file}` and `GET /assets/images/{file}`: the static files the HTML pages use,
//! embedded in the binary so that Closeloop serves them itself and pages make no request
//! elsewhere.
//!
//! - The NHS design system stylesheet, built from `nhsuk-frontend` by `scripts/build-assets`
//!   (Arial, no web font). Its served name carries a hash of its content
//!   ([`stylesheet_path`]), so browsers may keep it for a year: a new build gets a new name.
//!   It is sent gzipped (about a sixth of its size) to every browser that accepts that.
//! - The icons the stylesheet links at fixed names (`/assets/images/nhsuk-icon-….svg`) and
//!   the favicon. Their names cannot change, so they are kept for a day and revalidated by
//!   `ETag`.
//!
//! Only these exact names are served; any other answers 404 `not_found`, so no path reaches
//! the file system.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// The NHS design system stylesheet, as `scripts/build-assets` wrote it.
pub(crate) const STYLESHEET: &str = include_str!("../assets/nhsuk.css");

/// The images `scripts/build-assets` copied: name, media type, content.
const IMAGES: &[(&str, &str, &[u8])] = &[
    (
        "nhsuk-icon-arrow-down.svg",
        "image/svg+xml",
        include_bytes!("../assets/images/nhsuk-icon-arrow-down.svg"),
    ),
    (
        "nhsuk-icon-arrow-up.svg",
        "image/svg+xml",
        include_bytes!("../assets/images/nhsuk-icon-arrow-up.svg"),
    ),
    (
        "nhsuk-icon-arrow-up-down.svg",
        "image/svg+xml",
        include_bytes!("../assets/images/nhsuk-icon-arrow-up-down.svg"),
    ),
    (
        "nhsuk-icon-cross.svg",
        "image/svg+xml",
        include_bytes!("../assets/images/nhsuk-icon-cross.svg"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/images/favicon.svg"),
    ),
    (
        "favicon.ico",
        "image/x-icon",
        include_bytes!("../assets/images/favicon.ico"),
    ),
];

/// How long browsers and caches may keep the stylesheet: a year, never revalidated, as its
/// name changes with its content.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";
/// How long they may keep an image, whose name is fixed: a day, then revalidated.
const CACHE_A_DAY: &str = "public, max-age=86400";

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

/// The stylesheet gzipped, made once (at the router's construction, see [`prepare`]).
static STYLESHEET_GZIP: LazyLock<Vec<u8>> = LazyLock::new(|| {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(STYLESHEET.as_bytes())
        .and_then(|()| encoder.finish())
        .expect("gzip into memory cannot fail")
});

/// Names and compresses the stylesheet now, so that no request waits for it.
pub(crate) fn prepare() {
    LazyLock::force(&STYLESHEET_NAME);
    LazyLock::force(&STYLESHEET_GZIP);
}

/// The path the pages link the NHS design system stylesheet at, e.g.
/// `/assets/nhsuk-1a2b3c4d.css`; it changes whenever the stylesheet does.
#[must_use]
pub fn stylesheet_path() -> &'static str {
    &STYLESHEET_NAME.path
}

/// The path the pages link their icon at.
pub const FAVICON_PATH: &str = "/assets/images/favicon.svg";

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
    let mut response = if accepts_gzip(&headers) {
        let mut response = answer(
            &headers,
            &named.etag,
            CACHE_FOREVER,
            "text/css; charset=utf-8",
            &STYLESHEET_GZIP,
        );
        if response.status() == StatusCode::OK {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    } else {
        answer(
            &headers,
            &named.etag,
            CACHE_FOREVER,
            "text/css; charset=utf-8",
            STYLESHEET.as_bytes(),
        )
    };
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

/// Whether `Accept-Encoding` accepts gzip (not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `GET /assets/images/{file}`: one of the images the stylesheet and pages link, 404
/// `not_found` for every other name.
pub(crate) async fn serve_image(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(&(_, media_type, content)) = IMAGES.iter().find(|(name, _, _)| *name == file) else {
        return ApiError::NotFound("there is no such image".to_owned()).into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(content)[..16]));
    answer(&headers, &etag, CACHE_A_DAY, media_type, content)
}

/// 200 with the content, or 304 when `If-None-Match` names `etag`; both with `ETag` and
/// `Cache-Control`.
fn answer(
    headers: &HeaderMap,
    etag: &str,
    cache: &'static str,
    media_type: &'static str,
    content: &[u8],
) -> Response {
    let etag_value = HeaderValue::from_str(etag).expect("a hex digest in quotes is a header value");
    let cache = HeaderValue::from_static(cache);
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    if unchanged {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        content.to_vec(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gzipped_stylesheet_is_the_stylesheet_and_much_smaller() {
        use std::io::Read;
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&STYLESHEET_GZIP[..])
            .read_to_string(&mut unzipped)
            .expect("gunzip");
        assert!(unzipped == STYLESHEET, "the gzipped stylesheet differs");
        assert!(
            STYLESHEET_GZIP.len() < 60 * 1024,
            "the gzipped stylesheet is {} bytes, over 60 KB",
            STYLESHEET_GZIP.len()
        );
    }

    #[test]
    fn gzip_is_sent_to_who_accepts_it() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("value"),
            );
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("br"));
        assert!(!with("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_image_the_stylesheet_links_is_served() {
        let mut rest = STYLESHEET;
        let mut linked = 0;
        while let Some(at) = rest.find("/assets/images/") {
            rest = &rest[at + "/assets/images/".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                .collect();
            assert!(
                IMAGES.iter().any(|(served, _, _)| *served == name),
                "the stylesheet links /assets/images/{name}, which is not served"
            );
            linked += 1;
        }
        assert!(
            linked > 0,
            "the stylesheet links no image: the check checked nothing"
        );
    }
}
