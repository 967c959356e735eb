//! The jetstream section of `docs/benchmarks.md`, between `<!-- bench:jetstream:start -->` and
//! `<!-- bench:jetstream:end -->`.

use std::fmt::Write as _;
use std::time::Duration;

use super::replica::{self, ReplicaStart};
use super::{JetstreamFigures, NodeFigures, Timed};
use crate::machine::Machine;
use crate::report::{self, duration, percent, thousands};
use crate::store::{EVENTS_PER_LOOP, Measurement, READ_PAGE, WRITERS};

use super::appends::{CatchUp, LARGEST, LoadShape, MODERATE, OPEN_LIMIT};

const START: &str = "<!-- bench:jetstream:start -->";
const END: &str = "<!-- bench:jetstream:end -->";

/// The 3-node store's 64 writers as a fraction of raw R3 publishing with 64 publishers.
const MIN_CLUSTER_RATIO: f64 = 0.5;

/// The whole section, markers included, ending in a newline.
#[must_use]
pub fn render(f: &JetstreamFigures, machine: &Machine, command: &str) -> String {
    let s = f.settings;
    let mut out = String::new();
    report::header(&mut out, START, "JetStream event store", machine, command);
    if let Some(load) = f.load_average {
        let _ = writeln!(
            out,
            "- 1-minute load average when the run started: {load:.2}"
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "nats-server {version}, started by the benchmark in temp dirs: one node (streams R1) and \
         a 3-node cluster routed on loopback (streams R3), all four processes on the same cores \
         as the benchmark. Every stream uses file storage; a write counts once JetStream \
         acknowledged it (stored on a quorum, not fsynced: nats-server 2.9 flushes to disk on an \
         interval), the same for raw publishing and for the store. Raw publishing sends \
         {bytes}-byte messages (one store entry holding the store bench's feedback record) \
         with no headers to a stream of its own. The store runs without a key store (personal \
         data plain, as `closeloop-bench store --plain`), so the sled figures beside it are \
         plain too; both write the store bench's loops of a feedback and {acks} \
         acknowledgements. Read-all runs on a newly opened store with no message cache, so \
         every batch message is fetched from the server. Steps 1 to 6 are the medians of {repeat} \
         rounds (each on fresh streams, R1 and R3 in turn), step 7 the median of {repeat} \
         opens and step 7b one open, each given {limit} s (the issue's start-up target for a \
         whole replica at 1,000,000 events).\n",
        version = f.server_version,
        bytes = f.message_bytes,
        acks = EVENTS_PER_LOOP - 1,
        repeat = s.repeat,
        limit = OPEN_LIMIT.as_secs(),
    );
    out.push_str(&jetstream_table(f));
    out.push('\n');
    let per_batch = |setup: &str, events: u64, batches: u64| {
        format!(
            "{} batch messages ({:.1} events each) on {setup}",
            thousands(batches as f64),
            events as f64 / batches.max(1) as f64,
        )
    };
    let _ = writeln!(
        out,
        "Step 4 wrote {} and {}. {} {}\n",
        per_batch("R1", s.events, f.one_node.batches),
        per_batch("R3", s.events, f.cluster.batches),
        catch_up_log("7", &MODERATE, &f.one_node.catch_up, &f.cluster.catch_up),
        catch_up_log(
            "7b",
            &LARGEST,
            &f.one_node.catch_up_largest,
            &f.cluster.catch_up_largest
        ),
    );
    out.push_str(&sled_table(f));
    out.push('\n');
    out.push_str(&replica_table(f));
    out.push('\n');
    out.push_str(&targets_table(f));
    let _ = writeln!(out, "{END}");
    out
}

/// How step `step`'s log was written and what it holds, on R1 and R3.
fn catch_up_log(step: &str, shape: &LoadShape, r1: &CatchUp, r3: &CatchUp) -> String {
    let holds = |c: &CatchUp| {
        format!(
            "{:.1} s ({} messages of {} KB on average)",
            c.load.elapsed.as_secs_f64(),
            thousands(c.batches as f64),
            thousands(c.bytes as f64 / c.batches.max(1) as f64 / 1000.0)
        )
    };
    format!(
        "Step {step}'s log was loaded in appends of {} loops ({} events), {} at a time: in {} \
         on R1 and in {} on R3.",
        shape.loops_per_append,
        shape.loops_per_append * EVENTS_PER_LOOP,
        shape.loaders,
        holds(r1),
        holds(r3)
    )
}

/// A catch-up's rate and time, or that it did not open in time.
fn opened(c: &CatchUp) -> (String, String) {
    match &c.open {
        Some(m) => (rate(m), seconds(m)),
        None => (
            "did not open".to_owned(),
            format!("> {} s", OPEN_LIMIT.as_secs()),
        ),
    }
}

fn rate(m: &Measurement) -> String {
    thousands(m.per_second())
}

fn latency(t: &Timed) -> String {
    format!("{} / {}", time(t.latency.p50), time(t.latency.p99))
}

/// A latency, to a hundredth of a millisecond below 10 ms (a publish on one node takes well
/// under one).
fn time(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        duration(d)
    }
}

fn seconds(m: &Measurement) -> String {
    format!("{:.2} s", m.elapsed.as_secs_f64())
}

fn jetstream_table(f: &JetstreamFigures) -> String {
    let s = f.settings;
    type Cell = fn(&NodeFigures) -> (String, String);
    let rows: [(&str, String, u64, Cell); 9] = [
        (
            "1",
            "raw JetStream: 1 publisher, each ack awaited".to_owned(),
            s.single,
            |n| (rate(&n.raw_single.rate), latency(&n.raw_single)),
        ),
        (
            "1b",
            "… with the store's headers (`Nats-Msg-Id`, `Nats-Expected-Last-Sequence`)".to_owned(),
            s.single,
            |n| (rate(&n.raw_fenced.rate), latency(&n.raw_fenced)),
        ),
        (
            "2",
            format!("raw JetStream: {WRITERS} publishers, each awaiting its acks"),
            s.events,
            |n| (rate(&n.raw_concurrent.rate), latency(&n.raw_concurrent)),
        ),
        (
            "3",
            "store: 1 writer, single-event appends, each awaited".to_owned(),
            s.single,
            |n| {
                (
                    format!(
                        "{} ({} of 1)",
                        rate(&n.store_single.rate),
                        percent(n.store_single.rate.ratio_to(&n.raw_single.rate))
                    ),
                    latency(&n.store_single),
                )
            },
        ),
        (
            "4",
            format!("store: {WRITERS} concurrent writers, single-event appends"),
            s.events,
            |n| {
                (
                    format!(
                        "{} ({} of 2)",
                        rate(&n.store_concurrent.rate),
                        percent(n.store_concurrent.rate.ratio_to(&n.raw_concurrent.rate))
                    ),
                    latency(&n.store_concurrent),
                )
            },
        ),
        (
            "5",
            format!("store: `read_all` pages of {READ_PAGE} + typed decode, cold"),
            s.events,
            |n| (rate(&n.read_all), seconds(&n.read_all)),
        ),
        (
            "6",
            "store: open on the log of 4 (index rebuilt from the stream)".to_owned(),
            s.events,
            |n| (rate(&n.open), seconds(&n.open)),
        ),
        (
            "7",
            "store: open on a long log, catch-up from empty (messages of one 100-event append)"
                .to_owned(),
            s.catch_up,
            |n| opened(&n.catch_up),
        ),
        (
            "7b",
            "… on a log of the writer's largest messages (up to 1 MiB each)".to_owned(),
            s.catch_up,
            |n| opened(&n.catch_up_largest),
        ),
    ];
    let mut out = String::from(
        "| # | Work | Events | 1 node (R1): events/s | R1: p50 / p99, or time | \
         3 nodes (R3): events/s | R3: p50 / p99, or time |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for (step, work, events, cell) in rows {
        let (r1_rate, r1_time) = cell(&f.one_node);
        let (r3_rate, r3_time) = cell(&f.cluster);
        let _ = writeln!(
            out,
            "| {step} | {work} | {} | {r1_rate} | {r1_time} | {r3_rate} | {r3_time} |",
            thousands(events as f64)
        );
    }
    out
}

fn sled_table(f: &JetstreamFigures) -> String {
    let rows = [
        (
            "8",
            "sled store: 1 writer, single-event appends, each awaited (fsync)",
            &f.sled.single,
        ),
        (
            "9",
            "sled store: 64 concurrent writers (fsync per group commit)",
            &f.sled.concurrent,
        ),
        (
            "10",
            "sled store: `read_all` + typed decode",
            &f.sled.read_all,
        ),
        ("11", "sled store: reopen, indexes rebuilt", &f.sled.reopen),
    ];
    let mut out = String::from(
        "The sled store on the same run (one process, one disk; plain):\n\n\
         | # | Work | Events | Seconds | Events/s |\n|---|---|---:|---:|---:|\n",
    );
    for (step, work, m) in rows {
        let _ = writeln!(
            out,
            "| {step} | {work} | {} | {:.2} | {} |",
            thousands(m.events as f64),
            m.elapsed.as_secs_f64(),
            rate(m)
        );
    }
    out
}

/// Step 12: a whole new replica's start, R1 and R3.
fn replica_table(f: &JetstreamFigures) -> String {
    let [r1, r3] = &f.replica_start;
    let mut out = format!(
        "**12. A whole new replica** (`closeloop serve`: event store and read models, empty data \
         directory) on a log of {} demo loops ({} events, loaded with `closeloop demo --store \
         jetstream`, encrypted under a master key): a first replica builds its read models from \
         the whole log and shares its snapshot in the `CLOSELOOP_SNAPSHOTS` bucket; {} more \
         feedback go in through it, and it is killed; then a new replica starts {} times, each \
         timed from its spawn until `/readyz` answers 200 with the projector's lag 0.\n\n",
        thousands(r3.loops as f64),
        thousands(r3.events as f64),
        thousands(replica::TAIL as f64),
        r3.starts.len(),
    );
    out.push_str("| Step 12 | R1 | R3 |\n|---|---:|---:|\n");
    let row = |out: &mut String, what: &str, cell: &dyn Fn(&ReplicaStart) -> String| {
        let _ = writeln!(out, "| {what} | {} | {} |", cell(r1), cell(r3));
    };
    row(&mut out, "demo loops loaded through the store", &|r| {
        format!(
            "{:.1} s ({} events/s)",
            r.load.as_secs_f64(),
            thousands(r.events.saturating_sub(replica::TAIL) as f64 / r.load.as_secs_f64())
        )
    });
    row(
        &mut out,
        "first replica, no snapshot: serving with the whole log in its read models",
        &|r| format!("{:.1} s", r.first_build.as_secs_f64()),
    );
    row(&mut out, "shared snapshot: position, size", &|r| {
        format!(
            "{}, {:.1} MB",
            thousands(r.checkpoint as f64),
            r.snapshot_bytes as f64 / 1e6
        )
    });
    row(
        &mut out,
        "new replica: snapshot downloaded in (median)",
        &|r| {
            r.median().map_or("–".to_owned(), |m| {
                format!("{:.2} s", m.download.as_secs_f64())
            })
        },
    );
    row(
        &mut out,
        "new replica: events replayed after the snapshot",
        &|r| thousands(r.events.saturating_sub(r.checkpoint) as f64),
    );
    row(
        &mut out,
        "**new replica: start → serving, read models current (median)**",
        &|r| {
            r.median().map_or("–".to_owned(), |m| {
                format!("**{:.2} s**", m.ready.as_secs_f64())
            })
        },
    );
    out
}

fn targets_table(f: &JetstreamFigures) -> String {
    let ratio = f
        .cluster
        .store_concurrent
        .rate
        .ratio_to(&f.cluster.raw_concurrent.rate);
    let met = ratio >= MIN_CLUSTER_RATIO;
    let mut out = String::from("| Target | Required | Measured | Result |\n|---|---:|---:|---|\n");
    let _ = writeln!(
        out,
        "| 3-node store, {WRITERS} writers, vs raw R3 publishing, {WRITERS} publishers (4 vs 2) \
         | ≥ {} | {} | {} |",
        percent(MIN_CLUSTER_RATIO),
        percent(ratio),
        if met { "PASS" } else { "MISS" }
    );
    for (label, start) in ["R1", "R3"].iter().zip(&f.replica_start) {
        let ready = start.median().map(|m| m.ready);
        let _ = writeln!(
            out,
            "| a whole new replica serving at {} events ({label}) | ≤ {} s | {} | {} |",
            thousands(start.events as f64),
            replica::TARGET.as_secs(),
            ready.map_or("–".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            if ready.is_some_and(|d| d <= replica::TARGET) {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Latency, Settings, SledFigures};
    use super::*;

    fn per_second(events: u64, rate: u64) -> Measurement {
        Measurement {
            events,
            elapsed: Duration::from_secs_f64(events as f64 / rate as f64),
        }
    }

    fn timed(events: u64, rate: u64) -> Timed {
        Timed {
            rate: per_second(events, rate),
            latency: Latency {
                p50: Duration::from_micros(400),
                p99: Duration::from_millis(3),
            },
        }
    }

    fn node(store_concurrent: u64) -> NodeFigures {
        NodeFigures {
            raw_single: timed(1_000, 5_000),
            raw_fenced: timed(1_000, 4_000),
            raw_concurrent: timed(10_000, 40_000),
            store_single: timed(1_000, 2_500),
            store_concurrent: timed(10_000, store_concurrent),
            batches: 200,
            read_all: per_second(10_000, 100_000),
            open: per_second(10_000, 200_000),
            catch_up: CatchUp {
                load: per_second(40_000, 80_000),
                batches: 400,
                bytes: 14_000_000,
                open: Some(per_second(40_000, 400_000)),
            },
            catch_up_largest: CatchUp {
                load: per_second(40_000, 80_000),
                batches: 14,
                bytes: 14_000_000,
                open: None,
            },
        }
    }

    fn figures(cluster_store: u64) -> JetstreamFigures {
        JetstreamFigures {
            settings: Settings {
                events: 10_000,
                single: 1_000,
                catch_up: 40_000,
                repeat: 3,
            },
            one_node: node(30_000),
            cluster: node(cluster_store),
            sled: SledFigures {
                single: per_second(1_000, 3_000),
                concurrent: per_second(10_000, 50_000),
                read_all: per_second(10_000, 400_000),
                reopen: per_second(10_000, 500_000),
            },
            message_bytes: 612,
            server_version: "2.9.10".to_owned(),
            load_average: Some(0.5),
            replica_start: [start(4), start(75)],
        }
    }

    /// Step 12 on 40,000 events, new replicas serving in `median_seconds` (and 1 s either side).
    fn start(median_seconds: u64) -> ReplicaStart {
        let new = |seconds| replica::NewReplica {
            ready: Duration::from_secs(seconds),
            download: Duration::from_millis(250),
        };
        ReplicaStart {
            loops: 6_000,
            events: 40_000,
            load: Duration::from_secs(2),
            first_build: Duration::from_secs(3),
            checkpoint: 25_000,
            snapshot_bytes: 2_500_000,
            starts: vec![
                new(median_seconds + 1),
                new(median_seconds),
                new(median_seconds - 1),
            ],
        }
    }

    #[test]
    fn judges_the_cluster_target_and_shows_every_figure() {
        let machine = Machine::probe(Path::new("/"));
        let pass = render(&figures(20_000), &machine, "closeloop-bench jetstream");
        assert!(pass.starts_with("<!-- bench:jetstream:start -->\n"));
        assert!(pass.ends_with("<!-- bench:jetstream:end -->\n"));
        assert!(pass.contains("| 50% | PASS |"), "{pass}");
        assert!(pass.contains(
            "| 4 | store: 64 concurrent writers, single-event appends | 10,000 | 30,000 (75% of 2) \
             | 0.40 ms / 3.00 ms | 20,000 (50% of 2) | 0.40 ms / 3.00 ms |"
        ));
        assert!(pass.contains("| 40,000 | 400,000 | 0.10 s | 400,000 | 0.10 s |"));
        assert!(pass.contains("| 40,000 | did not open | > 60 s | did not open | > 60 s |"));
        assert!(pass.contains("(14 messages of 1,000 KB on average)"));
        assert!(pass.contains("200 batch messages (50.0 events each)"));
        assert!(pass.contains("612-byte messages"));
        assert!(pass.contains("| 9 | sled store: 64 concurrent writers (fsync per group commit) | 10,000 | 0.20 | 50,000 |"));

        assert!(
            pass.contains("| shared snapshot: position, size | 25,000, 2.5 MB | 25,000, 2.5 MB |"),
            "{pass}"
        );
        assert!(
            pass.contains("| new replica: events replayed after the snapshot | 15,000 | 15,000 |")
        );
        assert!(
            pass.contains("| new replica: snapshot downloaded in (median) | 0.25 s | 0.25 s |")
        );
        assert!(
            pass.contains(
                "| a whole new replica serving at 40,000 events (R1) | ≤ 60 s | 4.00 s | PASS |"
            ),
            "{pass}"
        );
        assert!(pass.contains(
            "| a whole new replica serving at 40,000 events (R3) | ≤ 60 s | 75.00 s | MISS |"
        ));

        let miss = render(&figures(19_000), &machine, "");
        assert!(miss.contains("| 48% | MISS |"), "{miss}");
    }
}
