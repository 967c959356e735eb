//! Reading entries back from the stream: the messages that hold them, fetched by sequence,
//! with a bounded cache of recent messages (the follower fills it as the log grows, so the
//! projector and the feed, which read just behind the head, rarely ask the server).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use closeloop_store::backend::entry;
use closeloop_store::{StoreError, StoredEvent};
use futures::{StreamExt, TryStreamExt};

use crate::Shared;
use crate::batch;
use crate::log::BatchAt;

/// How many messages one read fetches at once.
const FETCH_CONCURRENCY: usize = 16;

/// Recent messages by stream sequence, up to a number of bytes.
#[derive(Debug)]
pub(crate) struct Cache {
    inner: Mutex<CacheInner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct CacheInner {
    messages: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(CacheInner::default()),
            capacity,
        }
    }

    pub fn get(&self, sequence: u64) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.messages.get(&sequence).cloned()
    }

    pub fn put(&self, sequence: u64, message: Bytes) {
        if message.len() > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.messages.contains_key(&sequence) {
            return;
        }
        inner.bytes += message.len();
        inner.messages.insert(sequence, message);
        inner.order.push_back(sequence);
        while inner.bytes > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.messages.remove(&oldest) {
                inner.bytes -= gone.len();
            }
        }
    }
}

impl Shared {
    /// The payload of stream message `sequence`, from the cache or the server.
    pub(crate) async fn message(&self, sequence: u64) -> Result<Bytes, StoreError> {
        if let Some(message) = self.cache.get(sequence) {
            return Ok(message);
        }
        let (payload, _) = crate::follower::fetch(self, sequence).await?;
        self.cache.put(sequence, payload.clone());
        Ok(payload)
    }

    /// The entries at the positions `wanted` (ascending), read from the batches that hold them.
    pub(crate) async fn read_entries(
        &self,
        batches: Vec<BatchAt>,
        wanted: impl Fn(u64) -> bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let messages: Vec<(BatchAt, Bytes)> = futures::stream::iter(batches)
            .map(|at| async move { Ok::<_, StoreError>((at, self.message(at.sequence).await?)) })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut events = Vec::new();
        for (at, bytes) in messages {
            let decoded = batch::decode(at.sequence, &bytes)?;
            if decoded.first != at.first {
                return Err(StoreError::Corrupt {
                    position: at.first,
                    detail: format!(
                        "log stream message {} now starts at position {}; it was altered",
                        at.sequence, decoded.first
                    ),
                });
            }
            for (offset, bytes) in decoded.entries.into_iter().enumerate() {
                let position = at.first + offset as u64;
                if wanted(position) {
                    events.push(entry::to_stored(position, bytes)?);
                }
            }
        }
        Ok(events)
    }
}
