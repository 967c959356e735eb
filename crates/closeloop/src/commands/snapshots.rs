//! The read models' snapshot shared through a JetStream object store bucket, so that a new
//! replica on `CLOSELOOP_STORE=jetstream` starts from a recent snapshot and replays only the
//! tail of the log, whatever the length of its history.
//!
//! # The bucket
//! One object, [`OBJECT_NAME`], in the bucket [`DEFAULT_BUCKET`] (file storage, as many copies
//! as `CLOSELOOP_NATS_REPLICAS`; created by the first replica that needs it). Its metadata
//! holds the snapshot's checkpoint, the hash of the log entry there and the snapshot format
//! ([`SnapshotHeader`]), so a replica chooses without downloading anything. A snapshot holds
//! no plaintext personal data (issue 6), so the bucket holds none either.
//!
//! # At start: [`download_newest`]
//! Before the read models are loaded, a replica compares the bucket's snapshot with its own
//! file (`projections.snapshot` in the data directory). It downloads the bucket's one only
//! when it was built from **this** log (the store holds an entry at its checkpoint with the
//! same hash) and is further along than the local file (or the local file is missing or of
//! another log); the download goes to a temporary file that is renamed into place. Then
//! [`Projections::load_snapshot_checked`] loads the file as it always does, checking it against
//! the log once more, and the projector replays the tail. A snapshot larger than
//! [`SnapshotOptions::max_bytes`] or slower than [`SnapshotOptions::download_deadline`] is
//! abandoned: the replica starts from its own file, or from the log.
//!
//! # While running: [`upload_task`]
//! After the projector saves a snapshot ([`ProjectorOptions::saved`]), the task copies the file
//! into the bucket, at most once per [`SnapshotOptions::upload_every`] and once more after the
//! projector's last save at shutdown, and only when it is further along than the bucket's (or
//! the bucket's is of another log). A failure is logged and tried again later; it never stops
//! the service. Each replica uploads: the object is replaced by whichever is newest. When two
//! upload at once, the later metadata wins and the other's chunks are left behind: they are
//! purged as strays once [`SnapshotOptions::stray_chunks_after`] has passed. A download whose
//! object is replaced under it fails (its chunks are purged) and is tried once more.
//!
//! Every NATS call has a timeout ([`SnapshotOptions::request_timeout`]), and an upload or a
//! download as a whole has a deadline.
//!
//! [`Projections::load_snapshot_checked`]: closeloop_projections::Projections::load_snapshot_checked
//! [`ProjectorOptions::saved`]: closeloop_projections::ProjectorOptions::saved

use std::collections::HashMap;
use std::future::{Future, IntoFuture as _};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use async_nats::jetstream::{self, object_store, stream};
use closeloop_projections::{
    Projections, ReadModels, SNAPSHOT_HEADER_MAX_BYTES, SNAPSHOT_VERSION, SnapshotHeader,
};
use closeloop_store::{EventStore, Hash};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// The bucket replicas share snapshots in, unless told otherwise.
pub const DEFAULT_BUCKET: &str = "CLOSELOOP_SNAPSHOTS";
/// The one object in the bucket: the newest snapshot any replica uploaded.
pub const OBJECT_NAME: &str = "projections";

/// Metadata keys of the object: what [`SnapshotHeader`] says, and the snapshot format.
const META_CHECKPOINT: &str = "closeloop-checkpoint";
const META_HASH: &str = "closeloop-checkpoint-hash";
const META_FORMAT: &str = "closeloop-snapshot-format";

/// How many chunk subjects the clean-up of abandoned uploads looks at, at most.
const MAX_CHUNK_SUBJECTS: usize = 64;

/// Where the snapshots are shared, and the bounds on sharing them.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// The object store bucket.
    pub bucket: String,
    /// Copies of the bucket's stream when it is created: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// The largest snapshot uploaded or downloaded; a larger one is left where it is.
    pub max_bytes: u64,
    /// The longest any one NATS request may take.
    pub request_timeout: Duration,
    /// The longest a download may take before the replica starts without it.
    pub download_deadline: Duration,
    /// The longest an upload may take while the service runs.
    pub upload_deadline: Duration,
    /// The longest the last upload may take at shutdown.
    pub final_upload_deadline: Duration,
    /// At most one upload this often.
    pub upload_every: Duration,
    /// Chunks of an upload that never finished (a replica killed in the middle) are removed
    /// once they are this old.
    pub stray_chunks_after: Duration,
}

impl SnapshotOptions {
    /// The defaults, with `replicas` copies.
    #[must_use]
    pub fn with_replicas(replicas: usize) -> Self {
        Self {
            replicas,
            ..Self::default()
        }
    }
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            bucket: DEFAULT_BUCKET.to_owned(),
            replicas: 1,
            max_bytes: 4 << 30,
            request_timeout: Duration::from_secs(5),
            download_deadline: Duration::from_secs(120),
            upload_deadline: Duration::from_secs(120),
            final_upload_deadline: Duration::from_secs(2),
            upload_every: Duration::from_secs(60),
            stray_chunks_after: Duration::from_secs(3600),
        }
    }
}

/// A JetStream context whose requests time out after `options.request_timeout`.
#[must_use]
pub fn context(client: async_nats::Client, options: &SnapshotOptions) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(options.request_timeout)
        .build(client)
}

/// The opened bucket.
#[derive(Clone)]
pub struct Bucket {
    objects: object_store::ObjectStore,
    stream: stream::Stream,
    name: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Runs `future` for at most `limit`, naming `what` in its error.
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(anyhow!("{what}: {err}")),
        Err(_) => Err(anyhow!(
            "{what}: no answer within {:.1} s",
            limit.as_secs_f64()
        )),
    }
}

/// Opens the bucket, creating it when it is missing.
///
/// # Errors
/// When NATS does not answer in time, or the bucket cannot be created (is JetStream enabled?).
pub async fn open_bucket(
    js: &jetstream::Context,
    options: &SnapshotOptions,
) -> anyhow::Result<Bucket> {
    // The stream an object store bucket is: what `create_object_store` makes, as an existing
    // stream is taken as it is.
    let name = options.bucket.clone();
    let config = stream::Config {
        name: format!("OBJ_{name}"),
        description: Some(
            "Closeloop: the newest read-model snapshot, for starting replicas".to_owned(),
        ),
        subjects: vec![format!("$O.{name}.C.>"), format!("$O.{name}.M.>")],
        storage: stream::StorageType::File,
        num_replicas: options.replicas.max(1),
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..stream::Config::default()
    };
    let what = format!(
        "cannot open or create the snapshot bucket {name} (is JetStream enabled on the NATS \
         server?)"
    );
    let stream = within(
        options.request_timeout,
        &what,
        js.get_or_create_stream(config),
    )
    .await?;
    let objects = within(options.request_timeout, &what, js.get_object_store(&name)).await?;
    Ok(Bucket {
        objects,
        stream,
        name,
    })
}

/// A snapshot in the bucket, as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// What it was built from.
    pub header: SnapshotHeader,
    /// Its size in bytes.
    pub size: u64,
    /// The id of this version of the object.
    pub nuid: String,
}

impl Remote {
    /// The snapshot an object's info describes; `Err` says why it is not one this build uses.
    fn from_info(info: &object_store::ObjectInfo) -> Result<Self, String> {
        let get = |key: &str| {
            info.metadata
                .get(key)
                .ok_or_else(|| format!("its metadata has no {key}"))
        };
        let format: u8 = get(META_FORMAT)?
            .parse()
            .map_err(|_| "its snapshot format is not a number".to_owned())?;
        if format != SNAPSHOT_VERSION {
            return Err(format!(
                "it is in snapshot format {format}, this build reads {SNAPSHOT_VERSION}"
            ));
        }
        let checkpoint = get(META_CHECKPOINT)?
            .parse()
            .map_err(|_| "its checkpoint is not a number".to_owned())?;
        let mut hash = [0; 32];
        hex::decode_to_slice(get(META_HASH)?, &mut hash)
            .map_err(|_| "its checkpoint hash is not 64 hex characters".to_owned())?;
        Ok(Self {
            header: SnapshotHeader {
                checkpoint,
                checkpoint_hash: Hash(hash),
            },
            size: info.size as u64,
            nuid: info.nuid.clone(),
        })
    }
}

/// The metadata that describes a snapshot with `header`.
fn metadata(header: &SnapshotHeader) -> HashMap<String, String> {
    HashMap::from([
        (META_CHECKPOINT.to_owned(), header.checkpoint.to_string()),
        (META_HASH.to_owned(), hex::encode(header.checkpoint_hash.0)),
        (META_FORMAT.to_owned(), SNAPSHOT_VERSION.to_string()),
    ])
}

/// The bucket's snapshot object, if there is one.
async fn object_info(
    bucket: &Bucket,
    options: &SnapshotOptions,
) -> anyhow::Result<Option<object_store::ObjectInfo>> {
    let found = tokio::time::timeout(options.request_timeout, bucket.objects.info(OBJECT_NAME))
        .await
        .map_err(|_| {
            anyhow!(
                "the snapshot bucket {} did not answer within {:.1} s",
                bucket.name,
                options.request_timeout.as_secs_f64()
            )
        })?;
    match found {
        Ok(info) if info.deleted => Ok(None),
        Ok(info) => Ok(Some(info)),
        Err(err) if err.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
        Err(err) => Err(anyhow!(
            "cannot read the snapshot bucket {}: {err}",
            bucket.name
        )),
    }
}

/// How a snapshot relates to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogMatch {
    /// The log holds the entry it was built up to.
    Matches,
    /// Built up to an entry the log does not hold yet (or ever: another, longer log).
    Ahead,
    /// The log's entry at its checkpoint is another one: a snapshot of another log.
    Differs,
}

/// Whether `header` was built from `store`'s log.
async fn log_match<S: EventStore>(store: &S, header: &SnapshotHeader) -> anyhow::Result<LogMatch> {
    if header.checkpoint == 0 {
        return Ok(LogMatch::Matches);
    }
    if header.checkpoint > store.head() {
        return Ok(LogMatch::Ahead);
    }
    let entries = store
        .read_all(header.checkpoint - 1, 1)
        .await
        .context("cannot read the log entry a snapshot was built up to")?;
    Ok(if header.built_from(entries.first()) {
        LogMatch::Matches
    } else {
        LogMatch::Differs
    })
}

/// What [`download_newest`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The bucket's snapshot is now the local file.
    Downloaded {
        /// The position it was built up to.
        checkpoint: u64,
        /// Its size.
        bytes: u64,
        /// How long the download took.
        seconds: f64,
    },
    /// The bucket holds no snapshot.
    Empty,
    /// The local file is at least as far along as the bucket's snapshot.
    LocalIsNewer {
        /// The local file's checkpoint.
        local: u64,
        /// The bucket's.
        remote: u64,
    },
    /// The bucket's snapshot cannot be used, for the reason given.
    Unusable(String),
}

/// The header of the local snapshot file when it is one of this log's; `None` otherwise (no
/// file, unreadable, or of another log: the bucket's snapshot is better then).
async fn usable_local<S: EventStore>(store: &S, path: &Path) -> Option<SnapshotHeader> {
    let owned = path.to_owned();
    let header = match tokio::task::spawn_blocking(move || SnapshotHeader::read(&owned)).await {
        Ok(Ok(header)) => header?,
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot read the local snapshot's header");
            return None;
        }
        Err(err) => {
            tracing::warn!(%err, "reading the local snapshot's header failed");
            return None;
        }
    };
    match log_match(store, &header).await {
        Ok(LogMatch::Matches) => Some(header),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(%err, "cannot check the local snapshot against the log");
            None
        }
    }
}

/// Brings the bucket's snapshot to `local_path` when it was built from `store`'s log and is
/// further along than the local file (see the module docs). The local file is replaced
/// atomically, and only by a complete download whose header is the one the metadata promised.
///
/// # Errors
/// When NATS fails or does not answer in time, the download passes its deadline or its size,
/// or the file cannot be written: the local file is left as it was.
pub async fn download_newest<S: EventStore>(
    bucket: &Bucket,
    store: &S,
    local_path: &Path,
    options: &SnapshotOptions,
) -> anyhow::Result<Fetched> {
    let Some(info) = object_info(bucket, options).await? else {
        return Ok(Fetched::Empty);
    };
    let remote = match Remote::from_info(&info) {
        Ok(remote) => remote,
        Err(reason) => return Ok(Fetched::Unusable(reason)),
    };
    match log_match(store, &remote.header).await? {
        LogMatch::Matches if remote.header.checkpoint > 0 => {}
        LogMatch::Matches => {
            return Ok(Fetched::Unusable("it is of an empty log".to_owned()));
        }
        LogMatch::Ahead => {
            return Ok(Fetched::Unusable(format!(
                "it was built up to position {}, beyond the log's head {}",
                remote.header.checkpoint,
                store.head()
            )));
        }
        LogMatch::Differs => {
            return Ok(Fetched::Unusable(format!(
                "it was built from another log (the entry at position {} differs)",
                remote.header.checkpoint
            )));
        }
    }
    if let Some(local) = usable_local(store, local_path).await
        && local.checkpoint >= remote.header.checkpoint
    {
        return Ok(Fetched::LocalIsNewer {
            local: local.checkpoint,
            remote: remote.header.checkpoint,
        });
    }
    if remote.size > options.max_bytes {
        return Ok(Fetched::Unusable(format!(
            "it is {} bytes, more than the {} allowed",
            remote.size, options.max_bytes
        )));
    }
    let started = Instant::now();
    let partial = download_path(local_path);
    let downloaded = tokio::time::timeout(
        options.download_deadline,
        download(bucket, &remote, &partial, options),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow!(
            "the download took longer than {} s",
            options.download_deadline.as_secs()
        ))
    });
    if let Err(err) = downloaded {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(err);
    }
    rename_into_place(&partial, local_path).await?;
    Ok(Fetched::Downloaded {
        checkpoint: remote.header.checkpoint,
        bytes: remote.size,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where a download is written before it is renamed over the snapshot.
fn download_path(local_path: &Path) -> PathBuf {
    let mut name = local_path.file_name().unwrap_or_default().to_os_string();
    name.push(".download");
    local_path.with_file_name(name)
}

/// Downloads the object `remote` describes to `partial`, fsynced, checking its size and header.
async fn download(
    bucket: &Bucket,
    remote: &Remote,
    partial: &Path,
    options: &SnapshotOptions,
) -> anyhow::Result<()> {
    let mut object = within(
        options.request_timeout,
        "cannot open the snapshot in the bucket",
        bucket.objects.get(OBJECT_NAME),
    )
    .await?;
    if object.info().nuid != remote.nuid {
        bail!("the snapshot in the bucket was replaced while it was being chosen; try again");
    }
    let mut file = tokio::fs::File::create(partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut buffer = vec![0; 256 * 1024];
    let mut written = 0_u64;
    loop {
        // The whole download has a deadline; each read has the request timeout too, so that
        // a stalled stream is noticed as such.
        let read = tokio::time::timeout(options.request_timeout, object.read(&mut buffer))
            .await
            .map_err(|_| {
                anyhow!(
                    "the snapshot download stalled for {} s",
                    options.request_timeout.as_secs()
                )
            })?
            .context("cannot read the snapshot from the bucket")?;
        if read == 0 {
            break;
        }
        written += read as u64;
        if written > remote.size || written > options.max_bytes {
            bail!(
                "the snapshot in the bucket is longer than its {} bytes",
                remote.size
            );
        }
        file.write_all(&buffer[..read])
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
    }
    if written != remote.size {
        bail!(
            "the snapshot download ended after {written} of its {} bytes",
            remote.size
        );
    }
    file.sync_all()
        .await
        .with_context(|| format!("cannot fsync {}", partial.display()))?;
    drop(file);
    let owned = partial.to_owned();
    let header = tokio::task::spawn_blocking(move || SnapshotHeader::read(&owned))
        .await
        .context("reading the downloaded snapshot's header failed")??;
    if header != Some(remote.header) {
        bail!("the downloaded snapshot is not the one its metadata describes");
    }
    Ok(())
}

/// Renames `from` over `to` and fsyncs the directory, so that a crash leaves one or the other.
async fn rename_into_place(from: &Path, to: &Path) -> anyhow::Result<()> {
    tokio::fs::rename(from, to)
        .await
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
        .await
        .context("the directory fsync failed")?
        .context("cannot fsync the data directory")
}

/// The read models for a replica on JetStream: first [`download_newest`] (when the bucket's
/// snapshot is newer than the local one), then [`Projections::load_snapshot_checked`] on the
/// local file. Nothing here stops the replica from starting: without a usable snapshot it
/// rebuilds from the log.
pub async fn load_projections<S: EventStore>(
    js: &jetstream::Context,
    data_dir: &Path,
    store: &S,
    options: &SnapshotOptions,
) -> ReadModels {
    let path = super::snapshot_path(data_dir);
    let fetched = match open_bucket(js, options).await {
        Ok(bucket) => match download_newest(&bucket, store, &path, options).await {
            // Another replica's upload may have replaced the object during the download
            // (its chunks are purged then): the new one is worth one more try.
            Err(err) => {
                tracing::info!("the snapshot download failed ({err:#}); trying once more");
                download_newest(&bucket, store, &path, options).await
            }
            done => done,
        },
        Err(err) => Err(err),
    };
    let downloaded = match fetched {
        Ok(Fetched::Downloaded {
            checkpoint,
            bytes,
            seconds,
        }) => {
            tracing::info!(
                bucket = %options.bucket,
                checkpoint,
                bytes,
                seconds,
                "read models' snapshot downloaded from the JetStream bucket"
            );
            Some(checkpoint)
        }
        Ok(Fetched::Empty) => {
            tracing::info!(bucket = %options.bucket, "no snapshot in the JetStream bucket yet");
            None
        }
        Ok(Fetched::LocalIsNewer { local, remote }) => {
            tracing::info!(
                local,
                remote,
                "the local snapshot is as new as the JetStream bucket's; using it"
            );
            None
        }
        Ok(Fetched::Unusable(reason)) => {
            tracing::warn!(
                bucket = %options.bucket,
                "not using the snapshot in the JetStream bucket: {reason}"
            );
            None
        }
        Err(err) => {
            tracing::warn!(
                bucket = %options.bucket,
                "cannot take the snapshot from the JetStream bucket ({err:#}); starting from the \
                 local snapshot or the log"
            );
            None
        }
    };
    let models = Projections::load_snapshot_checked(&path, store).await;
    if let Some(checkpoint) = downloaded {
        if models.checkpoint() == checkpoint {
            tracing::info!(
                checkpoint,
                "read models loaded from the snapshot in the JetStream bucket; replaying the rest of the log"
            );
        } else {
            tracing::warn!(
                checkpoint,
                "the snapshot downloaded from the JetStream bucket was not used; the read models \
                 replay the log"
            );
        }
    }
    models
}

/// What one upload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uploaded {
    /// The local snapshot, built up to this position, is now the bucket's.
    Put(u64),
    /// The bucket's snapshot is at this position, at least as far along: nothing to do.
    BucketHasNewer(u64),
    /// No local snapshot of this log to upload.
    Nothing,
}

/// Copies the local snapshot into the bucket when it is further along than the bucket's.
async fn upload_once<S: EventStore>(
    bucket: &Bucket,
    store: &Weak<S>,
    local_path: &Path,
    options: &SnapshotOptions,
) -> anyhow::Result<Uploaded> {
    // The projector replaces the file by renaming a new one over it; this handle keeps
    // reading the version opened here.
    let mut file = match tokio::fs::File::open(local_path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Uploaded::Nothing),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot open {}", local_path.display()));
        }
    };
    let size = file
        .metadata()
        .await
        .with_context(|| format!("cannot read the size of {}", local_path.display()))?
        .len();
    if size > options.max_bytes {
        bail!(
            "the snapshot is {size} bytes, more than the {} allowed in the bucket",
            options.max_bytes
        );
    }
    let mut prefix = Vec::with_capacity(SNAPSHOT_HEADER_MAX_BYTES);
    (&mut file)
        .take(SNAPSHOT_HEADER_MAX_BYTES as u64)
        .read_to_end(&mut prefix)
        .await
        .with_context(|| format!("cannot read {}", local_path.display()))?;
    let header = SnapshotHeader::parse(&prefix)?;
    file.rewind()
        .await
        .with_context(|| format!("cannot read {}", local_path.display()))?;
    let Some(store) = store.upgrade() else {
        bail!("the event store is closed");
    };
    // Only a snapshot of this log goes up (the file left by an earlier run on another log
    // stays until the projector first saves over it).
    if header.checkpoint == 0 || log_match(store.as_ref(), &header).await? != LogMatch::Matches {
        return Ok(Uploaded::Nothing);
    }
    let current = object_info(bucket, options).await?;
    if let Some(info) = &current
        && let Ok(remote) = Remote::from_info(info)
        && remote.header.checkpoint >= header.checkpoint
        // One of another log is replaced whatever its position.
        && log_match(store.as_ref(), &remote.header).await? != LogMatch::Differs
    {
        return Ok(Uploaded::BucketHasNewer(remote.header.checkpoint));
    }
    drop(store);
    let meta = object_store::ObjectMetadata {
        name: OBJECT_NAME.to_owned(),
        description: Some(format!(
            "Closeloop read models up to log position {}",
            header.checkpoint
        )),
        metadata: metadata(&header),
        ..object_store::ObjectMetadata::default()
    };
    let mut body = file.take(size);
    let put = bucket.objects.put(meta, &mut body);
    let info = tokio::time::timeout(options.upload_deadline, put)
        .await
        .map_err(|_| {
            anyhow!(
                "the upload took longer than {} s",
                options.upload_deadline.as_secs()
            )
        })?
        .map_err(|err| anyhow!("cannot put the snapshot into the bucket: {err}"))?;
    if info.size as u64 != size {
        bail!(
            "the bucket took {} of the snapshot's {size} bytes",
            info.size
        );
    }
    if let Err(err) = remove_stray_chunks(bucket, &info.nuid, options).await {
        tracing::warn!(%err, "cannot clean up the snapshot bucket; will try again");
    }
    Ok(Uploaded::Put(header.checkpoint))
}

/// Purges the chunks of uploads that never finished (a replica killed in the middle): chunk
/// subjects other than the current object's whose first chunk is older than
/// [`SnapshotOptions::stray_chunks_after`]. A younger one may be another replica's upload in
/// progress, and is left alone.
async fn remove_stray_chunks(
    bucket: &Bucket,
    current_nuid: &str,
    options: &SnapshotOptions,
) -> anyhow::Result<usize> {
    let prefix = format!("$O.{}.C.", bucket.name);
    let subjects: Vec<(String, usize)> = within(options.request_timeout, "stream info", async {
        let pages = bucket
            .stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|err| anyhow!("{err}"))?;
        pages
            .take(MAX_CHUNK_SUBJECTS)
            .map_err(|err| anyhow!("{err}"))
            .try_collect()
            .await
    })
    .await?;
    let now = jiff::Timestamp::now().as_second();
    let too_old = i64::try_from(options.stray_chunks_after.as_secs()).unwrap_or(i64::MAX);
    let mut removed = 0;
    for (subject, _) in subjects {
        if subject.strip_prefix(&prefix) == Some(current_nuid) {
            continue;
        }
        let first = within(
            options.request_timeout,
            "reading a chunk",
            bucket.stream.direct_get_first_for_subject(subject.clone()),
        )
        .await?;
        if now.saturating_sub(first.time.unix_timestamp()) < too_old {
            continue;
        }
        within(
            options.request_timeout,
            "purging stray chunks",
            bucket.stream.purge().filter(subject.clone()).into_future(),
        )
        .await?;
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "removed the chunks of snapshot uploads that never finished"
        );
    }
    Ok(removed)
}

/// Copies each snapshot the projector saves into the bucket (see the module docs): at most
/// once per [`SnapshotOptions::upload_every`], retrying failures as often, and once more after
/// the projector's last save. Returns when the projector has stopped (`saved`'s sender is
/// gone) and that last upload is done or has passed [`SnapshotOptions::final_upload_deadline`].
///
/// `store` is only borrowed for checks against the log, so that the service can close the
/// store after this returns.
pub async fn upload_task<S: EventStore>(
    js: jetstream::Context,
    store: Weak<S>,
    local_path: PathBuf,
    mut saved: watch::Receiver<u64>,
    options: SnapshotOptions,
) {
    let mut bucket = None;
    let mut uploaded = 0_u64;
    // At start the local file may be ahead of the bucket's: compare them once.
    let mut pending = true;
    let mut next_try = tokio::time::Instant::now();
    loop {
        tokio::select! {
            changed = saved.changed() => {
                if changed.is_err() {
                    break;
                }
                if *saved.borrow_and_update() > uploaded {
                    pending = true;
                }
            }
            () = tokio::time::sleep_until(next_try), if pending => {
                next_try = tokio::time::Instant::now() + options.upload_every;
                let attempt = try_upload(&js, &mut bucket, &store, &local_path, &options);
                if let Some(position) = attempt.await {
                    uploaded = uploaded.max(position);
                    pending = false;
                }
            }
        }
    }
    if pending || *saved.borrow() > uploaded {
        let last = try_upload(&js, &mut bucket, &store, &local_path, &options);
        if tokio::time::timeout(options.final_upload_deadline, last)
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = options.final_upload_deadline.as_secs_f64(),
                "the last snapshot did not reach the JetStream bucket in time; new replicas \
                 start from the one before"
            );
        }
    }
}

/// One upload, opening the bucket first if need be; the position the bucket is now at, or
/// `None` after a failure (logged).
async fn try_upload<S: EventStore>(
    js: &jetstream::Context,
    bucket: &mut Option<Bucket>,
    store: &Weak<S>,
    local_path: &Path,
    options: &SnapshotOptions,
) -> Option<u64> {
    let opened = match bucket {
        Some(opened) => opened,
        None => match open_bucket(js, options).await {
            Ok(opened) => bucket.insert(opened),
            Err(err) => {
                tracing::warn!(
                    "{err:#}; the read models' snapshot is not shared, will try again in {} s",
                    options.upload_every.as_secs()
                );
                return None;
            }
        },
    };
    let started = Instant::now();
    match upload_once(opened, store, local_path, options).await {
        Ok(Uploaded::Put(checkpoint)) => {
            tracing::info!(
                bucket = %options.bucket,
                checkpoint,
                seconds = started.elapsed().as_secs_f64(),
                "read models' snapshot copied to the JetStream bucket"
            );
            Some(checkpoint)
        }
        Ok(Uploaded::BucketHasNewer(checkpoint)) => Some(checkpoint),
        Ok(Uploaded::Nothing) => Some(0),
        Err(err) => {
            tracing::warn!(
                bucket = %options.bucket,
                "cannot copy the read models' snapshot to the JetStream bucket ({err:#}); will \
                 try again in {} s",
                options.upload_every.as_secs()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use closeloop_domain::LoopId;
    use closeloop_store::conformance::feedback;
    use closeloop_store::{AppendRequest, ExpectedVersion, SledStore, SledStoreOptions};
    use closeloop_testkit::NatsServer;

    use super::*;

    /// A sled store in `dir` holding `loops` loops whose event ids start with `tag`: two
    /// stores with different tags have logs of the same length and different entries.
    async fn store(dir: &Path, tag: &str, loops: usize) -> Arc<SledStore> {
        let store = SledStore::open(dir, &SledStoreOptions::default()).expect("open store");
        for n in 0..loops {
            let loop_id = LoopId::parse(&format!("{tag}-{n}")).expect("loop id");
            let event = feedback("urn:test:snapshots", &format!("{tag}-{n}"));
            store
                .append(AppendRequest::single(
                    loop_id,
                    ExpectedVersion::Any,
                    vec![event],
                ))
                .await
                .expect("append");
        }
        Arc::new(store)
    }

    /// Writes the read models of `store`'s whole log to `path`.
    async fn save_snapshot(store: &SledStore, path: &Path) {
        let models = closeloop_projections::rebuild(store, 1000, |_, _| {})
            .await
            .expect("rebuild");
        Projections::new(models).save_snapshot(path).expect("save");
    }

    /// Bounds that keep a test short.
    fn options() -> SnapshotOptions {
        SnapshotOptions {
            request_timeout: Duration::from_secs(2),
            download_deadline: Duration::from_secs(20),
            upload_deadline: Duration::from_secs(20),
            final_upload_deadline: Duration::from_secs(10),
            ..SnapshotOptions::default()
        }
    }

    async fn connect(server: &NatsServer) -> jetstream::Context {
        let client = async_nats::connect(server.url()).await.expect("connect");
        context(client, &options())
    }

    /// The checkpoint the bucket's object says it holds.
    async fn bucket_checkpoint(bucket: &Bucket) -> Option<u64> {
        object_info(bucket, &options())
            .await
            .expect("object info")
            .map(|info| Remote::from_info(&info).expect("ours").header.checkpoint)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_goes_up_once_and_a_new_replica_takes_it_only_when_newer() {
        let server = NatsServer::start();
        let js = connect(&server).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = store(&dir.path().join("log"), "a", 30).await;
        let first = dir.path().join("first.snapshot");
        let fresh = dir.path().join("fresh").join("projections.snapshot");
        std::fs::create_dir_all(fresh.parent().expect("parent")).expect("mkdir");
        let options = options();
        let bucket = open_bucket(&js, &options).await.expect("bucket");
        // Nothing there yet.
        assert_eq!(
            download_newest(&bucket, log.as_ref(), &fresh, &options)
                .await
                .expect("download"),
            Fetched::Empty
        );

        save_snapshot(&log, &first).await;
        let weak = Arc::downgrade(&log);
        assert_eq!(
            upload_once(&bucket, &weak, &first, &options)
                .await
                .expect("upload"),
            Uploaded::Put(30)
        );
        // The same again is not uploaded twice.
        assert_eq!(
            upload_once(&bucket, &weak, &first, &options)
                .await
                .expect("upload"),
            Uploaded::BucketHasNewer(30)
        );

        // A replica with no snapshot takes it, byte for byte, and it loads against the log.
        let fetched = download_newest(&bucket, log.as_ref(), &fresh, &options)
            .await
            .expect("download");
        assert!(
            matches!(fetched, Fetched::Downloaded { checkpoint: 30, bytes, .. } if bytes == std::fs::metadata(&first).expect("size").len()),
            "{fetched:?}"
        );
        assert_eq!(
            std::fs::read(&fresh).expect("read"),
            std::fs::read(&first).expect("read")
        );
        assert!(
            !download_path(&fresh).exists(),
            "the download was renamed into place"
        );
        let loaded = Projections::load_snapshot_checked(&fresh, log.as_ref()).await;
        assert_eq!((loaded.checkpoint(), loaded.loop_count()), (30, 30));

        // Once it has it, the bucket's is not newer: nothing is downloaded.
        assert_eq!(
            download_newest(&bucket, log.as_ref(), &fresh, &options)
                .await
                .expect("download"),
            Fetched::LocalIsNewer {
                local: 30,
                remote: 30
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_of_another_log_is_neither_downloaded_nor_kept_in_the_bucket() {
        let server = NatsServer::start();
        let js = connect(&server).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = store(&dir.path().join("ours"), "ours", 12).await;
        let theirs = store(&dir.path().join("theirs"), "theirs", 12).await;
        let options = options();
        let bucket = open_bucket(&js, &options).await.expect("bucket");
        let their_file = dir.path().join("theirs.snapshot");
        save_snapshot(&theirs, &their_file).await;
        let uploaded = upload_once(&bucket, &Arc::downgrade(&theirs), &their_file, &options).await;
        assert_eq!(uploaded.expect("upload"), Uploaded::Put(12));

        // Same checkpoint, another entry there: not downloaded, the local file stays absent,
        // and the models start from the log.
        let local = dir.path().join("projections.snapshot");
        let fetched = download_newest(&bucket, ours.as_ref(), &local, &options)
            .await
            .expect("download");
        assert!(
            matches!(&fetched, Fetched::Unusable(reason) if reason.contains("another log")),
            "{fetched:?}"
        );
        assert!(!local.exists());
        assert_eq!(
            Projections::load_snapshot_checked(&local, ours.as_ref())
                .await
                .checkpoint(),
            0
        );

        // A foreign file left in our data directory is not shared either...
        std::fs::copy(&their_file, &local).expect("copy");
        let weak = Arc::downgrade(&ours);
        assert_eq!(
            upload_once(&bucket, &weak, &local, &options)
                .await
                .expect("upload"),
            Uploaded::Nothing
        );
        // ...while our own replaces theirs, though it is not further along.
        save_snapshot(&ours, &local).await;
        assert_eq!(
            upload_once(&bucket, &weak, &local, &options)
                .await
                .expect("upload"),
            Uploaded::Put(12)
        );
        let fetched = download_newest(&bucket, ours.as_ref(), &dir.path().join("new"), &options)
            .await
            .expect("download");
        assert!(
            matches!(fetched, Fetched::Downloaded { checkpoint: 12, .. }),
            "{fetched:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_beyond_the_size_limit_stays_where_it_is() {
        let server = NatsServer::start();
        let js = connect(&server).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = store(&dir.path().join("log"), "a", 20).await;
        let file = dir.path().join("projections.snapshot");
        save_snapshot(&log, &file).await;
        let size = std::fs::metadata(&file).expect("size").len();
        let roomy = options();
        let bucket = open_bucket(&js, &roomy).await.expect("bucket");
        let tight = SnapshotOptions {
            max_bytes: size - 1,
            ..options()
        };
        let weak = Arc::downgrade(&log);
        let err = upload_once(&bucket, &weak, &file, &tight)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err:#}");
        assert_eq!(bucket_checkpoint(&bucket).await, None);

        upload_once(&bucket, &weak, &file, &roomy)
            .await
            .expect("upload");
        let target = dir.path().join("other.snapshot");
        let fetched = download_newest(&bucket, log.as_ref(), &target, &tight)
            .await
            .expect("download");
        assert!(
            matches!(&fetched, Fetched::Unusable(reason) if reason.contains("more than")),
            "{fetched:?}"
        );
        assert!(!target.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_task_uploads_after_the_last_save_and_stops_with_the_projector() {
        let server = NatsServer::start();
        let js = connect(&server).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = store(&dir.path().join("log"), "a", 8).await;
        let file = dir.path().join("projections.snapshot");
        let options = SnapshotOptions {
            // Only the start and the end can upload within this test.
            upload_every: Duration::from_secs(3600),
            ..options()
        };
        let (saved, heard) = watch::channel(0);
        let task = tokio::spawn(upload_task(
            js.clone(),
            Arc::downgrade(&log),
            file.clone(),
            heard,
            options.clone(),
        ));
        // The projector's last save, then it stops.
        save_snapshot(&log, &file).await;
        saved.send_replace(8);
        drop(saved);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the task stops once the projector has")
            .expect("task");
        let bucket = open_bucket(&js, &options).await.expect("bucket");
        assert_eq!(bucket_checkpoint(&bucket).await, Some(8));
    }

    /// The chunk subjects in the bucket.
    async fn chunk_subjects(bucket: &Bucket) -> Vec<String> {
        let mut subjects: Vec<String> = bucket
            .stream
            .info_with_subjects(format!("$O.{}.C.>", bucket.name))
            .await
            .expect("stream info")
            .map_ok(|(subject, _)| subject)
            .try_collect()
            .await
            .expect("subjects");
        subjects.sort();
        subjects
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_of_an_upload_that_never_finished_are_removed_once_old() {
        let server = NatsServer::start();
        let js = connect(&server).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = store(&dir.path().join("log"), "a", 5).await;
        let file = dir.path().join("projections.snapshot");
        save_snapshot(&log, &file).await;
        let bucket = open_bucket(&js, &options()).await.expect("bucket");
        // A replica killed in the middle of an upload leaves chunks no object points to.
        let stray = format!("$O.{}.C.abandoned", bucket.name);
        js.publish(stray.clone(), "half a snapshot".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        let weak = Arc::downgrade(&log);

        // Young, it may be another replica's upload in progress: left alone.
        upload_once(&bucket, &weak, &file, &options())
            .await
            .expect("upload");
        assert!(chunk_subjects(&bucket).await.contains(&stray));

        // Old, it goes; the current object's chunks stay.
        let eager = SnapshotOptions {
            stray_chunks_after: Duration::ZERO,
            ..options()
        };
        log.append(AppendRequest::single(
            LoopId::parse("a-late").expect("loop id"),
            ExpectedVersion::Any,
            vec![feedback("urn:test:snapshots", "a-late")],
        ))
        .await
        .expect("append");
        save_snapshot(&log, &file).await;
        assert_eq!(
            upload_once(&bucket, &weak, &file, &eager)
                .await
                .expect("upload"),
            Uploaded::Put(6)
        );
        let info = object_info(&bucket, &eager)
            .await
            .expect("info")
            .expect("object");
        assert_eq!(
            chunk_subjects(&bucket).await,
            [format!("$O.{}.C.{}", bucket.name, info.nuid)]
        );
        let fetched = download_newest(&bucket, log.as_ref(), &dir.path().join("new"), &eager)
            .await
            .expect("download");
        assert!(
            matches!(fetched, Fetched::Downloaded { checkpoint: 6, .. }),
            "{fetched:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_bucket_fails_within_the_request_timeout() {
        let mut server = NatsServer::start();
        let js = connect(&server).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = store(&dir.path().join("log"), "a", 3).await;
        let options = SnapshotOptions {
            request_timeout: Duration::from_millis(500),
            ..options()
        };
        let bucket = open_bucket(&js, &options).await.expect("bucket");
        server.stop();
        let started = Instant::now();
        let local = dir.path().join("projections.snapshot");
        let err = download_newest(&bucket, log.as_ref(), &local, &options)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("did not answer"), "{err:#}");
        // The start goes on without it.
        let started = Instant::now();
        let models = load_projections(&js, dir.path(), log.as_ref(), &options).await;
        assert_eq!(models.checkpoint(), 0);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
