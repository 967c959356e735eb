//! "You said, we did": the public read model.
//!
//! It holds each loop's **latest outcome only**: a loop is shown while it is closed, its
//! author consented to publication, and the latest outcome recorded since it was received or
//! last reopened is a change (`loop.change_made`, not `loop.no_change`). What it shows as
//! `we_did` are the change descriptions recorded since the loop was received or last
//! reopened, in the order they were recorded: reopening clears them, so a loop closed again
//! after a new change shows that change, never the ones of an earlier closing. It keeps no
//! story text: the caller reads the story from the store and redacts it, through a
//! [`StoryCache`](crate::StoryCache).
//!
//! Entries are ordered newest `closed_at` first, ties by [`PublicKey`], and the model carries
//! a [`version`](ReadModels::published_version) that changes whenever what it shows changes,
//! so that a caller can answer `If-None-Match` without building the page.

use std::cmp::Reverse;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use closeloop_domain::LoopId;

use crate::model::ReadModels;
use crate::query::{QueryError, decode_cursor, encode_cursor};
use crate::record::Ts;

/// The first byte of a published-page cursor (`N` for newest first: cursors of the earlier
/// oldest-first order are refused rather than misread).
const PUBLISHED_CURSOR: u8 = b'N';

/// The key that names a loop on the public page.
///
/// Today it is the loop id. It is a type of its own so that a later change can make it an
/// opaque public id (publishers may use case numbers as loop ids) without touching the
/// model's order, cursors or cache.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey(Box<str>);

impl PublicKey {
    /// The public key of the loop `loop_id`.
    #[must_use]
    pub fn of_loop(loop_id: &str) -> Self {
        Self(loop_id.into())
    }

    /// Parses a public key as a caller sent it back; `None` when it cannot be one.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        LoopId::parse(raw).ok().map(|id| Self::of_loop(id.as_str()))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PublicKey {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw).ok_or_else(|| format!("{raw:?} is not a public key"))
    }
}

impl From<PublicKey> for String {
    fn from(key: PublicKey) -> Self {
        key.0.into()
    }
}

/// A place in the public order: newest `closed_at` first, then by key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NewestFirst {
    pub(crate) closed_at: Reverse<Ts>,
    pub(crate) key: PublicKey,
}

impl NewestFirst {
    pub(crate) fn new(closed_at: Ts, key: PublicKey) -> Self {
        Self {
            closed_at: Reverse(closed_at),
            key,
        }
    }
}

/// One page of the "you said, we did" read model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedPage {
    /// The loops, newest `closed_at` first, ties by key.
    pub items: Vec<PublishedLoop>,
    /// The cursor for the next page; `None` when this is the last.
    pub next_cursor: Option<String>,
    /// The model's [`version`](ReadModels::published_version) this page was read at.
    pub version: u64,
}

/// A loop the public page shows. It holds no personal data: the caller adds `you_said`, the
/// loop's story passed through [`redact`](crate::redact), from the event store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedLoop {
    /// How the public page names the loop.
    pub key: PublicKey,
    /// The loop, for reading its story from the store. Not for display: once the key is an
    /// opaque public id, the loop id must not reach the public page.
    pub loop_id: LoopId,
    /// Its themes.
    pub themes: Vec<String>,
    /// What changed: the descriptions of its `loop.change_made` events recorded since it was
    /// received or last reopened, in order.
    pub we_did: Vec<String>,
    /// When it was (last) closed.
    pub closed_at: Timestamp,
}

impl ReadModels {
    /// Up to `limit` entries of the "you said, we did" page after the cursor `after` (a
    /// previous page's `next_cursor`), newest `closed_at` first (see the module docs for which
    /// loops are shown and what they show).
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] when `after` was not made by this method.
    pub fn published(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<PublishedPage, QueryError> {
        let cursor = after
            .map(|raw| {
                decode_cursor(PUBLISHED_CURSOR, raw)
                    .map(|key| NewestFirst::new(key.at, PublicKey::of_loop(&key.id)))
            })
            .transpose()?;
        let limit = limit.max(1);
        let range = match &cursor {
            Some(cursor) => self.published.range((
                std::ops::Bound::Excluded(cursor),
                std::ops::Bound::Unbounded,
            )),
            None => self.published.range(..),
        };
        let mut entries: Vec<_> = range.take(limit + 1).collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more {
            entries.last().map(|(place, _)| {
                encode_cursor(PUBLISHED_CURSOR, place.closed_at.0, place.key.as_str())
            })
        } else {
            None
        };
        let mut items = Vec::with_capacity(entries.len());
        for (place, &slot) in entries {
            let Ok(loop_id) = LoopId::parse(self.ids.get(slot)) else {
                // Stored loop ids were parsed before they were stored; one that is not valid
                // is left off the public page rather than failing it.
                continue;
            };
            items.push(PublishedLoop {
                key: place.key.clone(),
                loop_id,
                themes: self.theme_names(self.hot[slot as usize].themes),
                we_did: self
                    .changes
                    .get(&slot)
                    .map(|changes| changes.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                closed_at: place.closed_at.0.timestamp(),
            });
        }
        Ok(PublishedPage {
            items,
            next_cursor,
            version: self.published_version,
        })
    }

    /// A number that changes whenever what the "you said, we did" page shows changes: the
    /// position of the last log entry that changed it (0 when none did). It is derived from the
    /// log alone, so a restart or a rebuild gives the same number for the same log; use it
    /// in an `ETag`.
    #[must_use]
    pub fn published_version(&self) -> u64 {
        self.published_version
    }

    /// How many loops the "you said, we did" page shows.
    #[must_use]
    pub fn published_count(&self) -> usize {
        self.published.len()
    }
}
