//! `closeloop serve`: the HTTP API over the embedded store, until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use closeloop_api::AppState;
use closeloop_domain::{Calendar, Sla};
use closeloop_ingest::IngestOptions;
use closeloop_projections::{Projections, ProjectorOptions, run_projector};
use tokio::net::TcpListener;

use super::backends::{self, Backends, ClosableStore};
use super::snapshots::{self, SnapshotOptions};
use crate::config::{MasterKeyArgs, ServeArgs, StoreKind};
use crate::shutdown;

/// Tokens accepted by `serve --demo` when no others are configured.
const DEMO_TOKENS: &str = "staff:demo-staff-token,leader:demo-leader-token,auditor:demo-auditor-token,admin:demo-admin-token";

/// The places of the demo data set, for `serve --demo` without a places file.
const DEMO_PLACES: &str = include_str!("demo-places.txt");
/// The organisation the demo pages speak for, for `serve --demo` without a name.
const DEMO_ORGANISATION: &str = "Northshire Health (demo)";

/// The organisation and places the pages show, from the flags (and the demo's, in demo mode).
fn site(args: &ServeArgs) -> anyhow::Result<closeloop_api::pages::Site> {
    let places = match (&args.places_file, args.demo) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the places file {}", path.display()))?;
            closeloop_api::pages::Site::parse_places(&text)
                .with_context(|| format!("the places file {}", path.display()))?
        }
        (None, true) => {
            closeloop_api::pages::Site::parse_places(DEMO_PLACES).context("the demo places")?
        }
        (None, false) => std::collections::BTreeMap::new(),
    };
    let organisation = match (&args.organisation, args.demo) {
        (Some(name), _) => {
            let name = name.trim();
            if name.is_empty()
                || name.len() > closeloop_api::pages::MAX_PLACE_NAME_BYTES
                || name.chars().any(char::is_control)
            {
                bail!(
                    "CLOSELOOP_ORGANISATION: give the organisation's name, 1 to {} bytes without control characters",
                    closeloop_api::pages::MAX_PLACE_NAME_BYTES
                );
            }
            name.to_owned()
        }
        (None, true) => DEMO_ORGANISATION.to_owned(),
        (None, false) => closeloop_api::pages::Site::default().organisation,
    };
    Ok(closeloop_api::pages::Site {
        organisation,
        places,
        feedback_url: args.feedback_url.clone(),
    })
}

/// Runs the service until a shutdown signal, then drains requests and closes the store.
pub async fn run(
    data_dir: &Path,
    master: &MasterKeyArgs,
    args: ServeArgs,
) -> anyhow::Result<ExitCode> {
    let input_limits = match args.input_limits.to_limits() {
        Ok(limits) => limits,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    let site = match site(&args) {
        Ok(site) => Arc::new(site),
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let master = match super::master_key_or_demo(master, args.demo) {
        Ok(Some(master)) => master,
        Ok(None) => {
            eprintln!("error: {}", super::NO_MASTER_KEY);
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    tracing::info!(
        master_key = %master.fingerprint(),
        "personal data is encrypted under the master key with this fingerprint"
    );
    let mut tokens = match args.api_tokens.parse() {
        Ok(tokens) => tokens,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.demo && tokens.is_empty() {
        tokens = DEMO_TOKENS.parse().context("demo tokens")?;
        tracing::warn!("demo mode: accepting the demo tokens {DEMO_TOKENS}");
    }
    if tokens.is_empty() {
        tracing::warn!("CLOSELOOP_API_TOKENS is empty: only the public endpoints can be used");
    }
    tracing::info!(
        ack_days = args.sla_ack_days,
        close_days = args.sla_close_days,
        "due dates in working days"
    );

    if let Some(contradiction) = args.backend.contradiction() {
        eprintln!("error: {contradiction}");
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    let context = Settings {
        input_limits,
        site,
        tokens,
        sla: Sla {
            acknowledge_days: args.sla_ack_days,
            close_days: args.sla_close_days,
            calendar: Calendar::weekdays(),
        },
    };
    match args.backend.store {
        StoreKind::Sled => {
            // Decoded on a thread of its own while the key store and the log open, checked
            // against the log once it is open.
            let snapshot = Projections::start_loading_snapshot(&super::snapshot_path(data_dir));
            let keys = match super::open_keys(data_dir, Some(&master)) {
                Ok(keys) => keys,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    return Ok(ExitCode::from(super::EXIT_CONFIG));
                }
            };
            let store = Arc::new(super::open_store(data_dir, Some(Arc::clone(&keys)))?);
            let access = backends::file_access(data_dir, args.access_log_retention_days).await?;
            let backends = Backends {
                store,
                keys,
                access,
                nats: None,
                snapshot: Some(snapshot),
            };
            run_on(data_dir, args, context, backends).await
        }
        StoreKind::Jetstream => {
            let settings = backends::JetStreamSettings {
                url: args.backend.nats_url.clone(),
                replicas: usize::from(args.backend.nats_replicas),
                access_retention_days: args.access_log_retention_days,
            };
            let backends = match backends::jetstream(&settings, &master).await {
                Ok(backends) => backends,
                Err(err)
                    if err.chain().any(|cause| {
                        matches!(
                            cause.downcast_ref::<closeloop_keys::KeyError>(),
                            Some(closeloop_keys::KeyError::WrongMasterKey)
                        )
                    }) =>
                {
                    eprintln!("error: {err:#}");
                    return Ok(ExitCode::from(super::EXIT_CONFIG));
                }
                Err(err) => return Err(err),
            };
            run_on(data_dir, args, context, backends).await
        }
    }
}

/// What `serve` worked out from its configuration before opening any store.
struct Settings {
    input_limits: closeloop_domain::Limits,
    site: Arc<closeloop_api::pages::Site>,
    tokens: closeloop_api::ApiTokens,
    sla: Sla,
}

/// Serves on opened stores until a shutdown signal, then drains requests and closes them.
async fn run_on<S: ClosableStore>(
    data_dir: &Path,
    args: ServeArgs,
    context: Settings,
    backends: Backends<S>,
) -> anyhow::Result<ExitCode> {
    let Settings {
        input_limits,
        site,
        tokens,
        sla,
    } = context;
    let Backends {
        store,
        keys,
        access,
        nats: shared_nats,
        snapshot,
    } = backends;
    // The read models' snapshot and the feed's checkpoint live here in both modes.
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    if args.demo && store.head() == 0 {
        tracing::info!("loading the demo data set…");
        let loops = super::demo::load(store.as_ref(), 5000, 2015, jiff::Timestamp::now()).await?;
        tracing::info!(loops, events = store.head(), "demo data loaded");
    }
    let listener = TcpListener::bind(args.http_addr).await.with_context(|| {
        format!(
            "cannot listen on {}; is another service using it?",
            args.http_addr
        )
    })?;
    let local = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!("bound http://{local}; loading the read models");

    super::install_legacy_public_ids(&keys);
    // On JetStream, a replica starts from the newest snapshot any replica shared, and shares
    // its own (sled: the local file only).
    let snapshots = shared_nats.map(|client| {
        let options = SnapshotOptions::with_replicas(usize::from(args.backend.nats_replicas));
        (snapshots::context(client, &options), options)
    });
    let models = match &snapshots {
        Some((js, options)) => {
            snapshots::load_projections(js, data_dir, store.as_ref(), options).await
        }
        None => match snapshot {
            Some(snapshot) => snapshot.checked(store.as_ref()).await,
            None => super::load_projections(data_dir, store.as_ref()).await,
        },
    };
    let (saved, saved_heard) = tokio::sync::watch::channel(models.checkpoint());
    let uploader = snapshots.map(|(js, options)| {
        tokio::spawn(snapshots::upload_task(
            js,
            Arc::downgrade(&store),
            super::snapshot_path(data_dir),
            saved_heard,
            options,
        ))
    });
    // Computes the due-date figures once now rather than in the first request (a snapshot
    // saved with them for this SLA already holds them); computed, they are saved at once.
    let figures_computed = models.prepare(&sla);
    let projections = Arc::new(Projections::new(models));
    let (stop_projector, stopped) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(run_projector(
        Arc::clone(&store),
        Arc::clone(&projections),
        ProjectorOptions {
            snapshot_path: Some(super::snapshot_path(data_dir)),
            saved: uploader.is_some().then_some(saved),
            snapshot_at_start: figures_computed,
            ..ProjectorOptions::default()
        },
        async move {
            let mut stopped = stopped;
            // An error means the sender is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));

    // One shutdown signal, heard by the HTTP server and the NATS workers alike. A signal sets
    // it, and so does a projector that stops on a failure.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            shutdown::signal().await;
            stop.send_replace(true);
        }
    });
    let projector_failed = Arc::new(AtomicBool::new(false));
    let projector = tokio::spawn(supervise_projector(
        projector,
        Arc::clone(&projections),
        stop_projector.subscribe(),
        Arc::clone(&stop),
        Arc::clone(&projector_failed),
    ));
    tokio::spawn(keep_erased_keys_destroyed(
        Arc::clone(&projections),
        Arc::clone(&keys),
        store.head(),
    ));
    let nats = if args.backend.nats_url == "off" {
        tracing::info!("NATS is off (CLOSELOOP_NATS_URL=off): no ingestion, no outbound feed");
        None
    } else {
        let options = IngestOptions {
            url: args.backend.nats_url.clone(),
            feed_checkpoint: data_dir.join("feed.checkpoint"),
            // Replicas on one shared log take turns at the feed, under a lease kept in NATS
            // with the feed's checkpoint; one process on its own store keeps it in a file.
            feed: match args.backend.store {
                StoreKind::Jetstream => closeloop_ingest::FeedMode::Shared(
                    closeloop_ingest::SharedFeed::new(replica_id(args.replica_id.as_deref())),
                ),
                StoreKind::Sled => closeloop_ingest::FeedMode::Local,
            },
            replicas: usize::from(args.backend.nats_replicas),
            input_limits,
            dead_letter_max_age: Duration::from_secs(
                u64::from(args.dlq_max_age_days) * 24 * 60 * 60,
            ),
            ..IngestOptions::default()
        };
        Some(closeloop_ingest::start(Arc::clone(&store), options, stopping.clone()).await?)
    };

    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        projections,
        sla,
        tokens,
        clock: closeloop_api::system_clock(),
        metrics: closeloop_api::metrics::install_recorder()
            .map_err(|err| tracing::warn!(%err, "metrics are disabled"))
            .ok(),
        ingest: nats.as_ref().map(|running| {
            Arc::new(crate::ingest_admin::NatsAdmin(running.handle.clone()))
                as Arc<dyn closeloop_api::IngestAdmin>
        }),
        limits: closeloop_api::Limits::default(),
        stories: closeloop_api::story_cache(),
        input_limits,
        keys: Some(keys),
        publish_requires_approval: args.publish_requires_approval,
        access: access.log(),
        site,
    });
    let mut http_stopping = stopping.clone();
    // Said only now: before this, a connection waits in the backlog unanswered.
    tracing::info!("closeloop listening on http://{local}");
    let server = closeloop_api::serve(listener, closeloop_api::router(state), async move {
        let _ = http_stopping.wait_for(|stop| *stop).await;
    });
    // Requests in flight get a few seconds to finish after the signal, then the server stops
    // anyway: shutdown must not wait for the request timeout.
    let mut draining = stopping.clone();
    tokio::select! {
        served = server => served.context("HTTP server failed")?,
        () = async {
            let _ = draining.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        } => tracing::warn!(
            seconds = DRAIN_DEADLINE.as_secs(),
            "requests were still running after the shutdown signal; stopping without them"
        ),
    }

    // No request is running any more: make the access log's last entries durable.
    if let Err(err) = access.close().await {
        tracing::error!(%err, "the access log's last entries could not be made durable");
    }

    // Ingestion finishes the batch in hand (acks go out; messages pulled but not recorded
    // stay unacked and are redelivered), and the feed saves its checkpoint.
    if let Some(nats) = nats {
        match tokio::time::timeout(PART_DEADLINE, nats.task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "the NATS task failed"),
            Err(_) => tracing::warn!(
                "the NATS workers did not stop in time; unacknowledged messages are redelivered"
            ),
        }
    }

    // Every request has finished: stop the projector (it saves a snapshot), then close the
    // store, whose last handle this is.
    let _ = stop_projector.send(true);
    let projector_stopped = tokio::time::timeout(PART_DEADLINE, projector).await.is_ok();
    if !projector_stopped {
        tracing::warn!(
            "the projector did not stop in time; the next start replays from its last snapshot"
        );
    }
    // On JetStream the projector's last snapshot then goes to the bucket, within
    // PART_DEADLINE too; the task holds no handle on the store.
    if let Some(uploader) = uploader.filter(|_| projector_stopped)
        && tokio::time::timeout(PART_DEADLINE, uploader).await.is_err()
    {
        tracing::warn!("the last snapshot upload did not finish in time");
    }
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().await,
        Err(_) => tracing::warn!("store still in use at shutdown; it flushes as it is dropped"),
    }
    if projector_failed.load(Ordering::SeqCst) {
        tracing::error!(
            "stopped because the projector failed; a restart rebuilds the read models from the log"
        );
        return Ok(ExitCode::FAILURE);
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Once the read models have caught up with the log as it stood at start, destroys the keys of
/// every erased loop whose keys are still there: an erasure is recorded before its keys are
/// destroyed, so a crash in between (or a key store restored from a backup older than an
/// erasure) leaves keys that must go.
async fn keep_erased_keys_destroyed(
    projections: Arc<Projections>,
    keys: Arc<dyn closeloop_keys::KeyStore>,
    head: u64,
) {
    if !projections
        .wait_for(head, Duration::from_secs(24 * 3600))
        .await
    {
        return;
    }
    let erased = match projections.try_read() {
        Ok(models) => models.erased_loops(),
        Err(_) => return,
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let mut redone = 0_usize;
        for loop_id in erased {
            if !keys.is_erased(loop_id.as_str()) {
                keys.destroy_loop(loop_id.as_str())?;
                redone += 1;
            }
        }
        Ok::<_, closeloop_keys::KeyError>(redone)
    })
    .await;
    match outcome {
        Ok(Ok(0)) => {}
        Ok(Ok(redone)) => tracing::warn!(
            loops = redone,
            "destroyed the keys of erased loops that still had them (an erasure interrupted, or a key store restored from an older backup)"
        ),
        Ok(Err(err)) => {
            tracing::error!(%err, "cannot destroy the keys of erased loops; restart to try again");
        }
        Err(err) => tracing::error!(%err, "the erasure check failed"),
    }
}

/// The configured replica id, else `<host name>-<process id>` with any character the id does
/// not allow replaced (the lease check refuses an invalid configured one, saying why).
fn replica_id(configured: Option<&str>) -> String {
    if let Some(id) = configured {
        return id.to_owned();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "replica".to_owned());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "replica".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// How long requests in flight may run on after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(4);
/// How long the NATS workers, then the projector, then (on JetStream) the last snapshot upload
/// may take to stop. With the drain and the store's own bound on closing a failed disk,
/// shutdown stays within about 10 s.
const PART_DEADLINE: Duration = Duration::from_secs(2);

/// Waits for the projector. If it ends before it was asked to — an error, or a panic — the
/// read models no longer follow the log: it marks them halted (so reads and `/readyz` say so
/// at once) and stops the service loudly, since a restart rebuilds them from the log.
async fn supervise_projector(
    projector: tokio::task::JoinHandle<Result<(), closeloop_projections::ProjectionsError>>,
    projections: Arc<Projections>,
    asked_to_stop: tokio::sync::watch::Receiver<bool>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    failed: Arc<AtomicBool>,
) {
    let outcome = projector.await;
    let asked = *asked_to_stop.borrow();
    match outcome {
        Ok(Ok(())) if asked => return,
        Ok(Ok(())) => tracing::error!("the projector stopped without being asked to"),
        Ok(Err(err)) => tracing::error!(%err, "the projector stopped with an error"),
        Err(err) => tracing::error!(%err, "the projector task failed"),
    }
    projections.halt();
    failed.store(true, Ordering::SeqCst);
    stop.send_replace(true);
}
