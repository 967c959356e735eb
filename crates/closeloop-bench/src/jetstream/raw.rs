//! Raw JetStream publishing: the ceiling for anything that appends to a stream, with the
//! acknowledgement settings the store's log has (file storage, the same replicas, the same
//! duplicate window, each publish's acknowledgement awaited).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::{Latency, STEP_TIMEOUT, Timed, delete_stream};
use crate::store::Measurement;

/// Headers a publish carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Headers {
    /// None: plain JetStream publishing.
    None,
    /// The store's: a `Nats-Msg-Id` of its own and `Nats-Expected-Last-Sequence` set to the
    /// sequence of the publisher's previous message (so only one publisher may use them).
    Fenced,
}

/// `count` messages of `message`'s bytes published to a new stream `name` by `publishers`
/// concurrent tasks, each awaiting every acknowledgement before its next publish; the stream
/// is deleted afterwards.
pub(super) async fn publish(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    publishers: u64,
    count: u64,
    message: &[u8],
    headers: Headers,
) -> Result<Timed> {
    ensure!(
        headers == Headers::None || publishers == 1,
        "fenced publishing takes one publisher"
    );
    let subject = format!("bench.raw.{}", name.to_lowercase());
    let stream = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            // The log stream's window: JetStream keeps each message id this long.
            duplicate_window: Duration::from_secs(120),
            ..stream::Config::default()
        })
        .await
        .with_context(|| format!("cannot create the stream {name}"))?;
    let payload = Bytes::copy_from_slice(message);

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for publisher in 0..publishers {
        let share = count / publishers + u64::from(publisher < count % publishers);
        let js = js.clone();
        let subject = subject.clone();
        let payload = payload.clone();
        let name = name.to_owned();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(usize::try_from(share)?);
            // A new stream's first message follows sequence 0.
            let mut last = 0;
            for n in 0..share {
                let mut message = PublishMessage::build().payload(payload.clone());
                if headers == Headers::Fenced {
                    message = message
                        .message_id(format!("{name}-{n}"))
                        .expected_last_sequence(last);
                }
                let sent = Instant::now();
                let ack = js.send_publish(subject.clone(), message).await?.await?;
                latencies.push(sent.elapsed());
                last = ack.sequence;
            }
            anyhow::Ok(latencies)
        });
    }
    let latencies = tokio::time::timeout(STEP_TIMEOUT, async {
        let mut all = Vec::with_capacity(usize::try_from(count)?);
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined.context("a publisher task panicked")??);
        }
        anyhow::Ok(all)
    })
    .await
    .context("raw publishing did not finish in time")??;
    let rate = Measurement::since(count, start);

    let info = stream.get_info().await?;
    ensure!(
        info.state.messages == count,
        "the stream {name} holds {} messages, not {count}",
        info.state.messages
    );
    delete_stream(js, name).await?;
    Ok(Timed {
        rate,
        latency: Latency::of(latencies),
    })
}
