//! `GET /assets/{file}`: the NHS design system stylesheet under its hashed name, cached for
//! ever, with no web font and nothing loaded from elsewhere; every other name is a 404.

use super::*;
use crate::assets::{STYLESHEET, stylesheet_path};

#[tokio::test]
async fn the_hashed_path_serves_the_stylesheet_to_cache_for_ever() {
    let app = app(Limits::default());
    let path = stylesheet_path();
    let hash = path
        .strip_prefix("/assets/nhsuk-")
        .and_then(|rest| rest.strip_suffix(".css"))
        .unwrap_or_else(|| panic!("{path} is not /assets/nhsuk-<hash>.css"));
    assert!(
        hash.len() == 8 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{path} does not carry 8 hex digits"
    );

    let (response, _, text) = call(&app, request("GET", path, None, Body::empty())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let etag = headers[header::ETAG]
        .to_str()
        .expect("ascii etag")
        .to_owned();
    assert!(
        etag.starts_with(&format!("\"{hash}")),
        "ETag {etag} is not the content hash"
    );
    assert_eq!(text, STYLESHEET);

    let mut again = request("GET", path, None, Body::empty());
    again
        .headers_mut()
        .insert(header::IF_NONE_MATCH, etag.parse().expect("header value"));
    let (response, _, text) = call(&app, again).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(text.is_empty(), "a 304 has no body");
}

#[tokio::test]
async fn any_other_asset_name_is_a_404_problem() {
    let app = app(Limits::default());
    let wrong_hash = "/assets/nhsuk-00000000.css".replace(
        "00000000",
        if stylesheet_path().contains("00000000") {
            "11111111"
        } else {
            "00000000"
        },
    );
    for path in [
        wrong_hash.as_str(),
        "/assets/nhsuk.css",
        "/assets/..%2Fassets%2Fnhsuk.css",
        "/assets/..%2F..%2FCargo.toml",
        "/assets/NHSUK-FRONTEND-LICENCE.txt",
    ] {
        let (response, problem, _) = call(&app, request("GET", path, None, Body::empty())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json",
            "{path}"
        );
        assert_eq!(problem["code"], "not_found", "{path}");
    }
}

#[test]
fn the_stylesheet_loads_no_web_font_and_nothing_from_elsewhere() {
    let css = STYLESHEET.to_lowercase();
    for banned in [
        "url(http",
        "url(\"http",
        "url('http",
        "url(//",
        "@font-face",
        "frutiger",
    ] {
        assert!(!css.contains(banned), "the stylesheet contains {banned}");
    }
    assert!(
        css.contains("html{font-family:arial,"),
        "the page's font is not Arial"
    );
    assert!(
        STYLESHEET.contains("nhsuk-frontend 10."),
        "the header does not name the nhsuk-frontend release"
    );
    assert!(
        STYLESHEET.len() < 300 * 1024,
        "the stylesheet is {} bytes, over 300 KB",
        STYLESHEET.len()
    );
}
