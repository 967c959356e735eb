//! The work queue (`GET /staff`): loops with the contract's filters (`status`, `stage`,
//! `org_unit`, `theme`, `channel`, `seldom_heard`, `overdue`, and `limit` per page), overdue
//! loops first, with counts; and "record one change for these loops" on the ticked ones
//! (`POST /staff/changes`).
//!
//! Without an `overdue` filter the queue is the overdue loops (oldest first), then the
//! others: two walks of the read models' own order, each with their cursors, so a page costs
//! what `GET /v1/loops` costs for it, whatever the number of loops. The page's `cursor` says
//! which walk it is in (`o.` overdue, `r.` the rest, `f.` a list filtered on `overdue`)
//! followed by the read models' cursor.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use closeloop_domain::{Channel, LoopId, Rejection};
use closeloop_projections::{LoopQuery, LoopSummary, QueryError, StatusFilter};
use closeloop_store::EventStore;
use maud::{Markup, html as markup};
use serde_json::Value;

use super::loop_page::{Caller, status_tag, too_many_fields};
use super::steps::{self, CHANGE_FIELDS};
use super::{Problem, banner, day, error_summary, page, words};
use crate::AppState;
use crate::auth::Credential;
use crate::commands::{self, Idempotency, MAX_CHANGE_LOOPS};
use crate::error::ApiError;
use crate::pages::form::Form;
use crate::pages::refusal::{Refusal, see_other};
use crate::pages::session::SignedIn;
use crate::pages::shown;
use crate::pages::sign_in::staff_frame;
use crate::reads::{caught_up, loop_query, models};
use crate::request_id::RequestId;
use crate::routes::LOOP_FILTERS;

/// Every query parameter of `GET /staff` (for `ROUTES`).
pub(crate) const QUERY: &[&str] = &[
    "status",
    "stage",
    "org_unit",
    "theme",
    "channel",
    "seldom_heard",
    "overdue",
    "limit",
    "cursor",
    "done",
    "loops",
];

/// Places a filter offers as a list; with more, the place is typed as an org unit.
const MAX_LISTED_PLACES: usize = 200;

/// Where in the queue a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// Among the overdue loops, after this read-model cursor.
    Overdue(String),
    /// Among the others, from their start or after this cursor.
    Rest(Option<String>),
    /// In a list filtered on `overdue`, after this cursor.
    Filtered(String),
}

impl Cursor {
    fn parse(raw: &str) -> Option<Self> {
        let (walk, inner) = raw.split_once('.')?;
        match (walk, inner) {
            ("o", inner) if !inner.is_empty() => Some(Self::Overdue(inner.to_owned())),
            ("r", "") => Some(Self::Rest(None)),
            ("r", inner) => Some(Self::Rest(Some(inner.to_owned()))),
            ("f", inner) if !inner.is_empty() => Some(Self::Filtered(inner.to_owned())),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Self::Overdue(inner) => format!("o.{inner}"),
            Self::Rest(inner) => format!("r.{}", inner.as_deref().unwrap_or_default()),
            Self::Filtered(inner) => format!("f.{inner}"),
        }
    }
}

/// A request of the queue: its filters as given and as the read models take them, where the
/// page starts, and what was just recorded.
#[derive(Debug, Clone)]
struct QueueRequest {
    /// The filters given (empty ones left out), in the order of the loop list's parameters
    /// ([`LOOP_FILTERS`]), the order links write them.
    filters: Vec<(&'static str, String)>,
    /// The filters for the read models, the caller's scope included, without a cursor.
    query: LoopQuery,
    cursor: Option<Cursor>,
    /// Loops a change was just recorded on (`done=changed&loops=n`).
    changed: Option<u64>,
}

impl QueueRequest {
    /// Reads the query of `GET /staff`. Empty values (an unset filter of the form) count as
    /// absent; other parameters are ignored.
    fn parse(params: &HashMap<String, String>, credential: &Credential) -> Result<Self, ApiError> {
        let value = |name: &str| {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let filters: Vec<(&'static str, String)> = LOOP_FILTERS
            .iter()
            .filter(|&&name| name != "cursor")
            .filter_map(|&name| value(name).map(|v| (name, v.to_owned())))
            .collect();
        let given: HashMap<String, String> = filters
            .iter()
            .map(|(name, v)| ((*name).to_owned(), v.clone()))
            .collect();
        let mut query = loop_query(&given)?;
        query.scope.clone_from(&credential.org_unit);
        let cursor = value("cursor")
            .map(|raw| {
                Cursor::parse(raw).ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "cursor {raw:?} is not one this page made; start again from the first page"
                    ))
                })
            })
            .transpose()?;
        let changed = match value("done") {
            None => None,
            Some("changed") => Some(
                value("loops")
                    .and_then(|raw| raw.parse().ok())
                    .filter(|n| (1..=MAX_CHANGE_LOOPS as u64).contains(n))
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(
                            "query parameter loops: use the number of loops changed".to_owned(),
                        )
                    })?,
            ),
            Some(other) => {
                return Err(ApiError::InvalidRequest(format!(
                    "query parameter done: {other:?} is not something this page records"
                )));
            }
        };
        Ok(Self {
            filters,
            query,
            cursor,
            changed,
        })
    }

    fn filter(&self, name: &str) -> &str {
        self.filters
            .iter()
            .find(|(filter, _)| *filter == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// The query string of these filters, with `extra` pairs after them.
    fn link(&self, extra: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.filters {
            query.append_pair(name, value);
        }
        for (name, value) in extra {
            query.append_pair(name, value);
        }
        let query = query.finish();
        if query.is_empty() {
            "/staff".to_owned()
        } else {
            format!("/staff?{query}")
        }
    }
}

/// One page of the queue, with its counts.
struct Listing {
    items: Vec<LoopSummary>,
    next: Option<Cursor>,
    /// Open loops within the caller's scope, whatever the filters.
    open: u64,
    /// Loops matching the filters.
    matching: u64,
    /// Of those, the overdue ones.
    overdue: u64,
}

/// Finds one page of the queue in the read models (see the module docs).
fn listing<S>(state: &AppState<S>, request: &QueueRequest) -> Result<Listing, ApiError> {
    let now = (state.clock)();
    let models = models(state)?;
    let list = |query: &LoopQuery| {
        models
            .list(query, now, &state.sla)
            .map_err(|QueryError::BadCursor(_)| {
                ApiError::InvalidRequest(
                    "this page of the queue no longer exists; start again from the first page"
                        .to_owned(),
                )
            })
    };
    let count = |query: &LoopQuery| {
        let query = LoopQuery {
            limit: 1,
            cursor: None,
            ..query.clone()
        };
        list(&query).map(|page| page.total)
    };
    let base = &request.query;
    let open = count(&LoopQuery {
        status: StatusFilter::Open,
        scope: base.scope.clone(),
        ..LoopQuery::default()
    })?;
    let wrong_walk = || {
        ApiError::InvalidRequest(
            "this page of the queue was made for other filters; start again from the first page"
                .to_owned(),
        )
    };
    let walk = |overdue: bool, cursor: Option<&String>, limit: usize| {
        list(&LoopQuery {
            overdue: Some(overdue),
            cursor: cursor.cloned(),
            limit,
            ..base.clone()
        })
    };
    if let Some(overdue) = base.overdue {
        let cursor = match &request.cursor {
            None => None,
            Some(Cursor::Filtered(inner)) => Some(inner),
            Some(_) => return Err(wrong_walk()),
        };
        let page = walk(overdue, cursor, base.limit)?;
        let matching = page.total;
        let overdue_count = if overdue {
            matching
        } else {
            count(&LoopQuery {
                overdue: None,
                ..base.clone()
            })? - matching
        };
        return Ok(Listing {
            items: page.items,
            next: page.next_cursor.map(Cursor::Filtered),
            open,
            matching,
            overdue: overdue_count,
        });
    }
    let matching = count(base)?;
    match &request.cursor {
        None | Some(Cursor::Overdue(_)) => {
            let cursor = match &request.cursor {
                Some(Cursor::Overdue(inner)) => Some(inner),
                _ => None,
            };
            let page = walk(true, cursor, base.limit)?;
            let overdue = page.total;
            let mut items = page.items;
            let others = matching.saturating_sub(overdue) > 0;
            let next = match page.next_cursor {
                Some(inner) => Some(Cursor::Overdue(inner)),
                None if others && items.len() < base.limit => {
                    let rest = walk(false, None, base.limit - items.len())?;
                    items.extend(rest.items);
                    rest.next_cursor.map(|inner| Cursor::Rest(Some(inner)))
                }
                None if others => Some(Cursor::Rest(None)),
                None => None,
            };
            Ok(Listing {
                items,
                next,
                open,
                matching,
                overdue,
            })
        }
        Some(Cursor::Rest(cursor)) => {
            let page = walk(false, cursor.as_ref(), base.limit)?;
            Ok(Listing {
                overdue: matching.saturating_sub(page.total),
                items: page.items,
                next: page.next_cursor.map(|inner| Cursor::Rest(Some(inner))),
                open,
                matching,
            })
        }
        Some(Cursor::Filtered(_)) => Err(wrong_walk()),
    }
}

/// A bulk change that was sent and not recorded, shown again as it was filled in.
struct BulkFailed<'a> {
    form: &'a Form,
    ticked: HashSet<&'a str>,
    problems: Vec<BulkProblem>,
}

/// What is wrong with a bulk change: the field it is about (`None`: the ticked loops).
struct BulkProblem {
    field: Option<&'static str>,
    message: String,
}

/// The id of the first tick box, where a problem with the selection is linked to.
const SELECTION_ANCHOR: &str = "select-1";

impl BulkProblem {
    fn anchor(&self) -> String {
        self.field.map_or_else(
            || SELECTION_ANCHOR.to_owned(),
            |field| format!("bulk-{field}"),
        )
    }
}

/// `GET /staff`.
pub(crate) async fn show<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    signed_in: Option<Extension<SignedIn>>,
    Extension(request_id): Extension<RequestId>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let caller = Caller {
        credential,
        signed_in: signed_in.map(|Extension(signed_in)| signed_in),
        request_id,
    };
    let request = match QueueRequest::parse(&params, &caller.credential) {
        Ok(request) => request,
        Err(err) => return caller.refuse(&state, &Refusal::of(&err)),
    };
    render(&state, &caller, &request, None, StatusCode::OK).await
}

/// `POST /staff/changes`: fields `description`, `by`, `evidence`, the ticked `loop_id`s, and
/// `query` (the queue's query string, to show it again). Records one change on every ticked
/// loop through the API's command path, all or none; `303` back to the queue with a banner.
pub(crate) async fn record_change<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    signed_in: Option<Extension<SignedIn>>,
    Extension(request_id): Extension<RequestId>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let caller = Caller {
        credential,
        signed_in: signed_in.map(|Extension(signed_in)| signed_in),
        request_id,
    };
    let Ok(form) = Form::parse(&body) else {
        return caller.refuse(&state, &too_many_fields());
    };
    // The queue the form was sent from; if its query is not one the page reads, the first.
    let back: HashMap<String, String> = form
        .get("query")
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let request = QueueRequest::parse(&back, &caller.credential)
        .or_else(|_| QueueRequest::parse(&HashMap::new(), &caller.credential));
    let request = match request {
        Ok(request) => request,
        Err(err) => return caller.refuse(&state, &Refusal::of(&err)),
    };
    let ticked: Vec<&str> = form.all("loop_id").collect();
    let failed = |problem: BulkProblem| BulkFailed {
        form: &form,
        ticked: ticked.iter().copied().collect(),
        problems: vec![problem],
    };
    let selection = |message: &str| BulkProblem {
        field: None,
        message: message.to_owned(),
    };
    if ticked.is_empty() || ticked.len() > MAX_CHANGE_LOOPS {
        let problem = selection(&format!(
            "Tick the loops this change answers: at least 1, and at most {}",
            thousands(MAX_CHANGE_LOOPS as u64)
        ));
        let failed = failed(problem);
        return render(
            &state,
            &caller,
            &request,
            Some(&failed),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let mut loop_ids = Vec::with_capacity(ticked.len());
    for raw in &ticked {
        match LoopId::parse(raw) {
            Ok(loop_id) => loop_ids.push(loop_id),
            Err(_) => {
                let failed = failed(selection(
                    "One of the ticked loops is not one this page lists. Reload the page and tick the loops again",
                ));
                return render(
                    &state,
                    &caller,
                    &request,
                    Some(&failed),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        }
    }
    let data = steps::data_of(CHANGE_FIELDS, &form);
    // The key is bound to the ticked loops too: the same form sent with other ticks is
    // another change.
    let mut bound = data.clone();
    bound.insert(
        "loop_ids".to_owned(),
        Value::Array(
            ticked
                .iter()
                .map(|id| Value::String((*id).to_owned()))
                .collect(),
        ),
    );
    let key = form
        .get("form_key")
        .and_then(|key| Idempotency::new(&caller.credential, key, uri.path(), &bound));
    let count = loop_ids.len();
    let recorded =
        commands::record_change_across(&state, &caller.credential, loop_ids, data, key).await;
    let Err(err) = recorded else {
        let count = count.to_string();
        return see_other(&request.link(&[("done", "changed"), ("loops", &count)]));
    };
    let (status, problem) = match &err {
        ApiError::Rejected(Rejection::UnknownLoop(_)) => (
            StatusCode::NOT_FOUND,
            selection(
                "One of the ticked loops does not exist, or is outside the part of the organisation you work in. Nothing was recorded",
            ),
        ),
        ApiError::Rejected(Rejection::LoopClosed) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            selection(
                "One of the ticked loops is closed, so nothing was recorded. Untick the closed loops, or reopen them first",
            ),
        ),
        ApiError::Rejected(Rejection::InvalidData(detail)) if detail.starts_with("loop") => (
            StatusCode::UNPROCESSABLE_ENTITY,
            selection(
                "A loop is ticked twice, or is not one this page lists. Reload the page and tick the loops again",
            ),
        ),
        ApiError::VersionConflict(_) => (
            StatusCode::CONFLICT,
            selection(
                "The ticked loops kept changing while the change was recorded, so nothing was recorded. Try again",
            ),
        ),
        _ => match steps::field_error(CHANGE_FIELDS, &CHANGE_FIELDS[1], &err) {
            Some(error) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                BulkProblem {
                    field: Some(error.field),
                    message: error.message,
                },
            ),
            None => return caller.refuse(&state, &Refusal::of(&err)),
        },
    };
    let failed = failed(problem);
    render(&state, &caller, &request, Some(&failed), status).await
}

async fn render<S: EventStore>(
    state: &AppState<S>,
    caller: &Caller,
    request: &QueueRequest,
    failed: Option<&BulkFailed<'_>>,
    status: StatusCode,
) -> Response {
    let listed = match caught_up(state).await {
        Ok(()) => listing(state, request),
        Err(err) => Err(err),
    };
    let listing = match listed {
        Ok(listing) => listing,
        Err(err) => return caller.refuse(state, &Refusal::of(&err)),
    };
    let title = match request.query.status {
        StatusFilter::Open => "Open loops",
        StatusFilter::Closed => "Closed loops",
        StatusFilter::All => "All loops",
    };
    // A page shown again with an error says so first in its title, as screen readers read it.
    let page_title = if failed.is_some() {
        format!("Error: {title}")
    } else {
        title.to_owned()
    };
    let frame = staff_frame(&page_title, &caller.credential, caller.signed_in.as_ref());
    let body = body(state, caller, request, &listing, failed, title);
    page(&state.site, &frame, &body, status)
}

fn body<S>(
    state: &AppState<S>,
    caller: &Caller,
    request: &QueueRequest,
    listing: &Listing,
    failed: Option<&BulkFailed<'_>>,
    title: &str,
) -> Markup {
    let problems: Vec<Problem> = failed
        .map(|failed| {
            failed
                .problems
                .iter()
                .map(|problem| Problem {
                    anchor: problem.anchor(),
                    message: problem.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let scope = caller
        .credential
        .org_unit
        .as_ref()
        .map(|unit| state.site.place_name(unit.as_str()));
    let changed = request.changed.map(|n| {
        let loops = if n == 1 { "loop" } else { "loops" };
        format!("One change recorded on {n} {loops}.")
    });
    markup! {
        (error_summary(&problems))
        @if let Some(changed) = &changed { (banner(true, changed)) }
        h1 { (title) }
        p class="nhsuk-body-l" {
            (count(listing.open, "open loop", "open loops"))
            @if let Some(scope) = &scope { " in " (scope) }
            ". "
            (count(listing.matching, "loop matches", "loops match")) " these filters, "
            (thousands(listing.overdue)) " of them overdue."
        }
        (filter_form(state, request))
        @if listing.items.is_empty() {
            p { "No loops match these filters." }
        } @else {
            (bulk_form(state, caller, request, listing, failed))
        }
        (pagination(request, listing))
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{} {many}", thousands(n))
    }
}

/// A whole number as people write it: 1,000,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The filters, as a `GET` form of the queue itself.
fn filter_form<S>(state: &AppState<S>, request: &QueueRequest) -> Markup {
    let options = |name: &str, choices: &[(&str, &str)]| {
        let current = request.filter(name);
        markup! {
            @for (value, label) in choices {
                option value=(value) selected[current == *value] { (label) }
            }
        }
    };
    let places: Option<Vec<(&String, &String)>> = (!state.site.places.is_empty()
        && state.site.places.len() <= MAX_LISTED_PLACES)
        .then(|| {
            let mut places: Vec<_> = state.site.places.iter().collect();
            places.sort_by(|a, b| a.1.cmp(b.1));
            places
        });
    let current_place = request.filter("org_unit");
    let stages: Vec<(&str, &str)> = std::iter::once(("", "Any stage"))
        .chain(
            words::STAGES
                .iter()
                .map(|&stage| (stage.as_str(), words::stage(stage))),
        )
        .collect();
    let channels: Vec<(&str, &str)> = std::iter::once(("", "Any channel"))
        .chain(
            Channel::ALL
                .iter()
                .map(|&channel| (channel.as_str(), words::channel(channel))),
        )
        .collect();
    markup! {
        details class="nhsuk-details" open[!request.filters.is_empty()] {
            summary class="nhsuk-details__summary" {
                span class="nhsuk-details__summary-text" { "Filter loops" }
            }
            div class="nhsuk-details__text" {
                form method="get" action="/staff" {
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-status" { "Status" }
                        select class="nhsuk-select" id="filter-status" name="status" {
                            (options("status", &[("", "Open"), ("closed", "Closed"), ("all", "Open and closed")]))
                        }
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-overdue" { "Overdue" }
                        select class="nhsuk-select" id="filter-overdue" name="overdue" {
                            (options("overdue", &[("", "Overdue first, then the rest"), ("true", "Only overdue"), ("false", "Only not overdue")]))
                        }
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-stage" { "Stage" }
                        select class="nhsuk-select" id="filter-stage" name="stage" { (options("stage", &stages)) }
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-org-unit" { "Place" }
                        @if let Some(places) = &places {
                            select class="nhsuk-select" id="filter-org-unit" name="org_unit" {
                                option value="" selected[current_place.is_empty()] { "All places" }
                                @for (unit, name) in places {
                                    option value=(unit) selected[current_place == unit.as_str()] { (name) }
                                }
                            }
                        } @else {
                            div class="nhsuk-hint" id="filter-org-unit-hint" {
                                "An org unit, for example rxx/royal-infirmary. Loops in it and below it are shown."
                            }
                            input class="nhsuk-input" id="filter-org-unit" name="org_unit" type="text"
                                value=(current_place) aria-describedby="filter-org-unit-hint" spellcheck="false";
                        }
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-theme" { "Theme" }
                        input class="nhsuk-input nhsuk-input--width-20" id="filter-theme" name="theme" type="text"
                            value=(request.filter("theme"));
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-channel" { "Channel" }
                        select class="nhsuk-select" id="filter-channel" name="channel" { (options("channel", &channels)) }
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-seldom-heard" { "Seldom-heard community" }
                        div class="nhsuk-hint" id="filter-seldom-heard-hint" { "For example, homeless." }
                        input class="nhsuk-input nhsuk-input--width-20" id="filter-seldom-heard" name="seldom_heard" type="text"
                            value=(request.filter("seldom_heard")) aria-describedby="filter-seldom-heard-hint";
                    }
                    div class="nhsuk-form-group" {
                        label class="nhsuk-label" for="filter-limit" { "Loops per page" }
                        select class="nhsuk-select" id="filter-limit" name="limit" {
                            (options("limit", &[("", "50"), ("100", "100"), ("200", "200"), ("500", "500")]))
                        }
                    }
                    button class="nhsuk-button nhsuk-button--secondary" type="submit" { "Apply filters" }
                    " "
                    a href="/staff" class="nhsuk-link" { "Clear filters" }
                }
            }
        }
    }
}

/// The table of loops, its tick boxes and the change to record on the ticked ones: one form.
fn bulk_form<S>(
    state: &AppState<S>,
    caller: &Caller,
    request: &QueueRequest,
    listing: &Listing,
    failed: Option<&BulkFailed<'_>>,
) -> Markup {
    let selection_error = failed.and_then(|failed| {
        failed
            .problems
            .iter()
            .find(|problem| problem.field.is_none())
            .map(|problem| problem.message.as_str())
    });
    let field_error = |name: &str| {
        failed.and_then(|failed| {
            failed
                .problems
                .iter()
                .find(|problem| problem.field == Some(name))
                .map(|problem| problem.message.as_str())
        })
    };
    let value = |name: &str| caller.prefilled(failed.map(|failed| failed.form), name);
    let key = Caller::form_key(failed.map(|failed| failed.form));
    let mut here = request.link(&[]);
    if let Some(cursor) = &request.cursor {
        let separator = if here.contains('?') { '&' } else { '?' };
        let _ = write!(
            here,
            "{separator}cursor={}",
            form_urlencoded::byte_serialize(cursor.encode().as_bytes()).collect::<String>()
        );
    }
    let query = here.split_once('?').map_or("", |(_, query)| query);
    let caption = match request.query.overdue {
        None => "Loops, overdue first, then oldest first",
        Some(true) => "Overdue loops, oldest first",
        Some(false) => "Loops that are not overdue, oldest first",
    };
    markup! {
        form method="post" action="/staff/changes" novalidate {
            @if let Some(signed_in) = &caller.signed_in {
                input type="hidden" name="csrf" value=(signed_in.csrf);
            }
            input type="hidden" name="form_key" value=(key);
            input type="hidden" name="query" value=(query);
            div class={ "nhsuk-form-group" @if selection_error.is_some() { " nhsuk-form-group--error" } } {
                @if let Some(error) = selection_error {
                    span class="nhsuk-error-message" id="selection-error" {
                        span class="nhsuk-u-visually-hidden" { "Error: " } (error)
                    }
                }
                // On a phone the table scrolls inside its own region, not the page; the region
                // takes focus so that keyboard users can scroll it too.
                div class="nhsuk-table-container" role="region" aria-label="Loops, scrolls sideways on a small screen" tabindex="0" {
                table class="nhsuk-table" {
                    caption class="nhsuk-table__caption" { (caption) }
                    thead class="nhsuk-table__head" {
                        tr class="nhsuk-table__row" {
                            th class="nhsuk-table__header" scope="col" { span class="nhsuk-u-visually-hidden" { "Tick to record a change" } }
                            th class="nhsuk-table__header" scope="col" { "Received" }
                            th class="nhsuk-table__header" scope="col" { "Place" }
                            th class="nhsuk-table__header" scope="col" { "Themes" }
                            th class="nhsuk-table__header" scope="col" { "Stage" }
                            th class="nhsuk-table__header" scope="col" { "Acknowledge by" }
                            th class="nhsuk-table__header" scope="col" { "Close by" }
                            th class="nhsuk-table__header" scope="col" { "Status" }
                        }
                    }
                    tbody class="nhsuk-table__body" {
                        @for (index, item) in listing.items.iter().enumerate() {
                            (row(state, index + 1, item, failed.is_some_and(|failed| failed.ticked.contains(item.loop_id.as_str())), selection_error.is_some()))
                        }
                    }
                }
                }
            }
            fieldset class="nhsuk-fieldset" aria-describedby="bulk-hint" {
                legend class="nhsuk-fieldset__legend nhsuk-fieldset__legend--m" {
                    h2 class="nhsuk-fieldset__heading" { "Record one change for these loops" }
                }
                div class="nhsuk-hint" id="bulk-hint" {
                    "Tick the loops above that one change answers, then say what changed. It is recorded on every ticked loop, or on none if one of them cannot take it. At most "
                    (thousands(MAX_CHANGE_LOOPS as u64)) " loops at once."
                }
                @for field in CHANGE_FIELDS {
                    (steps::field_markup(&format!("bulk-{}", field.name), field, &value(field.name), field_error(field.name)))
                }
            }
            button class="nhsuk-button" type="submit" { "Record change for ticked loops" }
        }
    }
}

fn row<S>(
    state: &AppState<S>,
    index: usize,
    item: &LoopSummary,
    ticked: bool,
    error: bool,
) -> Markup {
    let place = state.site.place_name(item.org_unit.as_str());
    let received = day(item.received_at);
    let id = format!("select-{index}");
    markup! {
        tr class="nhsuk-table__row" {
            td class="nhsuk-table__cell" {
                div class="nhsuk-checkboxes nhsuk-checkboxes--small" {
                    div class="nhsuk-checkboxes__item" {
                        input class="nhsuk-checkboxes__input" id=(id) name="loop_id" type="checkbox"
                            value=(item.loop_id.as_str()) checked[ticked]
                            aria-describedby=[error.then_some("selection-error")];
                        label class="nhsuk-label nhsuk-checkboxes__label" for=(id) {
                            span class="nhsuk-u-visually-hidden" { "Feedback received " (received) ", " (place) }
                        }
                    }
                }
            }
            td class="nhsuk-table__cell" {
                a href={ "/staff/loops/" (item.loop_id.as_str()) } {
                    (received)
                    span class="nhsuk-u-visually-hidden" { ", " (place) }
                }
            }
            td class="nhsuk-table__cell" { (place) }
            td class="nhsuk-table__cell" {
                @if item.themes.is_empty() { "None" } @else { (shown(&item.themes.join(", "))) }
            }
            td class="nhsuk-table__cell" { (words::stage(item.stage)) }
            td class="nhsuk-table__cell" { (day(item.acknowledge_by)) }
            td class="nhsuk-table__cell" { (day(item.close_by)) }
            td class="nhsuk-table__cell" { (status_tag(item)) }
        }
    }
}

fn pagination(request: &QueueRequest, listing: &Listing) -> Markup {
    let next = listing
        .next
        .as_ref()
        .map(|cursor| request.link(&[("cursor", &cursor.encode())]));
    markup! {
        @if next.is_some() || request.cursor.is_some() {
            nav class="nhsuk-pagination" role="navigation" aria-label="Pagination" {
                ul class="nhsuk-list nhsuk-pagination__list" {
                    @if request.cursor.is_some() {
                        li class="nhsuk-pagination-item--previous" {
                            a class="nhsuk-pagination__link nhsuk-pagination__link--prev" href=(request.link(&[])) {
                                span class="nhsuk-pagination__title" { "First page" }
                            }
                        }
                    }
                    @if let Some(next) = &next {
                        li class="nhsuk-pagination-item--next" {
                            a class="nhsuk-pagination__link nhsuk-pagination__link--next" href=(next) rel="next" {
                                span class="nhsuk-pagination__title" { "Next page" }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_with_thousands_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn cursors_name_their_walk() {
        for cursor in [
            Cursor::Overdue("abc".into()),
            Cursor::Rest(None),
            Cursor::Rest(Some("xyz".into())),
            Cursor::Filtered("q".into()),
        ] {
            assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        }
        for bad in ["", "abc", "o.", "f.", "x.abc"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
