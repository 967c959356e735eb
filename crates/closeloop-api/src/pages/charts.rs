//! Charts as inline SVG, drawn on the server: no script, no stylesheet of their own, nothing
//! loaded from elsewhere.
//!
//! Each chart is a `<figure>` with a `<figcaption>`, an `<svg role="img">` whose `aria-label`
//! and `<title>` say in a sentence what it shows, and the same figures as a table in an NHS
//! "details" component, so that nothing is only a picture. Drawing uses presentation
//! attributes only (`fill`, `font-size`, …), which the pages' Content-Security-Policy allows
//! where it forbids `style`. The SVG scales to the width of its column (`viewBox`,
//! `width="100%"`), and its text is sized to stay readable on a 390-pixel-wide phone.
//!
//! Colours are the NHS palette's: NHS Blue for data, NHS Dark Grey for reference bars, NHS
//! Black for text (all at least 6:1 against white) and NHS Mid Grey for axes (3.7:1). Every
//! bar and point carries its value as text, so no meaning rests on colour.
//!
//! Charts are bounded: a bar chart draws at most [`MAX_BARS`] bars and a line chart at most
//! [`MAX_POINTS`] points; what is left over is said in the caption and listed in the table.

use maud::{Markup, html};

/// The most bars a bar chart draws.
pub const MAX_BARS: usize = 30;
/// The most points a line chart draws (the last ones: two years of months).
pub const MAX_POINTS: usize = 24;

/// NHS Blue: the data.
const BLUE: &str = "#005eb8";
/// NHS Dark Grey: reference values.
const DARK_GREY: &str = "#425563";
/// NHS Black: text.
const TEXT: &str = "#212b32";
/// NHS Mid Grey: axes and grid lines.
const MID_GREY: &str = "#768692";

/// The width of every chart's drawing, in SVG units. Text of [`FONT`] units is then about
/// 12 pixels high on a 390-pixel-wide screen, and grows with wider columns.
const WIDTH: f64 = 400.0;
/// The size of text in SVG units.
const FONT: f64 = 13.0;
/// Longest label drawn, in characters; the table holds it whole.
const MAX_LABEL_CHARS: usize = 52;

/// How a bar is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// The figure the chart is about.
    Data,
    /// A figure to compare with, e.g. "All feedback".
    Reference,
}

/// One bar: a label, a value on the chart's scale, and the value as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// What the bar is, e.g. "People who are homeless".
    pub label: String,
    /// Its length on the scale from 0 to the chart's `max`.
    pub value: f64,
    /// Its value as people read it, e.g. "38%"; drawn beside the bar and put in the table.
    pub shown: String,
    /// How it is drawn.
    pub tone: Tone,
}

/// A chart of horizontal bars, one under the other, each labelled above.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// What the chart shows, as its caption.
    pub caption: String,
    /// What it shows in a sentence or two, for people who cannot see it.
    pub summary: String,
    /// The end of the scale (100 for percentages); bars longer than this are drawn to it.
    pub max: f64,
    /// The table's heading over the labels, e.g. "Group".
    pub label_heading: String,
    /// The table's heading over the values, e.g. "Closed".
    pub value_heading: String,
    /// The bars, top first.
    pub bars: Vec<Bar>,
}

/// One point of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Its place on the horizontal axis, e.g. "Nov 2026".
    pub label: String,
    /// Its value on the scale 0 to 100; `None` leaves a gap (no figure to show).
    pub value: Option<f64>,
    /// Its value as people read it, e.g. "83.5%" or "fewer than 10 answers".
    pub shown: String,
}

/// A line chart of percentages (0 to 100) over a sequence, e.g. months.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// What the chart shows, as its caption.
    pub caption: String,
    /// What it shows in a sentence or two, for people who cannot see it.
    pub summary: String,
    /// The table's heading over the labels, e.g. "Month".
    pub label_heading: String,
    /// The table's heading over the values.
    pub value_heading: String,
    /// The points, left to right.
    pub points: Vec<Point>,
}

/// A number for an SVG attribute: one decimal is finer than a pixel.
fn n(value: f64) -> String {
    format!("{value:.1}")
}

/// A label cut to [`MAX_LABEL_CHARS`] characters with an ellipsis.
fn short(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    }
}

/// The same figures as a table, in a "details" the reader opens.
fn table(caption: &str, headings: [&str; 2], rows: &[(&str, &str)]) -> Markup {
    html! {
        details class="nhsuk-details" {
            summary class="nhsuk-details__summary" {
                span class="nhsuk-details__summary-text" { "Show the figures as a table" }
            }
            div class="nhsuk-details__text" {
                table class="nhsuk-table" {
                    caption class="nhsuk-table__caption nhsuk-u-visually-hidden" { (caption) }
                    thead class="nhsuk-table__head" {
                        tr class="nhsuk-table__row" {
                            th class="nhsuk-table__header" scope="col" { (headings[0]) }
                            th class="nhsuk-table__header" scope="col" { (headings[1]) }
                        }
                    }
                    tbody class="nhsuk-table__body" {
                        @for (label, value) in rows {
                            tr class="nhsuk-table__row" {
                                th class="nhsuk-table__header" scope="row" { (label) }
                                td class="nhsuk-table__cell" { (value) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A bar chart (see [`BarChart`]).
#[must_use]
pub fn bar_chart(chart: &BarChart) -> Markup {
    const ROW: f64 = 42.0;
    const BAR: f64 = 16.0;
    // Room at the right of the longest bar for its value.
    const VALUE_ROOM: f64 = 110.0;
    let drawn = &chart.bars[..chart.bars.len().min(MAX_BARS)];
    let left_over = chart.bars.len() - drawn.len();
    let height = ROW * drawn.len().max(1) as f64 + 8.0;
    let scale = (WIDTH - VALUE_ROOM) / if chart.max > 0.0 { chart.max } else { 1.0 };
    let rows: Vec<(&str, &str)> = chart
        .bars
        .iter()
        .map(|bar| (bar.label.as_str(), bar.shown.as_str()))
        .collect();
    html! {
        figure class="nhsuk-u-margin-left-0 nhsuk-u-margin-right-0 nhsuk-u-margin-bottom-6" {
            figcaption class="nhsuk-heading-xs nhsuk-u-margin-bottom-2" {
                (chart.caption)
                @if left_over > 0 { " (the first " (drawn.len()) "; " (left_over) " more are in the table)" }
            }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (n(WIDTH)) " " (n(height)) } width="100%" role="img" aria-label=(chart.summary) focusable="false" {
                title { (chart.summary) }
                line x1="0.5" y1="0" x2="0.5" y2=(n(height)) stroke=(MID_GREY) stroke-width="1" {}
                @for (i, bar) in drawn.iter().enumerate() {
                    @let top = ROW * i as f64;
                    @let length = (bar.value.clamp(0.0, chart.max.max(0.0)) * scale).max(if bar.value > 0.0 { 2.0 } else { 0.0 });
                    @let fill = match bar.tone { Tone::Data => BLUE, Tone::Reference => DARK_GREY };
                    g {
                        title { (bar.label) ": " (bar.shown) }
                        text x="4" y=(n(top + FONT + 2.0)) font-size=(n(FONT)) fill=(TEXT) { (short(&bar.label)) }
                        rect x="1" y=(n(top + FONT + 8.0)) width=(n(length)) height=(n(BAR)) fill=(fill) {}
                        text x=(n(length + 8.0)) y=(n(top + FONT + 8.0 + BAR - 3.0)) font-size=(n(FONT)) fill=(TEXT) font-weight="bold" { (bar.shown) }
                    }
                }
            }
            (table(&chart.caption, [&chart.label_heading, &chart.value_heading], &rows))
        }
    }
}

/// A line chart (see [`LineChart`]).
#[must_use]
pub fn line_chart(chart: &LineChart) -> Markup {
    const HEIGHT: f64 = 240.0;
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 30.0;
    // Half the width of an axis label such as "2026", which stays inside the drawing.
    const HALF_LABEL: f64 = 16.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 50.0;
    let drawn = &chart.points[chart.points.len().saturating_sub(MAX_POINTS)..];
    let left_over = chart.points.len() - drawn.len();
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| {
        if drawn.len() <= 1 {
            LEFT + plot_width / 2.0
        } else {
            LEFT + plot_width * i as f64 / (drawn.len() - 1) as f64
        }
    };
    let y = |value: f64| TOP + plot_height * (1.0 - value.clamp(0.0, 100.0) / 100.0);
    // Runs of consecutive points with values, each drawn as one line; a point without a
    // value breaks the line.
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    for (i, point) in drawn.iter().enumerate() {
        match point.value {
            Some(value) => {
                if !run.is_empty() {
                    run.push(' ');
                }
                run.push_str(&format!("{},{}", n(x(i)), n(y(value))));
            }
            None => {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    // A point on its own is drawn by its circle alone.
    runs.retain(|run| run.contains(' '));
    // At most six labels along the axis, counted back from the last point, so that they
    // never overlap and the latest is always named.
    let every = drawn.len().div_ceil(6).max(1);
    let labelled = |i: usize| (drawn.len() - 1 - i).is_multiple_of(every);
    // Axis labels on two lines, split at their last space ("Nov" over "2026"); a second line
    // that repeats the one of the label before is left out.
    let mut previous: Option<&str> = None;
    let ticks: Vec<(String, Option<&str>)> = drawn
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let label = point.label.as_str();
            let (first, second) = label.rsplit_once(' ').unwrap_or((label, ""));
            if !labelled(i) {
                return (String::new(), None);
            }
            let repeated = previous == Some(second) || second.is_empty();
            previous = Some(second);
            (short(first), (!repeated).then_some(second))
        })
        .collect();
    let rows: Vec<(&str, &str)> = chart
        .points
        .iter()
        .map(|point| (point.label.as_str(), point.shown.as_str()))
        .collect();
    html! {
        figure class="nhsuk-u-margin-left-0 nhsuk-u-margin-right-0 nhsuk-u-margin-bottom-6" {
            figcaption class="nhsuk-heading-xs nhsuk-u-margin-bottom-2" {
                (chart.caption)
                @if left_over > 0 { " (the last " (drawn.len()) "; " (left_over) " earlier are in the table)" }
            }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (n(WIDTH)) " " (n(HEIGHT)) } width="100%" role="img" aria-label=(chart.summary) focusable="false" {
                title { (chart.summary) }
                @for percent in [0.0, 25.0, 50.0, 75.0, 100.0] {
                    line x1=(n(LEFT)) y1=(n(y(percent))) x2=(n(WIDTH - RIGHT)) y2=(n(y(percent))) stroke=(MID_GREY) stroke-width=(if percent == 0.0 { "1.5" } else { "0.5" }) {}
                    text x=(n(LEFT - 6.0)) y=(n(y(percent) + FONT / 3.0)) font-size=(n(FONT)) fill=(TEXT) text-anchor="end" { (percent) "%" }
                }
                @for points in &runs {
                    polyline points=(points) fill="none" stroke=(BLUE) stroke-width="2.5" {}
                }
                @for (i, point) in drawn.iter().enumerate() {
                    @if let Some(value) = point.value {
                        circle cx=(n(x(i))) cy=(n(y(value))) r="4" fill=(BLUE) {
                            title { (point.label) ": " (point.shown) }
                        }
                    }
                    @if labelled(i) {
                        @let (first, second) = &ticks[i];
                        @let at = n(x(i).clamp(HALF_LABEL, WIDTH - HALF_LABEL));
                        text x=(at) y=(n(HEIGHT - BOTTOM + FONT + 6.0)) font-size=(n(FONT)) fill=(TEXT) text-anchor="middle" { (first) }
                        @if let Some(second) = second {
                            text x=(at) y=(n(HEIGHT - BOTTOM + 2.0 * FONT + 9.0)) font-size=(n(FONT)) fill=(TEXT) text-anchor="middle" { (second) }
                        }
                    }
                }
                // The latest value, written beside its point.
                @if let Some((i, value)) = drawn.iter().enumerate().rev().find_map(|(i, p)| p.value.map(|v| (i, v))) {
                    text x=(n(x(i) - 6.0)) y=(n((y(value) - 10.0).max(FONT))) font-size=(n(FONT)) fill=(TEXT) font-weight="bold" text-anchor="end" { (value) "%" }
                }
            }
            (table(&chart.caption, [&chart.label_heading, &chart.value_heading], &rows))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(count: usize) -> BarChart {
        BarChart {
            caption: "Closed, by group".to_owned(),
            summary: "Closure rates by group.".to_owned(),
            max: 100.0,
            label_heading: "Group".to_owned(),
            value_heading: "Closed".to_owned(),
            bars: (0..count)
                .map(|i| Bar {
                    label: format!("Group {i}"),
                    value: (i * 7 % 101) as f64,
                    shown: format!("{}%", i * 7 % 101),
                    tone: if i == 0 { Tone::Reference } else { Tone::Data },
                })
                .collect(),
        }
    }

    /// Checks that every element of `markup` is closed, in order: the charts write every
    /// element with an end tag, so a stack of names is all it takes. Returns the names of the
    /// elements, in document order.
    fn well_formed(markup: &str) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = markup;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("every tag ends") + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "in {markup}");
            } else {
                let name = tag.split_whitespace().next().expect("a name").to_owned();
                names.push(name.clone());
                open.push(name);
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed {open:?}");
        names
    }

    /// The parts of `page` between `start` and the next `end`, in order.
    fn between<'a>(page: &'a str, start: &str, end: &str) -> Vec<&'a str> {
        page.split(start)
            .skip(1)
            .filter_map(|part| part.split(end).next())
            .collect()
    }

    #[test]
    fn a_bar_chart_is_a_captioned_svg_with_a_table_of_the_same_figures() {
        let chart = bars(4);
        let page = bar_chart(&chart).into_string();
        assert!(page.starts_with("<figure"), "{page}");
        assert!(page.contains("<figcaption"), "{page}");
        assert!(
            page.contains("role=\"img\" aria-label=\"Closure rates by group.\""),
            "{page}"
        );
        assert!(
            page.contains("<title>Closure rates by group.</title>"),
            "{page}"
        );
        assert!(
            page.contains("viewBox=\"0 0 400.0 176.0\" width=\"100%\""),
            "{page}"
        );
        // Each figure is drawn as text beside its bar and is in the table.
        let drawn = between(&page, "font-weight=\"bold\">", "</text>");
        let tabled = between(&page, "<td class=\"nhsuk-table__cell\">", "</td>");
        let shown: Vec<&str> = chart.bars.iter().map(|b| b.shown.as_str()).collect();
        assert_eq!(drawn, shown);
        assert_eq!(tabled, shown);
        well_formed(&page);
        assert_eq!(page.matches("<rect ").count(), 4);
        // The reference bar is grey, the others blue.
        assert_eq!(page.matches(DARK_GREY).count(), 1);
        assert_eq!(page.matches(&format!("fill=\"{BLUE}\"")).count(), 3);
        // No inline style anywhere.
        assert!(!page.contains("style"), "{page}");
    }

    #[test]
    fn a_long_bar_chart_draws_thirty_bars_and_says_the_rest_are_in_the_table() {
        let page = bar_chart(&bars(45)).into_string();
        assert_eq!(page.matches("<rect ").count(), MAX_BARS);
        assert_eq!(page.matches("<td class=\"nhsuk-table__cell\">").count(), 45);
        assert!(page.contains("15 more are in the table"), "{page}");
    }

    #[test]
    fn markup_in_labels_is_escaped_and_long_labels_are_cut_in_the_drawing_only() {
        let chart = BarChart {
            bars: vec![Bar {
                label: format!("<script>alert(1)</script>{}", "x".repeat(80)),
                value: 50.0,
                shown: "50%".to_owned(),
                tone: Tone::Data,
            }],
            ..bars(0)
        };
        let page = bar_chart(&chart).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(
            page.contains(&"x".repeat(80)),
            "the table holds the whole label"
        );
        assert!(page.contains('…'), "the drawing cuts it");
    }

    fn months(values: &[Option<f64>]) -> LineChart {
        LineChart {
            caption: "Positive FFT answers by month".to_owned(),
            summary: "From 80% to 90%.".to_owned(),
            label_heading: "Month".to_owned(),
            value_heading: "Positive".to_owned(),
            points: values
                .iter()
                .enumerate()
                .map(|(i, value)| Point {
                    label: format!("M{i}"),
                    value: *value,
                    shown: value
                        .map_or_else(|| "fewer than 10 answers".to_owned(), |v| format!("{v}%")),
                })
                .collect(),
        }
    }

    #[test]
    fn a_line_chart_breaks_where_a_month_has_no_figure_and_tables_every_month() {
        let chart = months(&[Some(80.0), Some(85.5), None, Some(90.0)]);
        let page = line_chart(&chart).into_string();
        assert!(
            page.contains("role=\"img\" aria-label=\"From 80% to 90%.\""),
            "{page}"
        );
        // The first two months are joined; the last, after a gap, is a point on its own.
        well_formed(&page);
        assert_eq!(page.matches("<polyline").count(), 1);
        assert_eq!(page.matches("<circle").count(), 3);
        let tabled = between(&page, "<td class=\"nhsuk-table__cell\">", "</td>");
        assert_eq!(tabled, ["80%", "85.5%", "fewer than 10 answers", "90%"]);
        // 100% is at the top of the plot, 0% at its bottom.
        assert!(page.contains("points=\"44.0,50.8 152.7,41.2\""), "{page}");
        assert!(
            page.contains("font-weight=\"bold\" text-anchor=\"end\">90%</text>"),
            "{page}"
        );
        assert!(page.contains("y1=\"16.0\""), "100% is drawn at the top");
        assert!(!page.contains("style"), "{page}");
    }

    #[test]
    fn a_line_chart_draws_the_last_twenty_four_points() {
        let values: Vec<Option<f64>> = (0..30).map(|i| Some(f64::from(i))).collect();
        let page = line_chart(&months(&values)).into_string();
        assert_eq!(page.matches("<circle").count(), MAX_POINTS);
        assert_eq!(page.matches("<td class=\"nhsuk-table__cell\">").count(), 30);
        assert!(page.contains("6 earlier are in the table"), "{page}");
        // The first six points are only in the table; of the 24 drawn, every fourth is named
        // on the axis, back from the last.
        assert!(!page.contains(">M5</text>"), "{page}");
        let named: Vec<&str> = between(&page, "text-anchor=\"middle\">", "</text>");
        assert_eq!(named, ["M9", "M13", "M17", "M21", "M25", "M29"]);
        // Labels with a second part name it under the first, once until it changes.
        let mut chart = months(&[Some(1.0), Some(2.0), Some(3.0)]);
        for (point, label) in chart
            .points
            .iter_mut()
            .zip(["Dec 2025", "Jan 2026", "Feb 2026"])
        {
            point.label = label.to_owned();
        }
        let page = line_chart(&chart).into_string();
        let named: Vec<&str> = between(&page, "text-anchor=\"middle\">", "</text>");
        assert_eq!(named, ["Dec", "2025", "Jan", "2026", "Feb"]);
    }
}
