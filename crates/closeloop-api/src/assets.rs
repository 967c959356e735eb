//! `GET /assets/{file}` and `GET /assets/images/{file}`: the static files the HTML pages use,
//! embedded in the binary so that Closeloop serves them itself and pages make no request
//! elsewhere.
//!
//! - The NHS design system stylesheet, built from `nhsuk-frontend` by `scripts/build-assets`
//!   (Arial, no web font), and Closeloop's own small stylesheet (`assets/closeloop.css`: print
//!   rules and the few layout rules the design system lacks), linked after it. Each served
//!   name carries a hash of its content ([`stylesheet_path`], [`site_stylesheet_path`]), so
//!   browsers may keep them for a year: a new build gets a new name. They are sent gzipped to
//!   every browser that accepts that.
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
/// Closeloop's own rules, linked after the design system's.
pub(crate) const SITE_STYLESHEET: &str = include_str!("../assets/closeloop.css");

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

/// A stylesheet as served: its content, its file name and strong `ETag` (both from its
/// SHA-256), and its content gzipped.
struct Stylesheet {
    content: &'static str,
    file: String,
    path: String,
    etag: String,
    gzip: Vec<u8>,
}

impl Stylesheet {
    /// Names `content` `<stem>-<8 hex digits of its SHA-256>.css` and compresses it.
    fn new(stem: &str, content: &'static str) -> Self {
        use std::io::Write;
        let digest = hex::encode(Sha256::digest(content.as_bytes()));
        let file = format!("{stem}-{}.css", &digest[..8]);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = encoder
            .write_all(content.as_bytes())
            .and_then(|()| encoder.finish())
            .expect("gzip into memory cannot fail");
        Self {
            content,
            path: format!("/assets/{file}"),
            file,
            etag: format!("\"{digest}\""),
            gzip,
        }
    }
}

/// Both stylesheets, named and compressed once (at the router's construction, see
/// [`prepare`]): the design system's, then Closeloop's.
static STYLESHEETS: LazyLock<[Stylesheet; 2]> = LazyLock::new(|| {
    [
        Stylesheet::new("nhsuk", STYLESHEET),
        Stylesheet::new("closeloop", SITE_STYLESHEET),
    ]
});

/// Names and compresses the stylesheets now, so that no request waits for it.
pub(crate) fn prepare() {
    LazyLock::force(&STYLESHEETS);
}

/// The path the pages link the NHS design system stylesheet at, e.g.
/// `/assets/nhsuk-1a2b3c4d.css`; it changes whenever the stylesheet does.
#[must_use]
pub fn stylesheet_path() -> &'static str {
    &STYLESHEETS[0].path
}

/// The path the pages link Closeloop's own stylesheet at (after the design system's), e.g.
/// `/assets/closeloop-1a2b3c4d.css`; it changes whenever the stylesheet does.
#[must_use]
pub fn site_stylesheet_path() -> &'static str {
    &STYLESHEETS[1].path
}

/// The path the pages link their icon at.
pub const FAVICON_PATH: &str = "/assets/images/favicon.svg";

/// `GET /assets/{file}`: a stylesheet under its hashed name (304 when `If-None-Match` names
/// its `ETag`), 404 `not_found` for every other name.
pub(crate) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(sheet) = STYLESHEETS.iter().find(|sheet| sheet.file == file) else {
        return ApiError::NotFound(
            "there is no such asset; pages link the current stylesheets by their hashed names"
                .to_owned(),
        )
        .into_response();
    };
    let gzip = accepts_gzip(&headers);
    let content = if gzip {
        &sheet.gzip[..]
    } else {
        sheet.content.as_bytes()
    };
    let mut response = answer(
        &headers,
        &sheet.etag,
        CACHE_FOREVER,
        "text/css; charset=utf-8",
        content,
    );
    if gzip && response.status() == StatusCode::OK {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
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
    fn the_gzipped_stylesheets_are_the_stylesheets_and_much_smaller() {
        use std::io::Read;
        for sheet in STYLESHEETS.iter() {
            let mut unzipped = String::new();
            flate2::read::GzDecoder::new(&sheet.gzip[..])
                .read_to_string(&mut unzipped)
                .expect("gunzip");
            assert!(unzipped == sheet.content, "{} gzipped differs", sheet.file);
        }
        let design_system = &STYLESHEETS[0].gzip;
        assert!(
            design_system.len() < 60 * 1024,
            "the gzipped stylesheet is {} bytes, over 60 KB",
            design_system.len()
        );
        assert!(
            SITE_STYLESHEET.len() < 8 * 1024,
            "Closeloop's own stylesheet is meant to stay small: {} bytes",
            SITE_STYLESHEET.len()
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
    fn every_image_the_stylesheets_link_is_served() {
        let both = format!("{STYLESHEET}{SITE_STYLESHEET}");
        let mut rest = both.as_str();
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
