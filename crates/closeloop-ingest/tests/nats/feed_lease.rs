//! The outbound feed shared by replicas ([`FeedMode::Shared`]): two NATS sides over one store
//! take turns through the lease, and the feed stream holds every position once, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use closeloop_domain::LoopId;
use closeloop_ingest::streams::FEED_STREAM;
use closeloop_ingest::{FeedLease, FeedMode, IngestOptions, NatsHandle, SharedFeed};
use closeloop_store::{EventStore, SledStore, SledStoreOptions, write};
use closeloop_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Service, client, header, stream_messages, wait_for_messages, wait_until};

/// A short lease, so that a takeover after a crash takes about 1.5 s.
const TTL: Duration = Duration::from_secs(1);

/// Shared mode for `replica` over `url`.
fn shared_options(url: &str, dir: &std::path::Path, replica: &str, ttl: Duration) -> IngestOptions {
    IngestOptions {
        feed: FeedMode::Shared(SharedFeed {
            lease_ttl: ttl,
            ..SharedFeed::new(replica)
        }),
        ..Service::options(url, dir)
    }
}

/// Starts replica `replica` over `store` (a new one in `dir` when `None`).
async fn replica(
    url: &str,
    dir: &std::path::Path,
    name: &str,
    ttl: Duration,
    store: Option<Arc<SledStore>>,
) -> Service {
    Service::start_with(shared_options(url, dir, name, ttl), dir, store).await
}

fn lease(handle: &NatsHandle) -> FeedLease {
    handle
        .status(0)
        .feed_lease
        .expect("shared mode reports the lease")
}

/// Waits until `service` leads the feed.
async fn wait_until_leader(service: &Service) {
    wait_until("the replica leads the feed", async || {
        lease(&service.handle).leader
    })
    .await;
}

/// Records `count` feedback events straight into the store (as the HTTP API would).
async fn record(store: &SledStore, first: usize, count: usize) {
    for n in first..first + count {
        let event =
            closeloop_store::conformance::feedback("urn:closeloop:api", &format!("api-{n}"));
        let command = closeloop_domain::Command {
            loop_id: LoopId::parse(&format!("loop-api-{n}")).unwrap(),
            at: event.time,
            payload: event.payload,
        };
        let origin = write::Origin {
            source: event.source,
            event_id: event.event_id,
            request: None,
            actor: None,
        };
        write::record(store, command, origin, None).await.unwrap();
    }
}

/// Checks that the feed stream holds exactly the positions `first..=last`, each once, in
/// order, on consecutive sequences.
async fn assert_fed_once_in_order(js: &jetstream::Context, first: u64, last: u64) {
    let fed = wait_for_messages(js, FEED_STREAM, usize::try_from(last - first + 1).unwrap()).await;
    let positions: Vec<u64> = fed
        .iter()
        .map(|message| {
            header(&message.headers, "Closeloop-Position")
                .parse()
                .unwrap()
        })
        .collect();
    let expected: Vec<u64> = (first..=last).collect();
    assert_eq!(positions, expected, "every position once, in order");
    for message in &fed {
        assert_eq!(
            header(&message.headers, "Nats-Msg-Id"),
            header(&message.headers, "Closeloop-Position")
        );
    }
    let sequences: Vec<u64> = fed.iter().map(|message| message.sequence).collect();
    assert!(
        sequences.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "nothing else got onto the stream: {sequences:?}"
    );
}

/// The position in the shared checkpoint, as any NATS client reads it.
async fn shared_checkpoint(js: &jetstream::Context) -> Option<u64> {
    let kv = js.get_key_value("CLOSELOOP_FEED").await.ok()?;
    let value = kv.get("checkpoint").await.unwrap()?;
    let record: serde_json::Value = serde_json::from_slice(&value).unwrap();
    record["position"].as_u64()
}

/// Samples every few milliseconds who leads, until dropped: [`LeaderWatch::overlaps`] counts
/// the samples in which more than one replica did.
struct LeaderWatch {
    overlaps: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderWatch {
    fn start(handles: Vec<NatsHandle>) -> Self {
        let overlaps = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (overlaps, samples, stop) = (overlaps.clone(), samples.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let leaders = handles.iter().filter(|h| lease(h).leader).count();
                    if leaders > 1 {
                        overlaps.fetch_add(1, Ordering::Relaxed);
                    }
                    samples.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        Self {
            overlaps,
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling; the number of samples in which two replicas led at once.
    async fn overlaps(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        assert!(
            self.samples.load(Ordering::Relaxed) > 10,
            "the watch sampled"
        );
        self.overlaps.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn one_replica_publishes_and_another_continues_after_it_dies() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = client(&server).await;
    let a = replica(&server.url(), dir.path(), "replica-a", TTL, None).await;
    wait_until_leader(&a).await;
    let b = replica(
        &server.url(),
        dir.path(),
        "replica-b",
        TTL,
        Some(a.store.clone()),
    )
    .await;
    wait_until("b stands by for a", async || {
        lease(&b.handle).holder.as_deref() == Some("replica-a")
    })
    .await;

    let watch = LeaderWatch::start(vec![a.handle.clone(), b.handle.clone()]);
    record(&a.store, 0, 5).await;
    wait_for_messages(&js, FEED_STREAM, 5).await;
    // The one standing by shows the shared checkpoint, so /readyz reports the feed's lag.
    wait_until("b sees the shared checkpoint", async || {
        b.handle.status(5).feed_lag == 0
    })
    .await;
    assert_eq!(shared_checkpoint(&js).await, Some(5));
    assert_eq!(
        (lease(&a.handle).leader, lease(&b.handle).leader),
        (true, false)
    );
    assert_eq!(watch.overlaps().await, 0, "one leader at a time");

    // A dies without a word: its lease is neither renewed nor given up.
    let Service { store, task, .. } = a;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let died = tokio::time::Instant::now();
    record(&store, 5, 5).await;
    wait_until_leader(&b).await;
    let took_over = died.elapsed();
    // A's last renewal was at most ttl / 3 before it died, and b waits a margin of ttl / 4
    // past the end of that lease.
    assert!(took_over >= Duration::from_millis(800), "{took_over:?}");
    assert_fed_once_in_order(&js, 1, 10).await;
    wait_until("the shared checkpoint reaches 10", async || {
        shared_checkpoint(&js).await == Some(10)
    })
    .await;
    let status = b.handle.status(10);
    assert_eq!((status.feed_published_upto, status.feed_lag), (10, 0));
    b.stop().await;
}

#[tokio::test]
async fn a_leader_cut_off_from_nats_stops_publishing_before_another_takes_over() {
    let server = NatsServer::start();
    let proxy = Proxy::start(server.port()).await;
    let dir = tempfile::tempdir().unwrap();
    let js = client(&server).await;
    // A feed stream that forgets message ids quickly, so that only the fence can refuse what
    // a sends while cut off.
    let dedupe = Duration::from_millis(100);
    js.create_stream(jetstream::stream::Config {
        name: FEED_STREAM.to_owned(),
        subjects: vec!["closeloop.events.>".to_owned()],
        duplicate_window: dedupe,
        ..Default::default()
    })
    .await
    .unwrap();
    let a = replica(&proxy.url(), dir.path(), "replica-a", TTL, None).await;
    wait_until_leader(&a).await;
    let b = replica(
        &server.url(),
        dir.path(),
        "replica-b",
        TTL,
        Some(a.store.clone()),
    )
    .await;
    wait_until("b stands by for a", async || {
        lease(&b.handle).holder.as_deref() == Some("replica-a")
    })
    .await;
    record(&a.store, 0, 3).await;
    wait_for_messages(&js, FEED_STREAM, 3).await;

    let watch = LeaderWatch::start(vec![a.handle.clone(), b.handle.clone()]);
    // Bytes stop flowing both ways, and a's client does not know: what it sends now waits in
    // the proxy and reaches NATS only once the link heals, long after a's lease ended.
    proxy.cut();
    record(&a.store, 3, 200).await;
    wait_until_leader(&b).await;
    assert!(!lease(&a.handle).leader, "a stopped first");
    assert_fed_once_in_order(&js, 1, 203).await;

    // Past the duplicate window, a's stale messages are new to JetStream but for the fence.
    tokio::time::sleep(dedupe * 2).await;
    proxy.heal();
    // Whatever a sent while cut off has reached NATS by the time a reads the lease again
    // (one connection, in order), and the fence refused it.
    wait_until("a stands by for b", async || {
        lease(&a.handle).holder.as_deref() == Some("replica-b")
    })
    .await;
    record(&a.store, 203, 1).await;
    assert_fed_once_in_order(&js, 1, 204).await;
    assert_eq!(watch.overlaps().await, 0, "never two leaders at once");
    let store = b.stop().await;
    a.stop().await;
    assert_eq!(store.head(), 204);
}

#[tokio::test]
async fn a_new_leader_goes_on_from_the_shared_checkpoint_at_once_after_a_clean_stop() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = client(&server).await;
    // A lease far longer than the wait below: b must not need it to run out.
    let ttl = Duration::from_secs(30);
    let a = replica(&server.url(), dir.path(), "replica-a", ttl, None).await;
    wait_until_leader(&a).await;
    record(&a.store, 0, 5).await;
    wait_for_messages(&js, FEED_STREAM, 5).await;
    let store = a.stop().await;
    assert_eq!(shared_checkpoint(&js).await, Some(5), "saved on shutdown");

    // The feed's messages are gone (by age, or an operator purged them): only the shared
    // checkpoint says how far the feed got.
    js.get_stream(FEED_STREAM)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    record(&store, 5, 3).await;
    let started = tokio::time::Instant::now();
    let b = replica(&server.url(), dir.path(), "replica-b", ttl, Some(store)).await;
    wait_until_leader(&b).await;
    assert!(
        started.elapsed() < ttl / 4,
        "a gave its lease up on shutdown: {:?}",
        started.elapsed()
    );
    let fed = wait_for_messages(&js, FEED_STREAM, 3).await;
    let positions: Vec<String> = fed
        .iter()
        .map(|message| header(&message.headers, "Closeloop-Position"))
        .collect();
    assert_eq!(
        positions,
        ["6", "7", "8"],
        "nothing before the checkpoint again"
    );
    assert_eq!(
        fed.iter()
            .map(|message| message.sequence)
            .collect::<Vec<_>>(),
        [6, 7, 8]
    );
    b.stop().await;
    assert_eq!(stream_messages(&js, FEED_STREAM).await.len(), 3);
}

#[tokio::test]
async fn options_that_cannot_work_are_refused_at_start_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SledStore::open(&dir.path().join("store"), &SledStoreOptions::default()).unwrap());
    // Refused before any connection is tried: no server is needed.
    let url = "nats://127.0.0.1:1";
    for (replica, ttl, says) in [
        ("replica a", TTL, "host or pod name"),
        ("replica-a", Duration::from_millis(100), "must be between"),
    ] {
        let (_stop, stopping) = watch::channel(false);
        let options = shared_options(url, dir.path(), replica, ttl);
        let err = closeloop_ingest::start(Arc::clone(&store), options, stopping)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
    }
}

/// A TCP proxy in front of a NATS server that can stop carrying bytes, both ways, without
/// closing anything: to its clients the link looks alive, and nothing gets through.
struct Proxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, carrying) = watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(carry(client_read, server_write, carrying.clone()));
                tokio::spawn(carry(server_read, client_write, carrying.clone()));
            }
        });
        Self { addr, open, task }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops carrying bytes: what arrives waits in the proxy.
    fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Carries bytes again, those that waited first.
    fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while the proxy is open; holds both ends while it is cut.
async fn carry(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut open: watch::Receiver<bool>) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if open.wait_for(|open| *open).await.is_err()
            || to.write_all(&buffer[..read]).await.is_err()
        {
            return;
        }
    }
}
