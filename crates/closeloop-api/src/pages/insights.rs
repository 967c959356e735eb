//! `GET /insights`: what patient leaders read about a place and a theme over the last few
//! months, in plain English — headline figures, every seldom-heard group against everyone
//! else, three charts with their tables, and the most frequent themes with example stories.
//!
//! The figures are the read models' [`Insights`], small numbers already withheld there; this
//! module only words and draws them. Stories are the public page's: consented, published,
//! redacted (and approved, when approval is required), from the same cache. No loop id,
//! public id, author or contact is ever on the page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use closeloop_domain::OrgUnit;
use closeloop_projections::{
    CLOSE_BIN_DAYS, Disclosed, Figures, GroupInsight, Headline, InsightChoices, Insights,
    InsightsQuery, MAX_NAME_BYTES, SUPPRESS_BELOW, ThemeInsight, whole_percent,
};
use closeloop_store::EventStore;
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use maud::{Markup, html};

use crate::AppState;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::pages::charts::{self, Bar, BarChart, LineChart, Point, Tone};
use crate::pages::session::SignedIn;
use crate::pages::{Frame, Section, Site, layout, shown};
use crate::reads;

/// The periods a leader may pick, in months; the first is the default.
const PERIODS: [u32; 3] = [12, 6, 3];
/// Stories shown beside each theme at most.
const STORIES_PER_THEME: usize = 3;
/// Longest story shown, in characters: the rest is on the public page.
const MAX_STORY_CHARS: usize = 600;

/// What the filter form asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filters {
    place: Option<OrgUnit>,
    theme: Option<String>,
    months: u32,
}

impl Filters {
    /// The form's fields; empty ones mean "all". Unknown parameters are ignored, as on every
    /// page.
    fn parse(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let given = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let place = given("place")
            .map(|raw| {
                OrgUnit::parse(raw).map_err(|err| {
                    ApiError::InvalidRequest(format!("place: {err}; pick a place from the list"))
                })
            })
            .transpose()?;
        let theme = given("theme")
            .map(|raw| {
                if raw.len() > MAX_NAME_BYTES {
                    Err(ApiError::InvalidRequest(format!(
                        "theme: a theme is at most {MAX_NAME_BYTES} bytes; pick one from the list"
                    )))
                } else {
                    Ok(raw.to_owned())
                }
            })
            .transpose()?;
        let months = match given("period") {
            None => PERIODS[0],
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|months| PERIODS.contains(months))
                .ok_or_else(|| {
                    ApiError::InvalidRequest("period: use 3, 6 or 12 (months)".to_owned())
                })?,
        };
        Ok(Self {
            place,
            theme,
            months,
        })
    }

    /// The query for these filters at `today`: the current month so far and the whole
    /// months before it, `months` in all.
    fn query(&self, today: Date, scope: Option<OrgUnit>) -> InsightsQuery {
        let first = today
            .first_of_month()
            .checked_sub(i64::from(self.months - 1).months())
            .unwrap_or(today);
        InsightsQuery {
            place: self.place.clone(),
            theme: self.theme.clone(),
            from: first,
            to: today.tomorrow().unwrap_or(today),
            scope,
        }
    }
}

/// `GET /insights` (leaders and admins): the page. A credential limited to an org unit sees
/// only its subtree.
pub(crate) async fn page<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    signed_in: Option<Extension<SignedIn>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let filters = Filters::parse(&params)?;
    reads::caught_up(&state).await?;
    let now = (state.clock)();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let query = filters.query(today, credential.org_unit.clone());
    // A walk over aggregates and open loops: off the async workers.
    let worker = Arc::clone(&state);
    let (insights, choices) = tokio::task::spawn_blocking(move || {
        reads::models(&worker).map(|models| {
            (
                models.insights(&query, now, &worker.sla),
                models.insight_choices(&query, &worker.sla),
            )
        })
    })
    .await
    .map_err(|err| ApiError::Internal(format!("insights did not finish: {err}")))??;
    let mut stories = Vec::with_capacity(insights.themes.len());
    for theme in &insights.themes {
        stories.push(theme_stories(&state, theme).await?);
    }
    let view = View {
        site: &state.site,
        filters: &filters,
        scope: credential.org_unit.as_ref(),
        insights: &insights,
        choices: &choices,
        stories: &stories,
        now,
        sla: &state.sla,
        signed_in: signed_in
            .as_ref()
            .map(|Extension(signed_in)| (credential.actor().to_owned(), &*signed_in.csrf)),
    };
    let mut response = crate::pages::html(view.render());
    // Figures for staff eyes: not for shared caches.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Up to [`STORIES_PER_THEME`] stories of a theme's examples, redacted, as the public page
/// shows them; examples without a story to show are passed over.
async fn theme_stories<S: EventStore>(
    state: &AppState<S>,
    theme: &ThemeInsight,
) -> Result<Vec<Arc<str>>, ApiError> {
    let mut stories = Vec::new();
    for example in &theme.examples {
        if stories.len() == STORIES_PER_THEME {
            break;
        }
        let story = reads::public_story(state, &example.key, &example.loop_id).await?;
        if !story.trim().is_empty() {
            stories.push(story);
        }
    }
    Ok(stories)
}

/// How a seldom-heard group is named in a sentence: "people who are homeless". A tag
/// without a name of its own is named by its words: `rough_sleepers` → "people in the group
/// ‘rough sleepers’".
#[must_use]
pub fn group_name(tag: &str) -> String {
    let known = match tag {
        "homeless" => "people who are homeless",
        "gypsy_roma_traveller" => "Gypsy, Roma and Traveller communities",
        "asylum_seeker" => "people seeking asylum",
        "refugee" => "refugees",
        "learning_disability" => "people with a learning disability",
        "deaf_bsl" => "Deaf people who use British Sign Language",
        "young_carer" => "young carers",
        "carers" | "carer" => "carers",
        "veteran" | "veterans" => "veterans",
        "sex_worker" => "people who do sex work",
        "prison_leaver" => "people who have left prison",
        "no_fixed_abode" => "people with no fixed address",
        _ => return format!("people in the group ‘{}’", tag.replace(['_', '-'], " ")),
    };
    known.to_owned()
}

/// The same name to start a label or a sentence with.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// A number of working days: whole, or with its half.
fn days(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// "1 working day", "2.5 working days".
fn working_days(value: f64) -> String {
    let unit = if value == 1.0 {
        "working day"
    } else {
        "working days"
    };
    format!("{} {unit}", days(value))
}

/// The sentence comparing a group with everyone else, e.g. "Feedback from people who are
/// homeless: 38% closed against 71% for everyone else (33 percentage points lower), 12 more
/// working days to close (a median of 14 against 2)."
#[must_use]
pub fn group_sentence(group: &GroupInsight) -> String {
    let name = group_name(&group.tag);
    let Disclosed::Shown(comparison) = &group.comparison else {
        return format!(
            "Feedback from {name}: fewer than {SUPPRESS_BELOW} pieces of feedback to compare, so no figures are shown."
        );
    };
    let points = comparison.closure_gap_points;
    let closure = match points {
        0 => "the same rate".to_owned(),
        1 | -1 => format!(
            "1 percentage point {}",
            if points < 0 { "lower" } else { "higher" }
        ),
        _ => format!(
            "{} percentage points {}",
            points.abs(),
            if points < 0 { "lower" } else { "higher" }
        ),
    };
    let close = match (
        comparison.close_gap_days,
        comparison.group.median_days_to_close,
        comparison.everyone_else.median_days_to_close,
    ) {
        (Some(gap), Some(group_days), Some(rest_days)) => {
            let unit = if gap.abs() == 1.0 {
                "working day"
            } else {
                "working days"
            };
            let gap_words = if gap == 0.0 {
                "the same time to close".to_owned()
            } else if gap > 0.0 {
                format!("{} more {unit} to close", days(gap))
            } else {
                format!("{} fewer {unit} to close", days(-gap))
            };
            format!(
                "{gap_words} (a median of {} against {})",
                days(group_days),
                days(rest_days)
            )
        }
        _ => "no closed loops on both sides to compare time to close".to_owned(),
    };
    format!(
        "Feedback from {name}: {}% closed against {}% for everyone else ({closure}), {close}.",
        whole_percent(comparison.group.closure_rate),
        whole_percent(comparison.everyone_else.closure_rate),
    )
}

/// A count with its noun: "1 piece of feedback", "12 pieces of feedback".
fn feedback(count: u64) -> String {
    if count == 1 {
        "1 piece of feedback".to_owned()
    } else {
        format!("{count} pieces of feedback")
    }
}

/// A date as people write it: "1 November 2026".
fn long_date(date: Date) -> String {
    date.strftime("%-d %B %Y").to_string()
}

/// A month as the charts label it: "Nov 2026".
fn month_label(month: Date) -> String {
    month.strftime("%b %Y").to_string()
}

/// A story cut to [`MAX_STORY_CHARS`] characters.
fn excerpt(story: &str) -> String {
    let story = story.trim();
    if story.chars().count() <= MAX_STORY_CHARS {
        story.to_owned()
    } else {
        let cut: String = story.chars().take(MAX_STORY_CHARS).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Everything one rendering of the page needs.
struct View<'a> {
    site: &'a Site,
    filters: &'a Filters,
    scope: Option<&'a OrgUnit>,
    insights: &'a Insights,
    choices: &'a InsightChoices,
    /// The stories to show beside each of `insights.themes`, in order.
    stories: &'a [Vec<Arc<str>>],
    now: Timestamp,
    /// The due dates in force.
    sla: &'a closeloop_domain::Sla,
    /// Who is signed in and their session's CSRF token (for the sign-out form), when the page
    /// was asked for with a session rather than a token.
    signed_in: Option<(String, &'a str)>,
}

impl View<'_> {
    /// Where the figures are for, in words.
    fn place_name(&self) -> String {
        match &self.insights.place {
            Some(place) => self.site.place_name(place.as_str()),
            None => "Everywhere".to_owned(),
        }
    }

    fn render(&self) -> Markup {
        let place = self.place_name();
        let title = format!("Insights – {place}");
        let last_day = self.insights.to.yesterday().unwrap_or(self.insights.to);
        let body = html! {
            h1 class="nhsuk-heading-l" {
                span class="nhsuk-caption-l" { "Insights" }
                (place)
                @if let Some(theme) = &self.insights.theme { ": " (shown(theme)) }
            }
            p class="nhsuk-body-l" {
                "Feedback received from " (long_date(self.insights.from)) " to " (long_date(last_day)) ", as it stood at "
                (self.now.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M UTC on %-d %B %Y").to_string()) "."
            }
            (self.form())
            (self.headline())
            (self.groups())
            (self.close_chart())
            (self.fft_chart())
            (self.themes())
            (self.about())
        };
        layout(
            self.site,
            &Frame {
                title: &title,
                section: Section::Insights,
                signed_in: self.signed_in.as_ref().map(|(actor, _)| actor.as_str()),
                csrf: self.signed_in.as_ref().map(|(_, csrf)| *csrf),
                head: None,
            },
            &body,
        )
    }

    fn form(&self) -> Markup {
        let everywhere = match self.scope {
            Some(scope) => format!("All of {}", self.site.place_name(scope.as_str())),
            None => "Everywhere".to_owned(),
        };
        let chosen_place = self.filters.place.as_ref().map(OrgUnit::as_str);
        // The place asked for stays in the list even when the list does not offer it.
        let extra_place =
            chosen_place.filter(|p| !self.choices.places.iter().any(|c| c.as_str() == *p));
        let chosen_theme = self.filters.theme.as_deref();
        // The theme asked for stays in the list even when it has no loops in the period.
        let extra_theme = chosen_theme.filter(|t| !self.choices.themes.iter().any(|c| c == t));
        html! {
            form method="get" action="/insights" class="nhsuk-u-margin-bottom-6" {
                div class="nhsuk-grid-row" {
                    div class="nhsuk-grid-column-one-third" {
                        div class="nhsuk-form-group" {
                            label class="nhsuk-label" for="place" { "Place" }
                            select class="nhsuk-select" id="place" name="place" {
                                option value="" selected[chosen_place.is_none()] { (everywhere) }
                                @if let Some(place) = extra_place {
                                    option value=(place) selected { (self.site.place_name(place)) }
                                }
                                @for place in &self.choices.places {
                                    option value=(place.as_str()) selected[chosen_place == Some(place.as_str())] {
                                        (self.site.place_name(place.as_str()))
                                    }
                                }
                            }
                        }
                    }
                    div class="nhsuk-grid-column-one-third" {
                        div class="nhsuk-form-group" {
                            label class="nhsuk-label" for="theme" { "Theme" }
                            select class="nhsuk-select" id="theme" name="theme" {
                                option value="" selected[chosen_theme.is_none()] { "Every theme" }
                                @if let Some(theme) = extra_theme {
                                    option value=(theme) selected { (shown(theme)) }
                                }
                                @for theme in &self.choices.themes {
                                    option value=(theme) selected[chosen_theme == Some(theme.as_str())] { (shown(theme)) }
                                }
                            }
                        }
                    }
                    div class="nhsuk-grid-column-one-third" {
                        div class="nhsuk-form-group" {
                            label class="nhsuk-label" for="period" { "Period" }
                            select class="nhsuk-select" id="period" name="period" {
                                @for months in PERIODS {
                                    option value=(months) selected[self.filters.months == months] { "Last " (months) " months" }
                                }
                            }
                        }
                    }
                }
                button class="nhsuk-button nhsuk-u-margin-bottom-0" type="submit" { "Show insights" }
            }
        }
    }

    fn headline(&self) -> Markup {
        html! {
            h2 class="nhsuk-heading-m" { "At a glance" }
            @match &self.insights.headline {
                Disclosed::Suppressed => {
                    div class="nhsuk-inset-text" {
                        span class="nhsuk-u-visually-hidden" { "Information: " }
                        p { "Fewer than " (SUPPRESS_BELOW) " pieces of feedback were received here in this period, so no figures are shown. Try a longer period or a larger place." }
                    }
                }
                Disclosed::Shown(headline) => { (summary_list(headline)) }
            }
        }
    }

    fn groups(&self) -> Markup {
        let insights = self.insights;
        let shown_groups: Vec<(&GroupInsight, &Figures)> = insights
            .groups
            .iter()
            .filter_map(|g| g.comparison.shown().map(|c| (g, &c.group)))
            .collect();
        html! {
            h2 class="nhsuk-heading-m" { "Seldom-heard groups" }
            @if insights.groups.is_empty() {
                p { "No feedback in this selection came from a seldom-heard group." }
            } @else {
                p { "How often feedback from each group was closed, and how long it took, against everyone else in this selection. Time is the median of whole working days from receiving the feedback to telling the person what changed." }
                ul class="nhsuk-list nhsuk-list--bullet" {
                    @for group in &insights.groups {
                        li { (group_sentence(group)) }
                    }
                }
                @if insights.more_groups > 0 {
                    p { (insights.more_groups) " smaller groups are not listed." }
                }
                @if let (false, Some(all)) = (shown_groups.is_empty(), insights.headline.shown()) {
                    (column(charts::bar_chart(&closure_chart(&all.figures, &shown_groups))))
                    @if shown_groups.len() < insights.groups.len() {
                        p class="nhsuk-body-s" { "Groups with fewer than " (SUPPRESS_BELOW) " pieces of feedback to compare are not drawn." }
                    }
                }
            }
        }
    }

    fn close_chart(&self) -> Markup {
        let Some(headline) = self.insights.headline.shown() else {
            return html! {};
        };
        let figures = &headline.figures;
        html! {
            h2 class="nhsuk-heading-m" { "How long closing took" }
            @if figures.closed == 0 {
                p { "None of this feedback has been closed yet." }
            } @else {
                (column(charts::bar_chart(&close_chart(self.insights, figures))))
            }
        }
    }

    fn fft_chart(&self) -> Markup {
        let months = &self.insights.fft_by_month;
        let shown_months: Vec<(Date, f64)> = months
            .iter()
            .filter_map(|m| m.percent_positive.shown().map(|&p| (m.month, p)))
            .collect();
        let summary = match (shown_months.first(), shown_months.last()) {
            (Some(first), Some(last)) if shown_months.len() > 1 => format!(
                "Good or very good answers to the Friends and Family Test went from {}% in {} to {}% in {}.",
                first.1,
                month_label(first.0),
                last.1,
                month_label(last.0)
            ),
            (Some(only), _) => format!(
                "{}% of answers to the Friends and Family Test were good or very good in {}, the only month with {SUPPRESS_BELOW} or more answers.",
                only.1,
                month_label(only.0)
            ),
            _ => format!(
                "No month had {SUPPRESS_BELOW} or more answers to the Friends and Family Test."
            ),
        };
        let chart = LineChart {
            caption: "Friends and Family Test: good or very good answers, by month".to_owned(),
            summary,
            label_heading: "Month".to_owned(),
            value_heading: "Good or very good".to_owned(),
            points: months
                .iter()
                .map(|m| Point {
                    label: month_label(m.month),
                    value: m.percent_positive.shown().copied(),
                    shown: match m.percent_positive.shown() {
                        Some(percent) => format!("{percent}% of {} answers", m.answers),
                        None => format!("fewer than {SUPPRESS_BELOW} answers"),
                    },
                })
                .collect(),
        };
        html! {
            h2 class="nhsuk-heading-m" { "Friends and Family Test" }
            @if shown_months.is_empty() {
                p { (chart.summary) }
            } @else {
                (column(charts::line_chart(&chart)))
            }
        }
    }

    fn themes(&self) -> Markup {
        let themes = &self.insights.themes;
        html! {
            h2 class="nhsuk-heading-m" {
                @if self.insights.theme.is_some() { "The theme" } @else { "Most frequent themes" }
            }
            @if themes.is_empty() {
                p { "No feedback in this selection has a theme." }
            }
            @for (theme, stories) in themes.iter().zip(self.stories) {
                h3 class="nhsuk-heading-s" { (capitalised(&shown(&theme.theme))) }
                @match &theme.figures {
                    Disclosed::Suppressed => p { "Fewer than " (SUPPRESS_BELOW) " pieces of feedback, so no figures are shown." },
                    Disclosed::Shown(headline) => p { (theme_sentence(headline)) },
                }
                @if stories.is_empty() {
                    p class="nhsuk-u-secondary-text-colour" { "No story about this theme has been published yet." }
                } @else {
                    p { "What people said (as published on “You said, we did”):" }
                    @for story in stories {
                        div class="nhsuk-inset-text" {
                            span class="nhsuk-u-visually-hidden" { "A story: " }
                            p { (shown(&excerpt(story))) }
                        }
                    }
                }
            }
        }
    }

    fn about(&self) -> Markup {
        html! {
            h2 class="nhsuk-heading-m" { "About these figures" }
            ul class="nhsuk-list nhsuk-list--bullet" {
                li { "Feedback counts in the month it was received. Closed means the person was told what changed, or why nothing could." }
                li { "Working days are Monday to Friday. Times are whole working days: feedback closed after 2 and a half working days took 2." }
                li {
                    "Overdue means open and past a due date it has not met: the person is to hear back within "
                    (working_days(f64::from(self.sla.acknowledge_days))) " of the feedback being received, and it is to be closed within "
                    (working_days(f64::from(self.sla.close_days))) " (counted again from a reopening)."
                }
                li { "Figures drawn from fewer than " (SUPPRESS_BELOW) " pieces of feedback are not shown, as NHS statistics do, so that no one can be recognised from them." }
                li { "Stories are the ones people agreed to publish, with names, e-mail addresses and phone numbers taken out." }
            }
        }
    }
}

/// A chart in a column two thirds wide on larger screens, so that its text stays near the
/// size of the page's.
fn column(chart: Markup) -> Markup {
    html! {
        div class="nhsuk-grid-row" {
            div class="nhsuk-grid-column-two-thirds" { (chart) }
        }
    }
}

/// The headline figures as an NHS summary list.
fn summary_list(headline: &Headline) -> Markup {
    let f = &headline.figures;
    let rows: Vec<(&str, String)> = vec![
        ("Feedback received", f.received.to_string()),
        (
            "Heard back",
            format!(
                "{} ({}%)",
                f.acknowledged,
                whole_percent(ratio(f.acknowledged, f.received))
            ),
        ),
        (
            "Closed",
            format!("{} ({}%)", f.closed, whole_percent(f.closure_rate)),
        ),
        (
            "Time to hear back",
            f.median_days_to_acknowledge.map_or_else(
                || "No one heard back yet".to_owned(),
                |d| format!("median {}", working_days(d)),
            ),
        ),
        (
            "Time to close",
            f.median_days_to_close.map_or_else(
                || "None closed yet".to_owned(),
                |d| format!("median {}", working_days(d)),
            ),
        ),
        ("Open now", headline.open.to_string()),
        ("Overdue now", headline.overdue.to_string()),
        (
            "Friends and Family Test",
            f.fft.as_ref().map_or_else(
                || "No answers".to_owned(),
                |fft| {
                    format!(
                        "{}% good or very good, {}% poor or very poor, of {} answers",
                        fft.percent_positive, fft.percent_negative, fft.answers
                    )
                },
            ),
        ),
    ];
    html! {
        dl class="nhsuk-summary-list" {
            @for (key, value) in rows {
                div class="nhsuk-summary-list__row" {
                    dt class="nhsuk-summary-list__key" { (key) }
                    dd class="nhsuk-summary-list__value" { (value) }
                }
            }
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
        let ratio = part as f64 / whole as f64;
        ratio
    }
}

/// A theme's figures in a sentence.
fn theme_sentence(headline: &Headline) -> String {
    let f = &headline.figures;
    let close = f.median_days_to_close.map_or_else(String::new, |d| {
        format!(", a median of {} to close", working_days(d))
    });
    format!(
        "{}: {}% closed{close}; {} open, {} of them overdue.",
        capitalised(&feedback(f.received)),
        whole_percent(f.closure_rate),
        headline.open,
        headline.overdue
    )
}

/// Closure rates: everything first (as the reference), then each group shown.
fn closure_chart(all: &Figures, groups: &[(&GroupInsight, &Figures)]) -> BarChart {
    let bar = |label: String, figures: &Figures, tone| Bar {
        label,
        value: figures.closure_rate * 100.0,
        shown: format!("{}% closed", whole_percent(figures.closure_rate)),
        tone,
    };
    let mut bars = vec![bar("All feedback here".to_owned(), all, Tone::Reference)];
    bars.extend(
        groups
            .iter()
            .map(|(group, figures)| bar(capitalised(&group_name(&group.tag)), figures, Tone::Data)),
    );
    let by_rate = |a: &&(&GroupInsight, &Figures), b: &&(&GroupInsight, &Figures)| {
        a.1.closure_rate.total_cmp(&b.1.closure_rate)
    };
    let (highest, lowest) = (groups.iter().max_by(by_rate), groups.iter().min_by(by_rate));
    let summary = match (highest, lowest) {
        (Some(high), Some(low)) if groups.len() > 1 => format!(
            "{}% of all feedback here was closed. Of the seldom-heard groups, feedback from {} was closed most often ({}%) and from {} least often ({}%).",
            whole_percent(all.closure_rate),
            group_name(&high.0.tag),
            whole_percent(high.1.closure_rate),
            group_name(&low.0.tag),
            whole_percent(low.1.closure_rate),
        ),
        (Some(only), _) => format!(
            "{}% of all feedback here was closed, and {}% of feedback from {}.",
            whole_percent(all.closure_rate),
            whole_percent(only.1.closure_rate),
            group_name(&only.0.tag),
        ),
        _ => format!(
            "{}% of all feedback here was closed.",
            whole_percent(all.closure_rate)
        ),
    };
    BarChart {
        caption: "Feedback closed, by seldom-heard group".to_owned(),
        summary,
        max: 100.0,
        label_heading: "Group".to_owned(),
        value_heading: "Closed".to_owned(),
        bars,
    }
}

/// The time-to-close distribution, in working weeks.
fn close_chart(insights: &Insights, figures: &Figures) -> BarChart {
    let largest = insights
        .close_days
        .iter()
        .map(|bin| bin.loops)
        .max()
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    let as_f64 = |n: u64| n as f64;
    let within_week = insights.close_days.first().map_or(0, |bin| bin.loops);
    BarChart {
        caption: "Time to close, in whole working days".to_owned(),
        summary: format!(
            "Of {} closed, {} were closed within {CLOSE_BIN_DAYS} working days; the median was {}.",
            feedback(figures.closed),
            within_week,
            figures
                .median_days_to_close
                .map_or_else(String::new, working_days)
        ),
        max: as_f64(largest.max(1)),
        label_heading: "Working days to close".to_owned(),
        value_heading: "Closed".to_owned(),
        bars: insights
            .close_days
            .iter()
            .map(|bin| Bar {
                label: match bin.to_days {
                    Some(to) => format!("{} to {to} working days", bin.from_days),
                    None => format!("{} or more working days", bin.from_days),
                },
                value: as_f64(bin.loops),
                shown: bin.loops.to_string(),
                tone: Tone::Data,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeloop_projections::Comparison;

    fn figures(received: u64, closed: u64, median: Option<f64>) -> Figures {
        Figures {
            received,
            acknowledged: closed,
            closed,
            closure_rate: closed as f64 / received as f64,
            median_days_to_acknowledge: median,
            median_days_to_close: median,
            fft: None,
        }
    }

    fn group(tag: &str, group: Figures, rest: Figures) -> GroupInsight {
        GroupInsight {
            tag: tag.to_owned(),
            comparison: Disclosed::Shown(Comparison {
                closure_gap_points: whole_percent(group.closure_rate)
                    - whole_percent(rest.closure_rate),
                close_gap_days: group
                    .median_days_to_close
                    .zip(rest.median_days_to_close)
                    .map(|(g, r)| g - r),
                group,
                everyone_else: rest,
            }),
        }
    }

    #[test]
    fn a_group_is_compared_in_words_with_the_gaps_in_points_and_working_days() {
        let homeless = group(
            "homeless",
            figures(13, 5, Some(14.0)),
            figures(21, 15, Some(2.0)),
        );
        assert_eq!(
            group_sentence(&homeless),
            "Feedback from people who are homeless: 38% closed against 71% for everyone else (33 percentage points lower), 12 more working days to close (a median of 14 against 2)."
        );
        let travellers = group(
            "gypsy_roma_traveller",
            figures(20, 15, Some(3.0)),
            figures(20, 14, Some(4.5)),
        );
        assert_eq!(
            group_sentence(&travellers),
            "Feedback from Gypsy, Roma and Traveller communities: 75% closed against 70% for everyone else (5 percentage points higher), 1.5 fewer working days to close (a median of 3 against 4.5)."
        );
        let none_closed = group(
            "rough_sleepers",
            figures(10, 0, None),
            figures(30, 29, Some(1.0)),
        );
        assert_eq!(
            group_sentence(&none_closed),
            "Feedback from people in the group ‘rough sleepers’: 0% closed against 97% for everyone else (97 percentage points lower), no closed loops on both sides to compare time to close."
        );
        let few = GroupInsight {
            tag: "deaf_bsl".to_owned(),
            comparison: Disclosed::Suppressed,
        };
        assert_eq!(
            group_sentence(&few),
            "Feedback from Deaf people who use British Sign Language: fewer than 10 pieces of feedback to compare, so no figures are shown."
        );
    }

    #[test]
    fn the_period_is_the_current_month_and_the_whole_months_before_it() {
        let filters = Filters {
            place: None,
            theme: None,
            months: 3,
        };
        let query = filters.query("2026-11-09".parse().unwrap(), None);
        assert_eq!(query.from, "2026-09-01".parse::<Date>().unwrap());
        assert_eq!(query.to, "2026-11-10".parse::<Date>().unwrap());
    }

    #[test]
    fn filters_are_bounded_where_they_are_read() {
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let defaults = Filters::parse(&params(&[("place", ""), ("utm_source", "x")])).unwrap();
        assert_eq!(
            defaults,
            Filters {
                place: None,
                theme: None,
                months: 12
            }
        );
        assert!(Filters::parse(&params(&[("period", "7")])).is_err());
        assert!(Filters::parse(&params(&[("place", "a//b")])).is_err());
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(Filters::parse(&params(&[("theme", &long)])).is_err());
    }
}
