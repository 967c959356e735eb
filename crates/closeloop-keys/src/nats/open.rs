//! Opening: the stream, the bulk load into the mirror by the consumer that then keeps following
//! the stream, the meta record (created for a new store), the master key check, and finishing
//! what a crash left undone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;

use super::format::{MetaRecord, Record};
use super::io::{KeyStream, Published, within};
use super::subjects::META;
use super::{Inner, NatsKeyStoreOptions, State};
use crate::random::random_bytes;
use crate::secrets::{StoreSecrets, UnwrapSecretsError};
use crate::{KeyError, MasterKey};

/// How long the consumer that follows the stream waits before it starts again after a failure.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// How often (in messages) the bulk load reports progress to the opener.
const PROGRESS_EVERY: u64 = 1024;

pub(super) async fn open(
    client: async_nats::Client,
    options: &NatsKeyStoreOptions,
    master: Option<&MasterKey>,
) -> Result<Arc<Inner>, KeyError> {
    let stream = KeyStream::open(client, options, master.is_some()).await?;
    let inner = Arc::new(Inner {
        stream: stream.clone(),
        state: Mutex::new(State::new(master)),
        progress: tokio::sync::Notify::new(),
    });
    let Some(stream) = stream else {
        tracing::info!(
            stream = options.stream,
            "no key stream yet: opened an empty sealed key store"
        );
        return Ok(inner);
    };
    let (_, messages) = stream.state().await?;
    tokio::spawn(follow(Arc::clone(&inner), stream.clone()));
    if messages > 0 {
        wait_for_bulk_load(&inner, stream.timeout()).await;
    }
    inner.catch_up().await?;
    if let Some(problem) = inner.lock().problem.take() {
        return Err(KeyError::corrupt(format!(
            "stream {}: {problem}",
            stream.name()
        )));
    }
    if inner.lock().mirror.meta().is_none()
        && let Some(master) = master
    {
        create_meta(&inner, &stream, master).await?;
    }
    let Some(master) = master else {
        tracing::info!(
            stream = stream.name(),
            "key store opened sealed (no master key): personal data stays encrypted"
        );
        return Ok(inner);
    };
    unlock(&inner, master, stream.name())?;
    finish_leftovers(&inner).await?;
    tracing::info!(
        stream = stream.name(),
        master_key = %master.fingerprint(),
        "key store opened"
    );
    Ok(inner)
}

/// Waits while the consumer that follows the stream loads it in bulk, for as long as it makes
/// progress: at most one timeout without any. Whatever it has not loaded then, the reads that
/// follow settle.
async fn wait_for_bulk_load(inner: &Inner, timeout: Duration) {
    let mut seen = inner.lock().mirror.applied();
    loop {
        let progressed = inner.progress.notified();
        tokio::pin!(progressed);
        progressed.as_mut().enable();
        {
            let state = inner.lock();
            if state.follower_caught_up {
                return;
            }
            seen = state.mirror.applied().max(seen);
        }
        if tokio::time::timeout(timeout, progressed).await.is_err()
            && inner.lock().mirror.applied() <= seen
        {
            tracing::warn!(
                "the consumer loading the key stream made no progress; reading the rest from the stream leader"
            );
            return;
        }
    }
}

/// Creates the store: fresh secrets under `master`, published only if nobody else created the
/// store meanwhile (else theirs is used).
async fn create_meta(
    inner: &Inner,
    stream: &KeyStream,
    master: &MasterKey,
) -> Result<(), KeyError> {
    if inner.lock().mirror.live_count() > 0 {
        return Err(KeyError::corrupt(format!(
            "stream {} holds keys but no meta record (secrets and master key check); restore it from a backup",
            stream.name()
        )));
    }
    let record = Record::Meta(MetaRecord {
        epoch: new_epoch(0),
        secrets: StoreSecrets::generate().wrap(master),
    });
    let payload = record.encode();
    let applied = inner.lock().mirror.applied();
    match stream
        .publish(META.to_owned(), payload.clone(), applied, Some(0))
        .await?
    {
        Published::At(seq) => {
            inner.applied_own(seq, META, &payload).await?;
            tracing::info!(
                stream = stream.name(),
                master_key = %master.fingerprint(),
                "created a new key store"
            );
        }
        Published::Conflict => {
            // Another opener created the store first, or wrote meanwhile: read what it wrote.
            inner.catch_up().await?;
            if inner.lock().mirror.meta().is_none() {
                return Err(super::io::unavailable(
                    stream.name(),
                    "creating the key store",
                    "another process keeps writing to the stream but no store was created",
                ));
            }
        }
    }
    Ok(())
}

/// A fresh random epoch, never 0 and never `current`.
pub(super) fn new_epoch(current: u64) -> u64 {
    loop {
        let epoch = u64::from_le_bytes(random_bytes());
        if epoch != 0 && epoch != current {
            return epoch;
        }
    }
}

/// Checks `master` against the meta record in force and unwraps the secrets.
fn unlock(inner: &Inner, master: &MasterKey, stream: &str) -> Result<(), KeyError> {
    let mut state = inner.lock();
    let meta = state.mirror.meta().ok_or_else(|| {
        KeyError::corrupt(format!(
            "stream {stream} holds no meta record after opening"
        ))
    })?;
    let secrets = meta
        .record
        .secrets
        .unwrap(master)
        .map_err(|error| match error {
            UnwrapSecretsError::WrongMasterKey => KeyError::WrongMasterKey,
            UnwrapSecretsError::Damaged => KeyError::corrupt(format!(
                "stream {stream}: the master key matches the meta record's check value but a store secret does not unwrap"
            )),
        })?;
    state.secrets = Some(secrets);
    Ok(())
}

/// Erases what a crash or an interrupted rotation left: messages of unfinished erasures, meta
/// records and key versions a finished rotation superseded.
async fn finish_leftovers(inner: &Inner) -> Result<(), KeyError> {
    let leftovers = {
        let state = inner.lock();
        let epoch = state
            .mirror
            .meta()
            .map(|meta| meta.record.epoch)
            .unwrap_or_default();
        state.mirror.all_garbage(epoch)
    };
    if !leftovers.is_empty() {
        inner.erase_all(&leftovers).await?;
        tracing::info!(
            messages = leftovers.len(),
            "erased key store messages left by an interrupted erasure or rotation"
        );
    }
    Ok(())
}

/// Follows the stream for as long as the store lives: an ordered consumer from just after what
/// the mirror applied, started again after any failure.
async fn follow(inner: Arc<Inner>, stream: KeyStream) {
    loop {
        let start = inner.lock().mirror.applied() + 1;
        match follow_from(&inner, &stream, start).await {
            Ok(()) => tracing::debug!("the key stream's consumer ended; starting it again"),
            Err(problem) => tracing::warn!(
                stream = stream.name(),
                %problem,
                "following the key stream failed; starting again shortly (reads may lag other processes' writes meanwhile)"
            ),
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
}

async fn follow_from(inner: &Inner, stream: &KeyStream, start: u64) -> Result<(), String> {
    let config = OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        ..OrderedConfig::default()
    };
    let consumer = within(
        stream.timeout(),
        stream.name(),
        "creating the key stream's consumer",
        stream.stream().create_consumer(config),
    )
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let mut messages = within(
        stream.timeout(),
        stream.name(),
        "starting the key stream's consumer",
        consumer.messages(),
    )
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    // No timeout on the wait for the next message: waiting for other processes' writes is the
    // point, and the consumer's heartbeats notice a server that went away.
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        inner.apply(seq, message.subject.as_str(), &message.payload);
        if pending == 0 {
            inner.lock().follower_caught_up = true;
            inner.progress.notify_waiters();
        } else if seq % PROGRESS_EVERY == 0 {
            inner.progress.notify_waiters();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_fresh_and_never_zero() {
        for _ in 0..100 {
            let epoch = new_epoch(5);
            assert_ne!(epoch, 0);
            assert_ne!(epoch, 5);
        }
    }
}
