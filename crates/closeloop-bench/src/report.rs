//! The figures as markdown, and their section in a document.
//!
//! A section sits between markers such as [`START`] and [`END`] (`<!-- bench:NAME:start -->`
//! and `<!-- bench:NAME:end -->`, one pair per benchmark); writing it again replaces it and
//! leaves the rest of the document alone.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use std::time::Duration;

use crate::ingest::IngestFigures;
use crate::machine::Machine;
use crate::store::{Figures, Measurement, RAW_BATCH, READ_PAGE, WRITERS};

/// Opens the store section of a document.
pub const START: &str = "<!-- bench:store:start -->";
/// Closes the store section of a document.
pub const END: &str = "<!-- bench:store:end -->";

/// Durable single-event appends/s the 64 concurrent writers must reach.
const MIN_CONCURRENT_RATE: f64 = 40_000.0;
/// The 64 writers' rate as a fraction of raw sled in batches of 64.
const MIN_CONCURRENT_RATIO: f64 = 0.5;
/// Read-all + typed decode as a fraction of raw scan + JSON decode.
const MIN_READ_RATIO: f64 = 0.6;

/// The whole store section, markers included, ending in a newline.
#[must_use]
pub fn store_section(figures: &Figures, machine: &Machine, command: &str) -> String {
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC");
    let profile = if cfg!(debug_assertions) {
        "debug build: not representative"
    } else {
        "release build"
    };
    let mut out = String::new();
    let _ = writeln!(out, "{START}");
    let _ = writeln!(out, "## Event store\n");
    let _ = writeln!(out, "- Date: {date}");
    let _ = writeln!(out, "- Machine: {}", machine.describe());
    let _ = writeln!(out, "- Command: `{command}` ({profile})\n");
    let _ = writeln!(
        out,
        "Each step runs in a fresh temp dir; every write counts only once flushed (fsync). \
         Raw sled stores a feedback record under an 8-byte key; the store writes one entry per \
         event (chain header, idempotency key, record; its loop and key indexes live in memory) \
         for loops of a feedback and three acknowledgements. Figures vary by about ±30% from \
         run to run on this virtual machine; \
         steps 3 to 7 are the median of `--repeat` runs (default 3).\n"
    );
    out.push_str(&figures_table(figures));
    out.push('\n');
    out.push_str(&targets_table(figures));
    let _ = writeln!(out, "{END}");
    out
}

fn figures_table(f: &Figures) -> String {
    let rows: [(&str, String, &Measurement, Option<String>); 7] = [
        (
            "1",
            "raw sled, 1 writer: insert + flush each".to_owned(),
            &f.raw_single,
            None,
        ),
        (
            "2",
            "closeloop, 1 writer: single-event append, awaited".to_owned(),
            &f.store_single,
            Some(format!(
                "2 vs 1: {}",
                percent(f.store_single.ratio_to(&f.raw_single))
            )),
        ),
        (
            "3",
            format!("raw sled: batches of {RAW_BATCH}, apply_batch + one flush each"),
            &f.raw_batched,
            None,
        ),
        (
            "4",
            format!("closeloop, {WRITERS} concurrent writers: single-event appends"),
            &f.store_concurrent,
            Some(format!(
                "4 vs 3: {}",
                percent(f.store_concurrent.ratio_to(&f.raw_batched))
            )),
        ),
        (
            "5",
            "raw sled: scan + `serde_json::Value` decode".to_owned(),
            &f.raw_scan,
            None,
        ),
        (
            "6",
            format!("closeloop: `read_all` pages of {READ_PAGE} + typed decode"),
            &f.store_read_all,
            Some(format!(
                "6 vs 5: {}",
                percent(f.store_read_all.ratio_to(&f.raw_scan))
            )),
        ),
        (
            "7",
            "closeloop: reopen, indexes rebuilt from entry headers".to_owned(),
            &f.store_reopen,
            None,
        ),
    ];
    let mut out = String::from(
        "| # | Work | Events | Seconds | Events/s | vs raw |\n|---|---|---:|---:|---:|---|\n",
    );
    for (step, work, measurement, ratio) in rows {
        let _ = writeln!(
            out,
            "| {step} | {work} | {} | {:.2} | {} | {} |",
            thousands(measurement.events as f64),
            measurement.elapsed.as_secs_f64(),
            thousands(measurement.per_second()),
            ratio.unwrap_or_default(),
        );
    }
    out
}

fn targets_table(f: &Figures) -> String {
    let concurrent_ratio = f.store_concurrent.ratio_to(&f.raw_batched);
    let read_ratio = f.store_read_all.ratio_to(&f.raw_scan);
    let targets = [
        (
            format!("{WRITERS} writers: durable single-event appends/s"),
            format!("≥ {}", thousands(MIN_CONCURRENT_RATE)),
            thousands(f.store_concurrent.per_second()),
            f.store_concurrent.per_second() >= MIN_CONCURRENT_RATE,
        ),
        (
            format!("{WRITERS} writers vs raw sled in batches of {RAW_BATCH} (4 vs 3)"),
            format!("≥ {}", percent(MIN_CONCURRENT_RATIO)),
            percent(concurrent_ratio),
            concurrent_ratio >= MIN_CONCURRENT_RATIO,
        ),
        (
            "read-all + decode vs raw scan + decode (6 vs 5)".to_owned(),
            format!("≥ {}", percent(MIN_READ_RATIO)),
            percent(read_ratio),
            read_ratio >= MIN_READ_RATIO,
        ),
    ];
    let mut out = String::from("| Target | Required | Measured | Result |\n|---|---:|---:|---|\n");
    for (target, required, measured, met) in targets {
        let result = if met { "PASS" } else { "MISS" };
        let _ = writeln!(out, "| {target} | {required} | {measured} | {result} |");
    }
    out
}

/// Durably stored events/s the drain must reach.
const MIN_DRAIN_RATE: f64 = 30_000.0;
/// The drain as a fraction of the raw pull-consume-and-ack rate.
const MIN_DRAIN_RATIO: f64 = 0.25;
/// Publish-to-feed p99 at the steady rate.
const MAX_FEED_P99: Duration = Duration::from_millis(50);

/// The whole ingest section, markers included, ending in a newline.
#[must_use]
pub fn ingest_section(f: &IngestFigures, machine: &Machine, command: &str) -> String {
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC");
    let profile = if cfg!(debug_assertions) {
        "debug build: not representative"
    } else {
        "release build"
    };
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let ratio = f.drain_rate() / f.raw_rate().max(f64::MIN_POSITIVE);
    let p99 = f.latency(99.0);
    let mut out = String::new();
    let _ = writeln!(out, "<!-- bench:ingest:start -->");
    let _ = writeln!(out, "## NATS ingestion and the outbound feed\n");
    let _ = writeln!(out, "- Date: {date}");
    let _ = writeln!(out, "- Machine: {}", machine.describe());
    let _ = writeln!(out, "- Command: `{command}` ({profile})\n");
    let _ = writeln!(
        out,
        "A private `nats-server` 2.9 (JetStream, file storage) on the same 2 cores. {} \
         CloudEvents (loops of a `feedback.received` and a `loop.acknowledged`) are published to \
         `FEEDBACK` first; a raw durable pull consumer then pulls and acks them all (no other \
         work), and Closeloop's NATS side (as `closeloop serve` runs it, over a fresh sled \
         store) drains the same messages, timed until every event is durably stored. Then, \
         with the backlog gone, feedback is published at a steady rate and each event timed \
         from publish until it arrives on `closeloop.events.*`. Steps 2 to 4 are the medians \
         of {} rounds.\n",
        thousands(f.events as f64),
        f.repeat
    );
    let _ = writeln!(out, "| # | Work | Events | Seconds | Events/s |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    let rows = [
        (
            "publish to `FEEDBACK`, 1,000 acks in flight",
            f.events,
            f.load,
        ),
        ("raw pull consumer: pull + ack each", f.events, f.raw),
        ("Closeloop: consume, store durably, ack", f.events, f.drain),
        (
            "Closeloop: … and every event on the feed",
            f.events,
            f.feed_caught_up,
        ),
    ];
    for (n, (work, events, elapsed)) in rows.into_iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {work} | {} | {:.2} | {} |",
            n + 1,
            thousands(events as f64),
            elapsed.as_secs_f64(),
            thousands(events as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)),
        );
    }
    let _ = writeln!(
        out,
        "\nPublish to feed at {} events/s for {} events: p50 {}, p99 {}, max {}.\n",
        thousands(f.rate as f64),
        thousands(f.latency_events as f64),
        ms(f.latency(50.0)),
        ms(p99),
        ms(f.latency(100.0)),
    );
    let targets = [
        (
            "drain: durably stored events/s".to_owned(),
            format!("≥ {}", thousands(MIN_DRAIN_RATE)),
            thousands(f.drain_rate()),
            f.drain_rate() >= MIN_DRAIN_RATE,
        ),
        (
            "drain vs raw pull consumer (3 vs 2)".to_owned(),
            format!("≥ {}", percent(MIN_DRAIN_RATIO)),
            percent(ratio),
            ratio >= MIN_DRAIN_RATIO,
        ),
        (
            format!(
                "publish-to-feed p99 at {} events/s",
                thousands(f.rate as f64)
            ),
            format!("≤ {}", ms(MAX_FEED_P99)),
            ms(p99),
            p99 <= MAX_FEED_P99,
        ),
    ];
    out.push_str("| Target | Required | Measured | Result |\n|---|---:|---:|---|\n");
    for (target, required, measured, met) in targets {
        let result = if met { "PASS" } else { "MISS" };
        let _ = writeln!(out, "| {target} | {required} | {measured} | {result} |");
    }
    let _ = writeln!(out, "<!-- bench:ingest:end -->");
    out
}

/// A ratio as a whole percentage.
fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

/// A rate or count rounded to a whole number, with thousands separators: `41,234`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// How this binary was invoked, program name without its directory, arguments quoted for a
/// POSIX shell where needed.
#[must_use]
pub fn command_line() -> String {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .as_deref()
        .and_then(|path| Path::new(path).file_name())
        .map_or_else(
            || "closeloop-bench".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
    std::iter::once(program)
        .chain(args.map(|arg| shell_quote(&arg)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &OsString) -> String {
    let arg = arg.to_string_lossy();
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Puts `section` (markers included; its first line is the start marker) into the markdown
/// file at `path`: in place of its existing section, else at its end; a missing file is
/// created with a heading.
///
/// # Errors
/// When the file cannot be read or written.
pub fn write_section(path: &Path, section: &str) -> io::Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(text) => splice(&text, section),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            format!(
                "# Benchmarks\n\nThe figures below are written by the `closeloop-bench` binary \
                 (`cargo run --release -p closeloop-bench -- store --write {}`), never by \
                 tests.\n\n{section}",
                path.display()
            )
        }
        Err(err) => return Err(err),
    };
    fs::write(path, text)
}

/// `text` with its section replaced by `section`, or with `section` appended.
fn splice(text: &str, section: &str) -> String {
    // The section's first line is its start marker; the end marker is named alike.
    let start_marker = section.lines().next().unwrap_or_default();
    let end_marker = start_marker.replace(":start -->", ":end -->");
    if let Some(start) = text.find(start_marker)
        && let Some(length) = text[start..].find(&end_marker)
    {
        let end = start + length + end_marker.len();
        // `section` ends in a newline: take the old one's along so lines do not multiply.
        let rest = text[end..].strip_prefix('\n').unwrap_or(&text[end..]);
        return format!("{}{section}{rest}", &text[..start]);
    }
    let gap = if text.is_empty() || text.ends_with("\n\n") {
        ""
    } else if text.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{text}{gap}{section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> String {
        format!("{START}\n{body}\n{END}\n")
    }

    #[test]
    fn replaces_the_section_and_keeps_the_rest() {
        let text = format!("# Benchmarks\n\nintro\n\n{}\n## Later\n", section("old"));
        let new = splice(&text, &section("new"));
        assert_eq!(
            new,
            format!("# Benchmarks\n\nintro\n\n{}\n## Later\n", section("new"))
        );
        assert_eq!(splice(&new, &section("new")), new);
    }

    #[test]
    fn appends_when_there_is_no_section() {
        assert_eq!(
            splice("# Benchmarks\nintro", &section("x")),
            format!("# Benchmarks\nintro\n\n{}", section("x"))
        );
        assert_eq!(
            splice("# Benchmarks\n", &section("x")),
            format!("# Benchmarks\n\n{}", section("x"))
        );
    }

    #[test]
    fn formats_figures() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(41_234.6), "41,235");
        assert_eq!(thousands(1_450_000.0), "1,450,000");
        assert_eq!(percent(0.506), "51%");
        assert_eq!(shell_quote(&OsString::from("--write")), "--write");
        assert_eq!(shell_quote(&OsString::from("a b")), "'a b'");
    }
}
