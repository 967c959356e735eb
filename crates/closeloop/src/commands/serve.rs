//! `closeloop serve`: the HTTP API over the embedded store, until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use closeloop_api::AppState;
use closeloop_domain::{Calendar, Sla};
use closeloop_ingest::IngestOptions;
use closeloop_projections::{Projections, ProjectorOptions, run_projector};
use closeloop_store::EventStore;
use tokio::net::TcpListener;

use crate::config::{ServeArgs, StoreKind};
use crate::shutdown;

/// Tokens accepted by `serve --demo` when no others are configured.
const DEMO_TOKENS: &str = "staff:demo-staff-token,leader:demo-leader-token,auditor:demo-auditor-token,admin:demo-admin-token";

/// Runs the service until a shutdown signal, then drains requests and closes the store.
pub async fn run(data_dir: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.store == StoreKind::Jetstream {
        bail!(
            "CLOSELOOP_STORE=jetstream is not available in this release; use the embedded store \
             (CLOSELOOP_STORE=sled, the default)"
        );
    }
    let mut tokens = args.api_tokens;
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

    let store = Arc::new(super::open_store(data_dir)?);
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
    tracing::info!("closeloop listening on http://{local}");

    let sla = Sla {
        acknowledge_days: args.sla_ack_days,
        close_days: args.sla_close_days,
        calendar: Calendar::weekdays(),
    };
    let models = super::load_projections(data_dir, store.as_ref()).await;
    // Computes the due-date figures once now rather than in the first request.
    models.prepare(&sla);
    let projections = Arc::new(Projections::new(models));
    let (stop_projector, stopped) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(run_projector(
        Arc::clone(&store),
        Arc::clone(&projections),
        ProjectorOptions {
            snapshot_path: Some(super::snapshot_path(data_dir)),
            ..ProjectorOptions::default()
        },
        async move {
            let mut stopped = stopped;
            // An error means the sender is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));

    // One shutdown signal, heard by the HTTP server and the NATS workers alike.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown::signal().await;
        let _ = stop.send(true);
    });
    let nats = if args.nats_url == "off" {
        tracing::info!("NATS is off (CLOSELOOP_NATS_URL=off): no ingestion, no outbound feed");
        None
    } else {
        let options = IngestOptions {
            url: args.nats_url.clone(),
            feed_checkpoint: data_dir.join("feed.checkpoint"),
            replicas: usize::from(args.nats_replicas),
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
    });
    let mut http_stopping = stopping.clone();
    closeloop_api::serve(listener, closeloop_api::router(state), async move {
        let _ = http_stopping.wait_for(|stop| *stop).await;
    })
    .await
    .context("HTTP server failed")?;

    // Ingestion finishes the batch in hand (acks go out; messages pulled but not recorded
    // stay unacked and are redelivered), and the feed saves its checkpoint.
    if let Some(nats) = nats
        && let Err(err) = nats.task.await
    {
        tracing::error!(%err, "the NATS task failed");
    }

    // Every request has finished: stop the projector (it saves a snapshot), then close the
    // store, whose last handle this is.
    let _ = stop_projector.send(true);
    match projector.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(%err, "the projector stopped with an error"),
        Err(err) => tracing::error!(%err, "the projector task failed"),
    }
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().await,
        Err(_) => tracing::warn!("store still in use at shutdown; it flushes as it is dropped"),
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
