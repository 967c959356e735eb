//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`, built from [`ROUTES`]: every
//! served route has exactly one operation here (a missing one panics in tests), and nothing is
//! documented that is not served.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use serde_json::{Value, json};

use crate::{ROUTES, Route};

/// `GET /v1/openapi.json`.
pub(crate) async fn serve_document() -> Json<Value> {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    Json(DOCUMENT.get_or_init(document).clone())
}

/// The whole document.
pub(crate) fn document() -> Value {
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        let mut operation = operation(route.method, route.path);
        complete(&mut operation, route);
        paths
            .entry(route.path)
            .or_default()
            .insert(route.method.to_lowercase(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Closeloop",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Log every piece of patient and carer feedback and close the loop: \"you said, we did\". Errors are RFC 9457 application/problem+json with a `code` member and the request's `request_id` (also in the X-Request-Id header of every response). Every 429 and 503 carries Retry-After in whole seconds. `x-roles` lists the roles that may use an operation. A token may be limited to an org unit (`role@org/unit:token` in CLOSELOOP_API_TOKENS): `x-scoped: true` operations then cover only loops in that unit or below it (lists and stats leave others out; a loop outside answers 404 unknown_loop, as one that does not exist), and `x-scoped: false` operations answer it 403 forbidden.",
        },
        "paths": paths,
        "components": components(),
    })
}

fn operation(method: &str, path: &str) -> Value {
    if let Some(step) = path.strip_prefix("/v1/loops/{loop_id}/") {
        return step_operation(step);
    }
    match (method, path) {
        ("GET", "/healthz") => public(
            "The process is up",
            json!({"200": plain("Always", &json!({"type": "object"}))}),
        ),
        ("GET", "/readyz") => public(
            "The service can take writes",
            json!({"200": plain("Ready", &json!({"type": "object"})), "503": problem("Not ready, with the reason")}),
        ),
        ("GET", "/metrics") => json!({
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }),
        ("GET", "/v1/openapi.json") => public(
            "This document",
            json!({"200": plain("OpenAPI 3.1", &json!({"type": "object"}))}),
        ),
        ("GET", "/assets/{file}") => json!({
            "summary": "A stylesheet of the HTML pages (the NHS design system, built without web fonts)",
            "description": "Public. Only the name the pages link is served, e.g. nhsuk-1a2b3c4d.css: it carries a hash of the content, so the answer may be cached for a year.",
            "security": [],
            "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}],
            "responses": {
                "200": {"description": "CSS", "headers": asset_headers(), "content": {"text/css": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": asset_headers()},
                "404": problem("not_found: no asset of that name"),
            },
        }),
        ("GET", "/assets/images/{file}") => json!({
            "summary": "An image of the HTML pages: the icons the stylesheet links, and the favicon",
            "description": "Public. Only the images the stylesheet and pages link are served; their names are fixed, so answers may be cached for a day and revalidated by ETag.",
            "security": [],
            "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}],
            "responses": {
                "200": {"description": "SVG or ICO", "headers": asset_headers(), "content": {"image/svg+xml": {"schema": {"type": "string"}}, "image/x-icon": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": asset_headers()},
                "404": problem("not_found: no image of that name"),
            },
        }),
        ("GET", "/you-said-we-did") => json!({
            "summary": "\"You said, we did\" as an HTML page",
            "description": "Public. The entries in the NHS frame, newest first, 20 a page, with filters by place and theme; unknown query parameters are ignored. Links its Atom feed in <head>.",
            "security": [],
            "parameters": published_parameters("From the Older link of a previous page", 20),
            "responses": {
                "200": {"description": "HTML", "headers": published_headers(), "content": {"text/html": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": published_headers()},
            },
        }),
        ("GET", "/you-said-we-did/print") => json!({
            "summary": "\"You said, we did\" to print for a noticeboard",
            "description": "Public. The newest 50 entries as a compact list, without navigation or filter form; unknown query parameters are ignored.",
            "security": [],
            "parameters": filter_parameters(),
            "responses": {
                "200": {"description": "HTML", "headers": published_headers(), "content": {"text/html": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": published_headers()},
            },
        }),
        ("GET", "/you-said-we-did/feed.atom") => json!({
            "summary": "\"You said, we did\" as an Atom feed (RFC 4287)",
            "description": "Public. The newest 50 entries; each entry's id is a urn:uuid: made of its public id (never its loop id), its updated time is when the loop was closed. Unknown query parameters are ignored.",
            "security": [],
            "parameters": filter_parameters(),
            "responses": {
                "200": {"description": "Atom", "headers": published_headers(), "content": {"application/atom+xml": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": published_headers()},
                "400": problem("invalid_request: a malformed place or theme"),
            },
        }),
        ("GET", "/you-said-we-did/snippet") => json!({
            "summary": "\"You said, we did\" as an HTML fragment for another site to include",
            "description": "Public. The newest entries (limit 1–10, default 3) in a card with a link to the page, without html, head or body; answered with Access-Control-Allow-Origin: * so a trust's site may fetch it. Unknown query parameters are ignored.",
            "security": [],
            "parameters": [
                {"name": "limit", "in": "query", "required": false, "description": "Entries, 1–10 (default 3)",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10}},
                query("place", "string", "Only entries in this org unit or below it"),
                query("theme", "string", "Only entries with this theme"),
                if_none_match(),
            ],
            "responses": {
                "200": {"description": "An HTML fragment", "headers": snippet_headers(), "content": {"text/html": {"schema": {"type": "string"}}}},
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": snippet_headers()},
                "400": problem("invalid_request: a malformed limit, place or theme"),
            },
        }),
        ("GET", "/insights") => json!({
            "summary": "Insights for patient leaders, as an HTML page",
            "description": "Roles: leader, admin. For a place (an org unit and everything below it) and a theme over the current month and the months before it: feedback received, heard back and closed, median whole working days to hear back and to close, open and overdue loops, the Friends and Family Test by month, the most frequent themes with example stories (those the public page shows), and each seldom-heard group against everyone else. Figures drawn from fewer than 10 loops are withheld. Three charts (inline SVG) each come with a table of the same figures. A token limited to an org unit sees only its subtree.",
            "parameters": [
                query("place", "string", "An org unit: only loops in it or below it (empty: everywhere the token may see)"),
                query("theme", "string", "Only loops with this theme (empty: every theme)"),
                {"name": "period", "in": "query", "required": false, "description": "Months: the current month so far and the whole months before it (default 12)",
                 "schema": {"type": "integer", "enum": [3, 6, 12]}},
            ],
            "responses": {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                "503": page_error("unavailable: the read models are catching up or stopped"),
            },
        }),
        ("GET", "/v1/you-said-we-did") => json!({
            "summary": "\"You said, we did\": closed loops with a change whose authors agreed to publication",
            "description": "Public. Stories have the author's name, e-mail addresses and phone numbers redacted. The next page, if any, is in a `Link: <…>; rel=\"next\"` header (keeping place and theme). Answers carry an ETag; a request whose If-None-Match names it is answered 304. `place` and `theme` are an extension to contract §3.",
            "security": [],
            "parameters": published_parameters("From the Link header of a previous page", 100),
            "responses": {
                "200": {
                    "description": "Entries, most recently closed first",
                    "headers": published_headers(),
                    "content": {"application/json": {"schema": {"type": "array", "items": schema_ref("YouSaidWeDid")}}},
                },
                "304": {"description": "Not modified: If-None-Match named the current ETag", "headers": published_headers()},
                "400": problem("invalid_request"),
            },
        }),
        ("GET", "/v1/loops") => json!({
            "summary": "List loops, oldest received first",
            "description": "Roles: staff, leader, auditor.",
            "security": [{"bearer": []}],
            "parameters": [
                query("status", "string", "open (default), closed or all"), query("stage", "string", "Only loops at this stage"),
                query("org_unit", "string", "Prefix match on whole path segments"), query("theme", "string", "Only loops with this theme"),
                query("channel", "string", "Only loops from this channel"), query("seldom_heard", "string", "Only loops with this community tag"),
                query("overdue", "boolean", "true: only overdue loops; false: only loops that are not"),
                query("limit", "integer", "1–500, default 50"), query("cursor", "string", "next_cursor of the previous page"),
            ],
            "responses": {
                "200": plain("A page", &json!({"type": "object", "required": ["items", "next_cursor", "total"], "properties": {
                    "items": {"type": "array", "items": schema_ref("LoopSummary")}, "next_cursor": {"type": ["string", "null"]}, "total": {"type": "integer"}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"), "503": problem("unavailable"),
            },
        }),
        ("GET", "/v1/loops/{loop_id}") => json!({
            "summary": "One loop and its timeline",
            "description": "Roles: staff, leader, auditor. The timeline holds the loop's events in the GET /v1/events line format. For a leader, `data` holds no personal data: `author` is left out, and `story`, the `message` of acknowledgements and report-backs and the `text` of responses are redacted as on the public page (`record` is unchanged; its personal part is ciphertext). A read by any role but leader is recorded in the access log (GET /v1/audit/access) before it is answered; when it cannot be recorded the answer is 503.",
            "security": [{"bearer": []}],
            "parameters": [{"name": "loop_id", "in": "path", "required": true, "schema": schema_ref("LoopId")}],
            "responses": {
                "200": plain("The loop", &json!({"allOf": [schema_ref("LoopSummary"), {"type": "object", "properties": {"timeline": {"type": "array", "items": schema_ref("EventLine")}}}]})),
                "401": problem("unauthorized"), "403": problem("forbidden"), "404": problem("unknown_loop"),
            },
        }),
        ("GET", "/v1/stats") => json!({
            "summary": "Plain-language figures per group",
            "description": "Roles: staff, leader, auditor. FFT percent_positive = answers 1 or 2 among all answers 1–6; percent_negative = 4 or 5. Medians are in working days, to 2 decimals: each loop's working days are rounded to the nearest 0.01 first, and the median is the middle loop's, or for an even count the mean of the two middle ones rounded half up to 0.01 (for an odd count this is the middle loop's working days rounded to 2 decimals). `from` and `to` as dates are whole days (UTC); times within a day are honoured exactly too. A token limited to an org unit gets figures for its subtree; grouped by theme, channel or seldom_heard, those take a pass over the subtree's loops, so they cost more for a large subtree than the other queries.",
            "security": [{"bearer": []}],
            "parameters": [
                query("group_by", "string", "org_unit, theme, channel or seldom_heard; absent: one group, all"),
                query("from", "string", "Received at or after (date or RFC 3339)"), query("to", "string", "Received before (an RFC 3339 time) or on (a date)"),
            ],
            "responses": {
                "200": plain("The groups", &json!({"type": "object", "properties": {"groups": {"type": "array", "items": schema_ref("StatsGroup")}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
            },
        }),
        ("POST", "/v1/feedback") => json!({
            "summary": "Record feedback: opens a loop",
            "description": "Role: staff. The body is the data of `org.closeloop.feedback.received`, with an optional `loop_id` (generated when absent; derived from the Idempotency-Key when one is sent).",
            "security": [{"bearer": []}],
            "parameters": [ref_param("IdempotencyKey")],
            "requestBody": body("FeedbackReceived"),
            "responses": write_responses(),
        }),
        ("POST", "/v1/changes") => json!({
            "summary": "Record one change on many loops, all or none",
            "description": "Role: staff. Every listed loop gets a `loop.change_made` with the same `change_id`; if any loop refuses, none is changed.",
            "security": [{"bearer": []}],
            "parameters": [ref_param("IdempotencyKey")],
            "requestBody": body("ChangeAcrossLoops"),
            "responses": {
                "201": plain("Recorded on every loop", &json!({"type": "object", "required": ["change_id"], "properties": {"change_id": {"type": "string"}, "loops": {"type": "array", "items": schema_ref("Recorded")}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
                "404": problem("unknown_loop"), "409": problem("version_conflict"), "422": problem("a rule of the loop or invalid_data"),
            },
        }),
        ("GET", "/v1/events") => json!({
            "summary": "The event log as NDJSON",
            "description": "Role: auditor. Recorded in the access log (what `events`) before the first line is sent. One stored event a line, in position order, streamed. `hash` = SHA-256(position u64 BE ‖ version u64 BE ‖ len(loop_id) u32 BE ‖ loop_id ‖ prev_hash ‖ record bytes).",
            "security": [{"bearer": []}],
            "parameters": [query("after", "integer", "Start after this global position (default 0)"), query("limit", "integer", "At most this many events")],
            "responses": {
                "200": {"description": "One EventLine per line", "content": {"application/x-ndjson": {"schema": schema_ref("EventLine")}}},
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
            },
        }),
        ("GET", "/v1/audit/verify") => json!({
            "summary": "Re-walk the hash chains and compute the RFC 6962 tree head",
            "description": "Role: auditor.",
            "security": [{"bearer": []}],
            "parameters": [query("upto", "integer", "Verify up to this position (default: the head)")],
            "responses": {
                "200": plain("The verification report", &schema_ref("VerifyReport")),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
            },
        }),
        ("GET", "/v1/audit/proof/inclusion") => json!({
            "summary": "RFC 6962 audit path of one entry",
            "description": "Role: auditor. leaf_hash = SHA-256(0x00 ‖ hash); verify with the algorithm of RFC 9162 §2.1.3.2 against head_hash, leaf index = position - 1.",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "position", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}},
                query("upto", "integer", "Tree size (default: the head)"),
            ],
            "responses": {
                "200": plain("The proof", &json!({"type": "object", "required": ["position", "upto", "leaf_hash", "path", "head_hash"], "properties": {
                    "position": {"type": "integer"}, "upto": {"type": "integer"}, "leaf_hash": {"type": "string"}, "hash": {"type": "string"},
                    "path": {"type": "array", "items": {"type": "string"}}, "head_hash": {"type": "string"}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
            },
        }),
        ("GET", "/v1/audit/proof/consistency") => json!({
            "summary": "RFC 6962 consistency proof between two tree sizes",
            "description": "Role: auditor. Verify with the algorithm of RFC 9162 §2.1.4.2.",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "from", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}},
                query("upto", "integer", "Tree size (default: the head)"),
            ],
            "responses": {
                "200": plain("The proof", &json!({"type": "object", "required": ["from", "upto", "path", "from_head_hash", "head_hash"], "properties": {
                    "from": {"type": "integer"}, "upto": {"type": "integer"}, "path": {"type": "array", "items": {"type": "string"}},
                    "from_head_hash": {"type": "string"}, "head_hash": {"type": "string"}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
            },
        }),
        ("GET", "/v1/audit/access") => json!({
            "summary": "Who looked: reads of personal data, oldest first",
            "description": "Role: auditor. Every read that returned a loop's personal data — GET /v1/loops/{loop_id} by staff, auditors and admins (what `loop`), GET /v1/events (what `events`, loop_id null), `closeloop replay` (what `replay`) — is recorded before it is answered; a read that cannot be recorded is refused with 503. Leaders read loops without personal data, so their reads are not recorded. The log holds no personal data: the actor is a credential's name or id, never a token. Times strictly increase, so `after` = the `at` of the last line of a page gives the next page with nothing lost or repeated.",
            "parameters": [
                query("loop_id", "string", "Only reads of this loop"),
                query("actor", "string", "Only reads by this actor (a credential's name or id, e.g. staff:1a2b3c4d)"),
                {"name": "after", "in": "query", "required": false, "description": "Only entries strictly after this RFC 3339 time: the `at` of the last line of the previous page",
                 "schema": {"type": "string", "format": "date-time"}},
                {"name": "limit", "in": "query", "required": false, "description": "At most this many entries, 1–1000 (default 100)",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            ],
            "responses": {
                "200": {"description": "One AccessEntry per line", "content": {"application/x-ndjson": {"schema": schema_ref("AccessEntry")}}},
                "400": problem("invalid_request: a malformed loop_id, actor, after or limit"),
            },
        }),
        ("GET", "/v1/dead-letters") => json!({
            "summary": "Messages NATS ingestion could not store (FEEDBACK_DLQ), oldest first",
            "description": "Role: admin. Each item: seq, dead_lettered_at, error (the Closeloop-Error code), detail, original_subject, original_sequence, and the original payload (payload, or payload_base64 when it is not UTF-8; it may hold personal data).",
            "security": [{"bearer": []}],
            "parameters": [
                query("after", "integer", "Start after this FEEDBACK_DLQ sequence (default 0)"),
                query("limit", "integer", "1 to 500, default 50"),
            ],
            "responses": {
                "200": plain("A page of dead letters", &json!({"type": "object", "required": ["items", "next_after"], "properties": {
                    "items": {"type": "array", "items": {"type": "object"}}, "next_after": {"type": ["integer", "null"]}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
                "503": problem("unavailable: NATS is unreachable"),
            },
        }),
        ("POST", "/v1/dead-letters/{seq}/retry") => json!({
            "summary": "Re-drive one dead letter after fixing its cause",
            "description": "Role: admin. Publishes the original bytes again on their original subject under feedback.> and removes the dead letter; if it still cannot be stored it comes back as a new dead letter.",
            "security": [{"bearer": []}],
            "parameters": [{"name": "seq", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}],
            "responses": {
                "202": plain("Published again", &json!({"type": "object", "required": ["seq", "subject", "feedback_sequence"], "properties": {
                    "seq": {"type": "integer"}, "subject": {"type": "string"}, "feedback_sequence": {"type": "integer"}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
                "404": problem("not_found: no such dead letter"),
                "503": problem("unavailable: NATS is unreachable"),
            },
        }),
        ("POST", "/v1/erasures") => json!({
            "summary": "Erase a person's personal data by destroying the keys it was encrypted with",
            "description": "Role: admin. `{\"loop_id\"}` erases one loop, `{\"contact\"}` every loop of that contact (matched after normalising: case, spaces, phone prefixes). Records `loop.erased` on each loop, then destroys its data keys: afterwards `author`, `story` and the free text addressed to the person read `[erased]` everywhere; ratings, themes, org unit and every event stay, and `verify` still passes. Repeating an erasure is harmless.",
            "security": [{"bearer": []}],
            "requestBody": body("Erasure"),
            "responses": {
                "200": plain("Erased", &json!({"type": "object", "required": ["erased_loops"], "properties": {"erased_loops": {"type": "integer", "minimum": 0}}})),
                "400": problem("invalid_request"), "401": problem("unauthorized"), "403": problem("forbidden"),
                "404": problem("unknown_loop: no loop has this loop_id"),
                "422": problem("invalid_data: neither or both of loop_id and contact"),
            },
        }),
        ("GET", "/sign-in") => json!({
            "summary": "The sign-in page of the HTML pages",
            "description": "Public. One password field for an access token (any configured token). Sets the sign-in form's double-submit cookie `__Host-closeloop_signin` (Secure, HttpOnly, SameSite=Strict, Path=/, one hour), whose value the form carries in its `csrf` field. `next`: a path of this site to return to after signing in (anything else is a 400 page); `notice`: `signed-out` or `expired`, for a banner.",
            "security": [],
            "parameters": [
                query("next", "string", "A path of this site (starting with one /) to go to after signing in"),
                query("notice", "string", "signed-out or expired"),
            ],
            "responses": {"200": page("The sign-in form")},
        }),
        ("POST", "/sign-in") => json!({
            "summary": "Sign in to the HTML pages with an access token",
            "description": "Public. Form fields `csrf` (equal to the `__Host-closeloop_signin` cookie, else 403: a sign-in posted from another site), `token`, `next`. The token is checked as a bearer token is (constant time). On success a session starts (idle timeout 30 minutes, absolute 8 hours) and its random id is set as the cookie `__Host-closeloop_session` (Secure, HttpOnly, SameSite=Strict, Path=/, no Max-Age); the token never goes back to the browser. More than 20 failed sign-ins in a minute pause sign-in (429 with Retry-After) until the minute is over.",
            "security": [],
            "requestBody": form_body(&["csrf", "token", "next"]),
            "responses": {
                "303": see_other("To `next`, else the start page of the token's role (/staff for staff and admin)"),
                "401": page_error("The token is not a configured one; the form again with the error"),
                "403": page_error("The form's csrf field does not match the sign-in cookie; the form again"),
                "413": page_error("The form is over 8 KiB"),
                "422": page_error("No token was entered; the form again with the error"),
                "429": page_error("Too many failed sign-ins this minute"),
            },
        }),
        ("POST", "/sign-out") => json!({
            "summary": "Sign out of the HTML pages",
            "description": "Any role, with the session's CSRF token in the form field `csrf`. Ends the session and expires its cookie.",
            "requestBody": form_body(&["csrf"]),
            "responses": {"303": see_other("To /sign-in?notice=signed-out")},
        }),
        ("GET", "/staff") => json!({
            "summary": "The staff work queue (HTML)",
            "description": "Roles: staff, admin; with a session cookie or a bearer token. Without a session a GET is sent to /sign-in (303). Loops with the filters of GET /v1/loops (empty values count as absent), overdue ones first, with counts, and a form to record one change on the ticked loops (POST /staff/changes). `cursor` comes from the page's own Next link; `done=changed&loops=n` shows a banner.",
            "parameters": [
                query("status", "string", "open (default), closed or all"), query("stage", "string", "Only loops at this stage"),
                query("org_unit", "string", "Prefix match on whole path segments"), query("theme", "string", "Only loops with this theme"),
                query("channel", "string", "Only loops from this channel"), query("seldom_heard", "string", "Only loops with this community tag"),
                query("overdue", "boolean", "true: only overdue loops; false: only the others; absent: overdue first"),
                query("limit", "integer", "Loops a page, 1–500, default 50"), query("cursor", "string", "From the page's Next link"),
                query("done", "string", "changed: a change was just recorded"), query("loops", "integer", "On how many loops"),
            ],
            "responses": {"200": page("The queue"), "303": see_other("No session: to /sign-in?next=…")},
        }),
        ("POST", "/staff/changes") => json!({
            "summary": "Record one change on the ticked loops (HTML form)",
            "description": "Roles: staff, admin. The command of POST /v1/changes, from a form: fields `csrf` (a session's CSRF token), `description`, `by`, `evidence`, `loop_id` (once per ticked loop, 1–1000), `form_key` (an idempotency key: the same form sent twice records once), `query` (the queue's query string, to show it again). On success 303 to the queue with a banner; on a refusal the queue again with the error next to its field.",
            "requestBody": form_body(&["csrf", "description", "by", "evidence", "loop_id", "form_key", "query"]),
            "responses": {
                "303": see_other("Recorded: to /staff?…&done=changed&loops=n"),
                "404": page_error("A ticked loop does not exist or is outside the credential's org unit; nothing recorded"),
                "409": page_error("The loops kept changing; nothing recorded"),
                "422": page_error("A rule or invalid data; the queue again with the error next to its field"),
            },
        }),
        ("GET", "/staff/loops/{loop_id}") => json!({
            "summary": "One loop for staff (HTML): summary, story, timeline and a form for each next step",
            "description": "Roles: staff, admin. Shows personal data: the read is recorded in the access log (what `timeline`) first, and refused with 503 when it cannot be. A loop outside the credential's org unit answers 404, as one that does not exist. `done` (a step's name) shows a banner.",
            "parameters": [
                {"name": "loop_id", "in": "path", "required": true, "schema": schema_ref("LoopId")},
                query("done", "string", "acknowledge, respond, plan, change, no-change, report-back, reopen or approve: the step just recorded"),
            ],
            "responses": {"200": page("The loop"), "303": see_other("No session: to /sign-in?next=…"), "404": page_error("No such loop, or outside the credential's org unit")},
        }),
        ("POST", "/staff/loops/{loop_id}/{step}") => json!({
            "summary": "Record one step of a loop (HTML form)",
            "description": "Roles: staff, admin. `step`: acknowledge, respond, plan, change, no-change, report-back, reopen, approve — the commands of POST /v1/loops/{loop_id}/acknowledgements, responses, actions, changes, no-change, report-backs, reopenings and story-approvals. Fields: `csrf` (a session's CSRF token), `version` (the loop's version the form was filled in on: If-Match), `form_key` (an idempotency key), and the event's data fields (`by` and `message`, `text`, `description`, `owner`, `due`, `evidence`, `reason`, `channel` or `story`; empty optional fields are left out). On success 303 to the loop's page with `done`; on a refusal the loop's page again with the error next to its field.",
            "parameters": [
                {"name": "loop_id", "in": "path", "required": true, "schema": schema_ref("LoopId")},
                {"name": "step", "in": "path", "required": true, "schema": {"type": "string", "enum": ["acknowledge", "respond", "plan", "change", "no-change", "report-back", "reopen", "approve"]}},
            ],
            "requestBody": form_body(&["csrf", "version", "form_key", "by", "message", "text", "description", "owner", "due", "evidence", "reason", "channel", "story"]),
            "responses": {
                "303": see_other("Recorded: to /staff/loops/{loop_id}?done={step}"),
                "404": page_error("No such loop or step, or the loop is outside the credential's org unit"),
                "409": page_error("version_conflict: the loop moved on; its page again, showing the new state and the form as filled in"),
                "422": page_error("A rule of contract §1 or invalid data; the page again with the error next to its field"),
            },
        }),
        _ => panic!("no OpenAPI operation for {method} {path}: document it in openapi.rs"),
    }
}

/// Adds what [`ROUTES`] says of a route to its operation, so the document cannot disagree
/// with the guard: the roles (`x-roles`) and the 401 and 403 of a route that needs a token,
/// the 400 of a route that refuses unknown query parameters, the 503 (with `Retry-After`) of
/// a route that needs the store or sheds load, and the `X-Request-Id` of every error.
fn complete(operation: &mut Value, route: &Route) {
    // An HTML page answers its errors as HTML (`problem::finish`), not as problem+json.
    let error = if route.html { page_error } else { problem };
    if let Some(roles) = route.access.roles() {
        operation["security"] = if route.html {
            json!([{"bearer": []}, {"session": []}])
        } else {
            json!([{"bearer": []}])
        };
        operation["x-roles"] = json!(roles.iter().map(|role| role.as_str()).collect::<Vec<_>>());
        add_response(
            operation,
            "401",
            error("unauthorized: no valid token or session"),
        );
        // Every route with roles says what a token limited to an org unit gets from it.
        operation["x-scoped"] = json!(route.scoped);
        let forbidden = match (route.scoped, route.path) {
            (true, "/v1/feedback") => {
                "forbidden: the token's role may not use this route, or the token is limited to an org unit and the feedback's org_unit is outside it"
            }
            (true, _) => "forbidden: the token's role may not use this route",
            (false, _) => {
                "forbidden: the token's role may not use this route, or the token is limited to an org unit: this route covers the whole log and needs a token without an org-unit scope"
            }
        };
        operation["responses"]["403"] = error(forbidden);
        if route.scoped && operation["responses"].get("404").is_some() && !route.html {
            operation["responses"]["404"] = problem(
                "unknown_loop: no such loop, or the token is limited to an org unit and the loop is outside it (answered alike, so its existence is not revealed)",
            );
        }
    } else {
        operation["security"] = json!([]);
    }
    // A page ignores unknown query parameters, but a malformed known one is still a 400.
    if route.strict_query() || route.html {
        add_response(
            operation,
            "400",
            error("invalid_request: an unknown or malformed query parameter"),
        );
    }
    // Every route refuses an over-long request target before anything else reads it.
    add_response(
        operation,
        "414",
        error("uri_too_long: the path and query are over 8 KiB"),
    );
    let never_unavailable = matches!(
        route.path,
        "/healthz" | "/metrics" | "/v1/openapi.json" | "/assets/{file}" | "/assets/images/{file}"
    );
    if !never_unavailable {
        let why = if route.class.is_some() {
            "unavailable: too many requests of this kind are running (shed), or the store failed"
        } else {
            "unavailable: a part of the service (the store, the read models, NATS) cannot serve this now"
        };
        add_response(operation, "503", error(why));
    }
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        let headers = &mut response["headers"];
        if !headers.is_object() {
            *headers = json!({});
        }
        headers["X-Request-Id"] = json!({"$ref": "#/components/headers/RequestId"});
        if status == "503" || status == "429" {
            headers["Retry-After"] = json!({"$ref": "#/components/headers/RetryAfter"});
        }
    }
}

fn add_response(operation: &mut Value, status: &str, response: Value) {
    let responses = &mut operation["responses"];
    if responses.get(status).is_none() {
        responses[status] = response;
    }
}

fn step_operation(step: &str) -> Value {
    let (event_type, schema) = match step {
        "acknowledgements" => ("loop.acknowledged", "Acknowledged"),
        "responses" => ("loop.responded", "Responded"),
        "actions" => ("loop.action_planned", "ActionPlanned"),
        "changes" => ("loop.change_made", "ChangeMade"),
        "no-change" => ("loop.no_change", "NoChange"),
        "report-backs" => ("loop.reported_back", "ReportedBack"),
        "reopenings" => ("loop.reopened", "Reopened"),
        "story-approvals" => ("loop.story_approved", "StoryApproved"),
        _ => panic!("no OpenAPI operation for step {step}"),
    };
    json!({
        "summary": format!("Record `{event_type}` on a loop"),
        "description": "Role: staff. Optional `If-Match: <version>` (bare or quoted) gives 409 version_conflict when the loop has moved on.",
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "loop_id", "in": "path", "required": true, "schema": schema_ref("LoopId")},
            ref_param("IfMatch"),
            ref_param("IdempotencyKey"),
        ],
        "requestBody": body(schema),
        "responses": write_responses(),
    })
}

fn write_responses() -> Value {
    json!({
        "201": {
            "description": "Stored durably",
            "headers": {"ETag": {"description": "The loop's version, quoted", "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": schema_ref("Recorded")}},
        },
        "400": problem("invalid_request: broken JSON or headers"),
        "401": problem("unauthorized"),
        "403": problem("forbidden"),
        "404": problem("unknown_loop"),
        "409": problem("version_conflict"),
        "422": problem("loop_exists, loop_closed, already_acknowledged, no_outcome, not_closed or invalid_data"),
        "503": problem("unavailable: the store cannot take writes now"),
    })
}

/// The headers of an asset: its `ETag` and a year's caching.
fn asset_headers() -> Value {
    json!({
        "ETag": {"description": "The SHA-256 of the content", "schema": {"type": "string"}},
        "Cache-Control": {"description": "public, max-age=31536000, immutable", "schema": {"type": "string"}},
    })
}

fn public(summary: &str, responses: Value) -> Value {
    json!({"summary": summary, "security": [], "responses": responses})
}

fn plain(description: &str, schema: &Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// An HTML page.
fn page(description: &str) -> Value {
    json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}})
}

/// A `303 See Other` to another page.
fn see_other(description: &str) -> Value {
    json!({"description": description, "headers": {"Location": {"schema": {"type": "string"}}}})
}

/// A form body of the HTML pages with these fields.
fn form_body(fields: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> = fields
        .iter()
        .map(|field| ((*field).to_owned(), json!({"type": "string"})))
        .collect();
    json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": properties}}}})
}

/// An error of an HTML page: a short HTML document saying what went wrong.
fn page_error(description: &str) -> Value {
    json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}})
}

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema_ref(schema)}}})
}

fn query(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": kind}})
}

/// The parameters of the paged forms of the public page, of at most `max` entries a page.
fn published_parameters(cursor: &str, max: u32) -> Value {
    let mut parameters = vec![json!(
        {"name": "limit", "in": "query", "required": false, "description": format!("Entries per page, 1–{max} (default 20)"),
         "schema": {"type": "integer", "minimum": 1, "maximum": max}}
    )];
    parameters.push(query("cursor", "string", cursor));
    if let Value::Array(filters) = filter_parameters() {
        parameters.extend(filters);
    }
    Value::Array(parameters)
}

/// The filters every form of the public page takes, and `If-None-Match`.
fn filter_parameters() -> Value {
    json!([
        {"name": "place", "in": "query", "required": false,
         "description": "Only entries in this org unit or below it (a ward is in its hospital), e.g. rxx/royal-infirmary; empty: every place",
         "schema": {"type": "string"}},
        {"name": "theme", "in": "query", "required": false,
         "description": "Only entries with this theme, exactly; at most 100 bytes; empty: every theme",
         "schema": {"type": "string", "maxLength": 100}},
        if_none_match(),
    ])
}

fn if_none_match() -> Value {
    json!({"name": "If-None-Match", "in": "header", "required": false, "schema": {"type": "string"},
           "description": "The ETag of an earlier answer: 304 while it is still current"})
}

/// The caching headers of every form of the public page.
fn published_headers() -> Value {
    json!({
        "ETag": {"description": "Names this page of this form at this state of the published entries", "schema": {"type": "string"}},
        "Cache-Control": {"description": "public, max-age=30", "schema": {"type": "string"}},
    })
}

/// The headers of the snippet: those of every form, and CORS.
fn snippet_headers() -> Value {
    let mut headers = published_headers();
    headers["Access-Control-Allow-Origin"] =
        json!({"description": "*: any site may fetch the snippet", "schema": {"type": "string"}});
    headers
}

fn ref_param(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn text(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": description})
}

fn components() -> Value {
    let by = text("Who recorded it");
    // Apart from the rest: one `json!` of everything is deeper than the macro may recurse.
    let problem_schema = json!({
        "type": "object", "required": ["type", "title", "status", "detail", "code"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "code": {"type": "string"}, "request_id": {"type": "string", "description": "The X-Request-Id of the request"}},
    });
    let headers = json!({
        "RetryAfter": {"description": "Whole seconds (at least 1) to wait before trying again", "schema": {"type": "integer", "minimum": 1}},
        "RequestId": {"description": "The request's id (sent by the client when it is 1–64 characters of [A-Za-z0-9._:-], else made by the service); the service log has the details of a failure under it", "schema": {"type": "string"}},
    });
    let mut components = json!({
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "A token from CLOSELOOP_API_TOKENS: role:token, role:token:name or role@org/unit:token:name (a token limited to that org unit and below it)"},
            "session": {"type": "apiKey", "in": "cookie", "name": "__Host-closeloop_session", "description": "The HTML pages' session, started at POST /sign-in with a token: it carries that token's credential (role, name, org-unit scope). Every form a session posts carries the session's CSRF token in the field `csrf`."},
        },
        "parameters": {
            "IfMatch": {"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"}, "description": "The loop version the change expects"},
            "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}, "description": "Retrying with the same key returns the original answer and stores nothing new"},
        },
        "schemas": {
            "LoopId": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
            "OrgUnit": {"type": "string", "pattern": "^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", "example": "rxx/site-a/ward-7"},
            "Channel": {"type": "string", "enum": ["web", "sms", "email", "phone", "paper", "in_person", "survey", "social", "community_partner", "other"]},
            "Recorded": {
                "type": "object", "required": ["loop_id", "version"],
                "properties": {"loop_id": schema_ref("LoopId"), "version": {"type": "integer"}, "position": {"type": "integer"}},
            },
            "FeedbackReceived": {
                "type": "object", "required": ["org_unit", "channel"], "additionalProperties": true,
                "description": "At least one of story or ratings is required. Unknown fields are kept.",
                "properties": {
                    "loop_id": schema_ref("LoopId"), "org_unit": schema_ref("OrgUnit"), "channel": schema_ref("Channel"),
                    "received_at": {"type": "string", "format": "date-time"}, "story": {"type": "string"},
                    "ratings": {"type": "object", "additionalProperties": {"type": "number"}, "description": "fft: 1 very good … 5 very poor, 6 don't know"},
                    "themes": {"type": "array", "items": {"type": "string"}}, "seldom_heard": {"type": "array", "items": {"type": "string"}},
                    "author": {"type": "object", "properties": {"anonymous": {"type": "boolean"}, "name": {"type": "string"}, "contact": {"type": "string"}}},
                    "consent_to_publish": {"type": "boolean", "default": false}, "language": {"type": "string"},
                },
            },
            "Acknowledged": {"type": "object", "required": ["by"], "properties": {"by": by, "message": {"type": "string"}}},
            "Responded": {"type": "object", "required": ["by", "text"], "properties": {"by": by, "text": text("The reply")}},
            "ActionPlanned": {"type": "object", "required": ["by", "description"], "properties": {"by": by, "description": text("What will be done"), "owner": {"type": "string"}, "due": {"type": "string", "format": "date"}}},
            "ChangeMade": {"type": "object", "required": ["by", "description"], "properties": {"by": by, "description": text("What changed"), "change_id": {"type": "string"}, "evidence": {}}},
            "NoChange": {"type": "object", "required": ["by", "reason"], "properties": {"by": by, "reason": text("Why nothing could change")}},
            "ReportedBack": {"type": "object", "required": ["by", "message"], "properties": {"by": by, "message": text("What the person was told"), "channel": schema_ref("Channel")}},
            "Reopened": {"type": "object", "required": ["by", "reason"], "properties": {"by": by, "reason": text("Why")}},
            "StoryApproved": {"type": "object", "required": ["by"], "properties": {"by": by, "story": text("The text to publish instead of the story as given (optional; personal data, encrypted and erasable)")}},
            "Erasure": {
                "type": "object", "minProperties": 1, "maxProperties": 1,
                "properties": {"loop_id": schema_ref("LoopId"), "contact": {"type": "string", "minLength": 1, "maxLength": 1024}},
                "description": "Exactly one of loop_id or contact.",
            },
            "ChangeAcrossLoops": {
                "type": "object", "required": ["description", "by", "loop_ids"],
                "properties": {"description": text("What changed"), "by": by, "loop_ids": {"type": "array", "minItems": 1, "maxItems": 1000, "items": schema_ref("LoopId")}, "evidence": {}},
            },
            "EventLine": {
                "type": "object",
                "required": ["position", "loop_id", "version", "event_id", "source", "type", "time", "data", "record", "prev_hash", "hash"],
                "properties": {
                    "position": {"type": "integer"}, "loop_id": schema_ref("LoopId"), "version": {"type": "integer"},
                    "event_id": {"type": "string"}, "source": {"type": "string"}, "type": {"type": "string"},
                    "time": {"type": "string", "format": "date-time"},
                    "actor": {"type": "string", "description": "Who did it, as authenticated: the credential's name or id, or the NATS publisher's source (absent in events stored before actors were recorded)"},
                    "data": {"type": "object", "description": "Personal fields decrypted for staff and auditors, redacted or left out for leaders, \"[erased]\" once erased"},
                    "record": {"type": "string", "contentEncoding": "base64"},
                    "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
            "LoopSummary": {
                "type": "object",
                "required": ["loop_id", "status", "stage", "org_unit", "channel", "themes", "seldom_heard", "ratings", "received_at", "acknowledged_at", "closed_at", "acknowledge_by", "close_by", "overdue", "version", "public_id"],
                "properties": {
                    "loop_id": schema_ref("LoopId"), "public_id": schema_ref("PublicId"), "status": {"type": "string", "enum": ["open", "closed"]},
                    "stage": {"type": "string", "enum": ["received", "acknowledged", "responded", "action_planned", "outcome_recorded", "closed"]},
                    "org_unit": schema_ref("OrgUnit"), "channel": schema_ref("Channel"),
                    "themes": {"type": "array", "items": {"type": "string"}}, "seldom_heard": {"type": "array", "items": {"type": "string"}},
                    "ratings": {"type": "object", "additionalProperties": {"type": "number"}},
                    "received_at": {"type": "string", "format": "date-time"}, "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
                    "closed_at": {"type": ["string", "null"], "format": "date-time"}, "acknowledge_by": {"type": "string", "format": "date-time"},
                    "close_by": {"type": "string", "format": "date-time"}, "overdue": {"type": "boolean"}, "version": {"type": "integer"},
                },
            },
            "StatsGroup": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"}, "received": {"type": "integer"}, "open": {"type": "integer"}, "closed": {"type": "integer"},
                    "closure_rate": {"type": "number"}, "overdue": {"type": "integer"},
                    "median_days_to_acknowledge": {"type": ["number", "null"], "description": "Median working days from receipt to the first contact, over loops that had one, each loop's rounded to 0.01 first (see GET /v1/stats); null when none had"},
                    "median_days_to_close": {"type": ["number", "null"], "description": "Median working days from receipt to closing, over closed loops, each loop's rounded to 0.01 first (see GET /v1/stats); null when none is closed"},
                    "ratings": {"type": "object", "additionalProperties": {"type": "object"}},
                    "top_themes": {"type": "array", "items": {"type": "object", "properties": {"theme": {"type": "string"}, "count": {"type": "integer"}}}},
                },
            },
            "PublicId": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "A loop's opaque public name (contract §3 v1.1): 128 random bits, never the loop id"},
            "YouSaidWeDid": {
                "type": "object", "required": ["public_id", "themes", "you_said", "we_did", "closed_at"],
                "properties": {"public_id": schema_ref("PublicId"), "themes": {"type": "array", "items": {"type": "string"}}, "you_said": {"type": "string"}, "we_did": {"type": "string"}, "closed_at": {"type": "string", "format": "date-time"}},
            },
            "VerifyReport": {
                "type": "object", "required": ["ok", "events", "head_hash", "first_bad_position"],
                "properties": {"ok": {"type": "boolean"}, "events": {"type": "integer"}, "head_hash": {"type": "string"}, "first_bad_position": {"type": ["integer", "null"]}, "problem": {"type": "string"}},
            },
        },
    });
    components["schemas"]["AccessEntry"] = json!({
        "type": "object", "required": ["at", "actor", "role", "loop_id", "what"],
        "properties": {
            "at": {"type": "string", "format": "date-time", "description": "When the read happened; strictly increasing"},
            "actor": {"type": "string", "minLength": 1, "maxLength": 128, "description": "A credential's name or id (never a token), or the operator of a command-line tool"},
            "role": {"type": "string", "description": "staff, auditor, admin, or operator for a command-line tool"},
            "loop_id": {"oneOf": [schema_ref("LoopId"), {"type": "null"}], "description": "The loop read; null for a read across loops"},
            "what": {"type": "string", "enum": ["loop", "events", "replay", "timeline"]},
        },
    });
    components["headers"] = headers;
    components["schemas"]["Problem"] = problem_schema;
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let document = document();
        let mut documented = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|route| (route.method.to_owned(), route.path.to_owned()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn roles_and_error_responses_follow_the_route_table() {
        let document = document();
        for route in ROUTES {
            let operation = &document["paths"][route.path][route.method.to_lowercase()];
            let responses = &operation["responses"];
            match route.access.roles() {
                Some(roles) => {
                    let listed: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
                    assert_eq!(operation["x-roles"], json!(listed), "{}", route.path);
                    assert_eq!(operation["x-scoped"], json!(route.scoped), "{}", route.path);
                    assert!(responses.get("401").is_some() && responses.get("403").is_some());
                    if !route.scoped {
                        let forbidden = responses["403"]["description"].as_str().unwrap();
                        assert!(forbidden.contains("org-unit scope"), "{}", route.path);
                    }
                }
                None => assert_eq!(operation["security"], json!([]), "{}", route.path),
            }
            if let Some(unavailable) = responses.get("503") {
                assert!(
                    unavailable["headers"].get("Retry-After").is_some(),
                    "{} 503 without Retry-After",
                    route.path
                );
            }
            if route.class.is_some() {
                assert!(responses.get("503").is_some(), "{}", route.path);
            }
        }
    }

    #[test]
    fn pages_document_their_errors_as_html() {
        let document = document();
        let pages: Vec<&Route> = ROUTES.iter().filter(|route| route.html).collect();
        assert!(!pages.is_empty());
        for route in pages {
            let responses =
                &document["paths"][route.path][route.method.to_lowercase()]["responses"];
            for status in ["400", "503"] {
                let content = &responses[status]["content"];
                assert!(
                    content.get("text/html").is_some()
                        && content.get("application/problem+json").is_none(),
                    "{} {status}: {content}",
                    route.path
                );
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let document = document();
        let rendered = document.to_string();
        for reference in rendered.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().expect("reference");
            let pointer = target.trim_start_matches('#');
            assert!(
                document.pointer(pointer).is_some(),
                "dangling reference {target}"
            );
        }
    }
}
