//! The [`JetStreamStore`] measured: appends, opening on an existing log, `read_all`, and the
//! catch-up of a new store on a long log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use closeloop_domain::LoopId;
use closeloop_store::conformance::{acknowledgement, feedback};
use closeloop_store::{AppendRequest, EventStore, ExpectedVersion, LoopAppend};
use closeloop_store_jetstream::{JetStreamStore, JetStreamStoreOptions};
use tokio::task::JoinSet;

use super::{Latency, STEP_TIMEOUT, Settings, Setup, Timed, delete_stream};
use crate::store::{self, EVENTS_PER_LOOP, Measurement};

/// The store's options for the log in stream `stream`: `closeloop serve`'s defaults except
/// the stream, its subject and the replicas, and no key store (personal data plain).
fn options(stream: &str, replicas: usize) -> JetStreamStoreOptions {
    JetStreamStoreOptions {
        stream: stream.to_owned(),
        subject: format!("bench.log.{}", stream.to_lowercase()),
        replicas,
        keys: None,
        ..JetStreamStoreOptions::default()
    }
}

/// Opens a store within [`STEP_TIMEOUT`].
async fn open_store(
    client: async_nats::Client,
    options: JetStreamStoreOptions,
) -> Result<JetStreamStore> {
    let stream = options.stream.clone();
    tokio::time::timeout(STEP_TIMEOUT, JetStreamStore::open(client, options))
        .await
        .with_context(|| format!("the store on {stream} did not open in time"))?
        .with_context(|| format!("cannot open the store on {stream}"))
}

/// `count` single-event appends to a new log in `stream`, from `writers` concurrent tasks,
/// each append awaited before the writer's next (the store bench's loops and events).
pub(super) async fn append(
    client: async_nats::Client,
    replicas: usize,
    stream: &str,
    writers: u64,
    count: u64,
) -> Result<Timed> {
    let store = Arc::new(open_store(client, options(stream, replicas)).await?);
    let plans = (0..writers)
        .map(|writer| {
            let share = count / writers + u64::from(writer < count % writers);
            store::writer_requests(&format!("w{writer}"), share)
        })
        .collect::<Result<Vec<_>>>()?;

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for plan in plans {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(plan.len());
            for request in plan {
                let sent = Instant::now();
                let outcome = store.append(request).await?;
                latencies.push(sent.elapsed());
                ensure!(
                    !outcome.duplicate,
                    "a fresh event was taken for a duplicate"
                );
            }
            anyhow::Ok(latencies)
        });
    }
    let latencies = tokio::time::timeout(STEP_TIMEOUT, async {
        let mut all = Vec::with_capacity(usize::try_from(count)?);
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined.context("a writer task panicked")??);
        }
        anyhow::Ok(all)
    })
    .await
    .context("the appends did not finish in time")??;
    let rate = Measurement::since(count, start);
    ensure!(
        store.head() == count,
        "the store holds {} events, not {count}",
        store.head()
    );
    close(store).await?;
    Ok(Timed {
        rate,
        latency: Latency::of(latencies),
    })
}

async fn close(store: Arc<JetStreamStore>) -> Result<()> {
    Arc::into_inner(store)
        .context("a task still holds the store")?
        .close()
        .await;
    Ok(())
}

/// A new store, on a connection of its own, opens on the log in `stream` holding `events`:
/// how long until it is open (its index rebuilt from every message), and how many batch
/// messages the log holds.
pub(super) async fn open(setup: &Setup, stream: &str, events: u64) -> Result<(Measurement, u64)> {
    let client = setup.connect().await?;
    let start = Instant::now();
    let store = open_store(client, options(stream, setup.replicas)).await?;
    let opened = Measurement::since(events, start);
    ensure!(
        store.head() == events,
        "the opened store holds {} events, not {events}",
        store.head()
    );
    // The first message is the genesis, not a batch.
    let batches = store.applied_messages().saturating_sub(1);
    store.close().await;
    Ok((opened, batches))
}

/// `read_all` in pages of [`READ_PAGE`] over the log in `stream`, every event decoded, from
/// a newly opened store that caches no message: every batch is fetched from the server.
pub(super) async fn read_all(setup: &Setup, stream: &str, events: u64) -> Result<Measurement> {
    let client = setup.connect().await?;
    let cold = JetStreamStoreOptions {
        cache_bytes: 0,
        ..options(stream, setup.replicas)
    };
    let store = open_store(client, cold).await?;
    let start = Instant::now();
    let decoded = tokio::time::timeout(STEP_TIMEOUT, store::read_and_decode_all(&store))
        .await
        .context("read_all did not finish in time")??;
    let read = Measurement::since(decoded, start);
    ensure!(
        decoded == events,
        "read_all saw {decoded} events, not {events}"
    );
    store.close().await;
    Ok(read)
}

/// How the catch-up log is written: appends of whole loops, some at a time.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Loops per append (each [`EVENTS_PER_LOOP`] events): one atomic multi-loop change.
    pub loops_per_append: u64,
    /// Appends in flight at once: the writer packs those waiting into one message.
    pub loaders: u64,
}

/// One append in flight at a time, so each message holds one append of 100 events (about
/// 35 KB): a log of moderate messages.
pub const MODERATE: LoadShape = LoadShape {
    loops_per_append: 25,
    loaders: 1,
};

/// Appends of 100 loops, eight in flight, so the writer packs messages up to its limit (just
/// under NATS's 1 MiB `max_payload`): the log a burst of large multi-loop changes writes.
pub const LARGEST: LoadShape = LoadShape {
    loops_per_append: 100,
    loaders: 8,
};

/// What the catch-up measured on one setup and one shape of log.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    /// Loading the stream (not judged; for the reader).
    pub load: Measurement,
    /// Batch messages in the stream, the genesis not counted.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// A new store opening on it (the median of the opens), or `None` when it did not open
    /// within [`OPEN_LIMIT`].
    pub open: Option<Measurement>,
}

/// How long a new store may take to open on the catch-up log before the benchmark gives up on
/// it: the start-up target for a whole replica at 1,000,000 events.
pub const OPEN_LIMIT: Duration = Duration::from_secs(60);

/// Loads `settings.catch_up` events into a new log in `shape`, then times a new store opening
/// on it `opens` times (each given [`OPEN_LIMIT`]); deletes the stream.
pub(super) async fn catch_up(
    setup: &Setup,
    settings: Settings,
    shape: LoadShape,
    opens: usize,
) -> Result<CatchUp> {
    let label = setup.label;
    let events = settings.catch_up;
    let stream = format!("BENCH_{label}_CATCHUP_{}", shape.loops_per_append);
    let client = setup.connect().await?;
    let js = Setup::jetstream(client.clone());
    eprintln!(
        "{label}: loading {events} events in appends of {} loops, {} at a time…",
        shape.loops_per_append, shape.loaders
    );
    let store = Arc::new(open_store(client, options(&stream, setup.replicas)).await?);
    let appends = events.div_ceil(shape.loops_per_append * EVENTS_PER_LOOP);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for loader in 0..shape.loaders {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            // Each loader makes its appends as it goes: a million events at once would take
            // far more memory than the store itself.
            for n in (loader..appends).step_by(usize::try_from(shape.loaders)?) {
                store
                    .append(load_request(n, events, shape.loops_per_append)?)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            joined.context("a loader task panicked")??;
        }
        anyhow::Ok(())
    })
    .await
    .context("loading the catch-up stream did not finish in time")??;
    let load = Measurement::since(events, start);
    ensure!(
        store.head() == events,
        "the loaded store holds {} events, not {events}",
        store.head()
    );
    close(store).await?;
    let info = js
        .get_stream(&stream)
        .await
        .with_context(|| format!("cannot find the stream {stream}"))?
        .get_info()
        .await
        .with_context(|| format!("cannot read the stream {stream}"))?;
    // The genesis is one message of a few bytes.
    let batches = info.state.messages.saturating_sub(1);
    eprintln!(
        "{label}: loaded in {:.1} s as {batches} messages of {} KB on average; a new store opens \
         on it {opens} times…",
        load.elapsed.as_secs_f64(),
        info.state.bytes / batches.max(1) / 1000
    );
    let mut opened = Vec::with_capacity(opens);
    for _ in 0..opens {
        let client = setup.connect().await?;
        let start = Instant::now();
        let attempt = tokio::time::timeout(
            OPEN_LIMIT,
            JetStreamStore::open(client, options(&stream, setup.replicas)),
        )
        .await;
        let Ok(store) = attempt else {
            // The open is abandoned here; its follower task may live on until the stream is
            // deleted below.
            eprintln!(
                "{label}: the store did not open within {} s",
                OPEN_LIMIT.as_secs()
            );
            break;
        };
        let store = store.with_context(|| format!("cannot open the store on {stream}"))?;
        let measured = Measurement::since(events, start);
        ensure!(
            store.head() == events,
            "the opened store holds {} events, not {events}",
            store.head()
        );
        store.close().await;
        eprintln!(
            "{label}: opened at {events} events in {:.2} s",
            measured.elapsed.as_secs_f64()
        );
        opened.push(measured);
    }
    delete_stream(&js, &stream).await?;
    Ok(CatchUp {
        load,
        batches,
        bytes: info.state.bytes,
        // One open that did not finish in time makes the figure a failure, whatever the others.
        open: (opened.len() == opens).then(|| store::median(opened.into_iter())),
    })
}

/// Append `n` (from 0) of the catch-up load of `events` events: up to `loops_per_append`
/// whole loops of [`EVENTS_PER_LOOP`] events each (a feedback, then acknowledgements), the
/// last loop of the load cut short when `events` ends inside it.
fn load_request(n: u64, events: u64, loops_per_append: u64) -> Result<AppendRequest> {
    let source = "urn:closeloop-bench:catch-up";
    let first_loop = n * loops_per_append;
    let end = events.min((first_loop + loops_per_append) * EVENTS_PER_LOOP);
    let loops = (first_loop..end.div_ceil(EVENTS_PER_LOOP))
        .map(|l| {
            let first = l * EVENTS_PER_LOOP;
            let events = (first..end.min(first + EVENTS_PER_LOOP))
                .map(|i| {
                    let id = format!("e{i}");
                    if i == first {
                        feedback(source, &id)
                    } else {
                        acknowledgement(source, &id)
                    }
                })
                .collect();
            Ok(LoopAppend {
                loop_id: LoopId::parse(&format!("bench-c-{l}"))?,
                expected: ExpectedVersion::NoLoop,
                events,
                requests: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(!loops.is_empty(), "append {n} is beyond the load's end");
    Ok(AppendRequest { loops })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_requests_cover_every_event_once_in_whole_loops() {
        let events = 2 * 100 * EVENTS_PER_LOOP + 6;
        let appends = events.div_ceil(100 * EVENTS_PER_LOOP);
        assert_eq!(appends, 3);
        let requests: Vec<AppendRequest> = (0..appends)
            .map(|n| load_request(n, events, 100).expect("a request"))
            .collect();
        let counts: Vec<usize> = requests.iter().map(AppendRequest::event_count).collect();
        assert_eq!(counts, [400, 400, 6]);
        let last = &requests[2].loops;
        assert_eq!(last.len(), 2);
        assert_eq!(last[1].events.len(), 2);
        assert_eq!(last[1].loop_id.as_str(), "bench-c-201");
        assert!(load_request(3, events, 100).is_err());
        assert_eq!(load_request(0, 7, 25).expect("a request").event_count(), 7);
    }
}
