//! Where `serve` keeps the log, the keys and the access log: all in the data directory
//! (`CLOSELOOP_STORE=sled`), or all in NATS JetStream (`CLOSELOOP_STORE=jetstream`), so that
//! any number of stateless replicas can share them.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use closeloop_access::{
    AccessLog, FileAccessLog, FileAccessLogOptions, NatsAccessLog, NatsAccessLogOptions, Retention,
};
use closeloop_keys::{KeyStore, MasterKey, NatsKeyStore, NatsKeyStoreOptions};
use closeloop_projections::PendingSnapshot;
use closeloop_store::{EventStore, KeyHandle, SledStore};
use closeloop_store_jetstream::{JetStreamStore, JetStreamStoreOptions};

/// How long a replica waits for NATS at start before it gives up (the supervisor restarts it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An event store `serve` owns, and closes when it stops.
pub trait ClosableStore: EventStore {
    /// Answers every append in hand and releases the store.
    fn close(self) -> impl Future<Output = ()> + Send;
}

impl ClosableStore for SledStore {
    fn close(self) -> impl Future<Output = ()> + Send {
        SledStore::close(self)
    }
}

impl ClosableStore for JetStreamStore {
    fn close(self) -> impl Future<Output = ()> + Send {
        JetStreamStore::close(self)
    }
}

/// The access log, whichever it is: closed at shutdown so its last entries are durable.
#[derive(Debug, Clone)]
pub enum Access {
    /// NDJSON files in the data directory.
    File(Arc<FileAccessLog>),
    /// A JetStream stream.
    Nats(Arc<NatsAccessLog>),
}

impl Access {
    /// The log, for the API.
    pub fn log(&self) -> Arc<dyn AccessLog> {
        match self {
            Access::File(log) => Arc::clone(log) as Arc<dyn AccessLog>,
            Access::Nats(log) => Arc::clone(log) as Arc<dyn AccessLog>,
        }
    }

    /// Makes the last entries durable.
    pub async fn close(&self) -> Result<(), closeloop_access::AccessLogError> {
        match self {
            Access::File(log) => log.close().await,
            Access::Nats(log) => log.close().await,
        }
    }
}

/// The three stores a replica works on.
pub struct Backends<S> {
    /// The event log.
    pub store: Arc<S>,
    /// Loops' data keys.
    pub keys: Arc<dyn KeyStore>,
    /// Who read personal data.
    pub access: Access,
    /// The NATS connection the JetStream backends share (`None` on sled): the read models'
    /// snapshot is shared through it too ([`super::snapshots`]).
    pub nats: Option<async_nats::Client>,
    /// The local snapshot of the read models, already being read while the stores opened
    /// (sled; `None`: read it when the models are loaded).
    pub snapshot: Option<PendingSnapshot>,
}

impl<S> std::fmt::Debug for Backends<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Opens the access log in `data_dir`.
pub async fn file_access(data_dir: &Path, retention_days: u32) -> anyhow::Result<Access> {
    let access_dir = FileAccessLog::dir_in(data_dir);
    let log = FileAccessLog::open(
        &access_dir,
        FileAccessLogOptions {
            retention: Retention::days(retention_days)?,
            ..FileAccessLogOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot open the access log in {}", access_dir.display()))?;
    tracing::info!(retention_days, "access log in {}", access_dir.display());
    Ok(Access::File(Arc::new(log)))
}

/// What the JetStream backends need besides the master key.
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    /// The NATS server(s), comma-separated.
    pub url: String,
    /// Copies of each stream: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// Days the access log keeps an entry.
    pub access_retention_days: u32,
}

/// The event log and the key store on JetStream, and the NATS connection they share.
pub struct JetStreamLog {
    /// The connection.
    pub client: async_nats::Client,
    /// Loops' data keys.
    pub keys: Arc<dyn KeyStore>,
    /// The event log, sealing under `keys`.
    pub store: JetStreamStore,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog").finish_non_exhaustive()
    }
}

/// Connects to NATS at `url` and opens the key store and the event log on JetStream, with
/// `replicas` copies of each stream it creates.
///
/// # Errors
/// When NATS cannot be reached within [`CONNECT_TIMEOUT`], the master key does not match the
/// key store's, or a stream cannot be opened or created.
pub async fn jetstream_log(
    url: &str,
    replicas: usize,
    master: &MasterKey,
) -> anyhow::Result<JetStreamLog> {
    let client = tokio::time::timeout(
        CONNECT_TIMEOUT,
        async_nats::ConnectOptions::new()
            .name("closeloop-store")
            .max_reconnects(None)
            .connect(closeloop_ingest::server_urls(url)),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "NATS did not answer within {} s at {url}: CLOSELOOP_STORE=jetstream keeps the log \
             there, so nothing can start without it; check CLOSELOOP_NATS_URL and that the \
             servers run with JetStream",
            CONNECT_TIMEOUT.as_secs(),
        )
    })?
    .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let keys = {
        let client = client.clone();
        let master = master.clone();
        let options = NatsKeyStoreOptions {
            replicas,
            ..NatsKeyStoreOptions::default()
        };
        tokio::task::spawn_blocking(move || NatsKeyStore::open(client, options, Some(&master)))
            .await
            .context("the key store's start-up task failed")?
            .context("cannot open the key store on JetStream")?
    };
    let keys: Arc<dyn KeyStore> = Arc::new(keys);
    let store = JetStreamStore::open(
        client.clone(),
        JetStreamStoreOptions {
            replicas,
            keys: Some(KeyHandle(Arc::clone(&keys))),
            ..JetStreamStoreOptions::default()
        },
    )
    .await
    .context("cannot open the event log on JetStream")?;
    Ok(JetStreamLog {
        client,
        keys,
        store,
    })
}

/// Connects to NATS and opens the log, the key store and the access log on JetStream.
///
/// # Errors
/// As [`jetstream_log`], and when the access log's stream cannot be opened or created.
pub async fn jetstream(
    settings: &JetStreamSettings,
    master: &MasterKey,
) -> anyhow::Result<Backends<JetStreamStore>> {
    let JetStreamLog {
        client,
        keys,
        store,
    } = jetstream_log(&settings.url, settings.replicas, master).await?;
    let access = NatsAccessLog::open(
        client.clone(),
        NatsAccessLogOptions {
            replicas: settings.replicas,
            retention: Retention::days(settings.access_retention_days)?,
            ..NatsAccessLogOptions::default()
        },
    )
    .await
    .context("cannot open the access log on JetStream")?;
    tracing::info!(
        url = %settings.url,
        replicas = settings.replicas,
        "event log, key store and access log on NATS JetStream"
    );
    Ok(Backends {
        store: Arc::new(store),
        keys,
        access: Access::Nats(Arc::new(access)),
        nats: Some(client),
        snapshot: None,
    })
}
