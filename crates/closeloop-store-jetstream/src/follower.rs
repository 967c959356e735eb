//! The follower: reads the log stream from where this replica stands, through an ordered
//! consumer, and applies every message — the history at start-up, then other replicas' writes
//! as they come.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use bytes::Bytes;
use closeloop_store::StoreError;
use futures::StreamExt;

use crate::Shared;
use crate::log::Applied;

/// How many messages the follower asks for at a time: at most 16 MiB of batches at the
/// default 1 MiB `max_payload`.
const MAX_PULL_MESSAGES: i64 = 16;

/// How long the follower waits before it opens a new consumer after losing one.
const RETRY: Duration = Duration::from_millis(500);

/// How long the consumer may deliver nothing before the follower asks the stream whether it
/// holds messages this replica lacks; when two such checks in a row find some (the first may
/// see a message the consumer is about to deliver), the consumer is taken for stuck and
/// replaced (`closeloop-bench jetstream` once saw a new store's open wait 30 s at message 352
/// of 6,077 on a busy machine).
const QUIET: Duration = Duration::from_secs(5);

/// Follows the stream until the task is aborted or the store stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        if shared.stopped().is_some() {
            return;
        }
        if let Err(err) = follow(&shared).await {
            if let StoreError::Corrupt { .. } = err {
                shared.stop(err.to_string());
                return;
            }
            tracing::warn!(%err, "lost the log stream; following it again");
            metrics::counter!("closeloop_store_follower_restarts_total").increment(1);
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Reads from the next message this replica lacks until the consumer fails.
async fn follow(shared: &Shared) -> Result<(), StoreError> {
    let start = shared.log().applied + 1;
    let backend = |err: &dyn std::fmt::Display| {
        StoreError::Backend(format!("cannot follow the log stream: {err}"))
    };
    let consumer = shared
        .stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            // A batch message can be up to the server's max_payload; the client's default of
            // 500 messages per pull would then ask for hundreds of megabytes at once, and the
            // server cuts a client that falls that far behind off as a slow consumer.
            max_batch: MAX_PULL_MESSAGES,
            ..consumer::pull::OrderedConfig::default()
        })
        .await
        .map_err(|err| backend(&err))?;
    let mut messages = consumer.messages().await.map_err(|err| backend(&err))?;
    let mut lacking = false;
    loop {
        let message = match tokio::time::timeout(QUIET, messages.next()).await {
            Ok(Some(message)) => message.map_err(|err| backend(&err))?,
            Ok(None) => break,
            Err(_) => {
                // A quiet log, or a consumer that stopped delivering: only the stream knows.
                let last = crate::last_sequence(shared).await?;
                let applied = shared.log().applied;
                if last > applied && lacking {
                    return Err(StoreError::Backend(format!(
                        "the consumer delivered nothing for {} s while the stream holds \
                         messages {} to {last}",
                        2 * QUIET.as_secs(),
                        applied + 1
                    )));
                }
                lacking = last > applied;
                continue;
            }
        };
        lacking = false;
        let info = message.info().map_err(|err| backend(&err))?;
        let sequence = info.stream_sequence;
        let behind = info.pending;
        shared
            .behind
            .store(behind, std::sync::atomic::Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("closeloop_store_replica_lag_messages").set(behind as f64);
        let id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        apply(shared, sequence, message.payload.clone(), id.as_deref()).await?;
    }
    Err(StoreError::Backend("the consumer ended".to_owned()))
}

/// Applies message `sequence`, first fetching any the consumer skipped.
pub(crate) async fn apply(
    shared: &Shared,
    sequence: u64,
    payload: Bytes,
    id: Option<&str>,
) -> Result<(), StoreError> {
    loop {
        let missing = {
            let applied = shared.log().applied;
            (applied + 1 < sequence).then_some(applied + 1)
        };
        let Some(missing) = missing else { break };
        let message = fetch(shared, missing).await?;
        apply_one(shared, missing, message.0, message.1.as_deref())?;
    }
    apply_one(shared, sequence, payload, id)
}

fn apply_one(
    shared: &Shared,
    sequence: u64,
    payload: Bytes,
    id: Option<&str>,
) -> Result<(), StoreError> {
    let applied = {
        let mut log = shared
            .log
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.apply_message(sequence, &payload, id)
    };
    let applied = match applied {
        Ok(applied) => applied,
        Err(err) => {
            if let StoreError::Corrupt { .. } = err {
                // Appends would chain onto a log this replica cannot follow.
                shared.stop(format!("{err}; run `closeloop verify`"));
            }
            return Err(err);
        }
    };
    if let Applied::Now(head) = applied {
        shared.cache.put(sequence, payload);
        shared.publish_head(head);
    }
    Ok(())
}

/// Message `sequence` with its `Nats-Msg-Id`, from the server.
pub(crate) async fn fetch(
    shared: &Shared,
    sequence: u64,
) -> Result<(Bytes, Option<String>), StoreError> {
    let message = tokio::time::timeout(
        shared.options.request_timeout,
        shared.stream.get_raw_message(sequence),
    )
    .await
    .map_err(|_| {
        StoreError::Backend(format!(
            "NATS did not return log message {sequence} in time"
        ))
    })?
    .map_err(|err| StoreError::Backend(format!("cannot read log message {sequence}: {err}")))?;
    let id = message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|id| id.as_str().to_owned());
    Ok((message.payload, id))
}
