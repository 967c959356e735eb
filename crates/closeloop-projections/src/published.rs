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
use std::sync::{Arc, OnceLock};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use closeloop_domain::LoopId;

use crate::model::ReadModels;
use crate::query::{QueryError, decode_cursor, encode_cursor};
use crate::record::Ts;

/// The first byte of a published-page cursor (`N` for newest first: cursors of the earlier
/// oldest-first order are refused rather than misread).
const PUBLISHED_CURSOR: u8 = b'N';

/// The key that names a loop on the public page and in `LoopSummary`: its opaque public id
/// (contract §3 v1.1), 32 lowercase hex digits. A loop's received event carries a random one
/// (the write path assigns it); a loop stored before public ids existed gets one derived from
/// its loop id under a secret (see [`install_legacy_public_ids`]), never a plain hash anyone
/// could recompute from a guessed case number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey(Box<str>);

/// Derives the public id of a loop stored before public ids existed.
pub type LegacyPublicIds = Arc<dyn Fn(&str) -> [u8; 16] + Send + Sync>;

static LEGACY_PUBLIC_IDS: OnceLock<LegacyPublicIds> = OnceLock::new();

/// Sets how loops stored before public ids existed get theirs: `closeloop` installs the key
/// store's keyed derivation before it loads or builds any read model. Once per process; a
/// second call is ignored. Without one, a keyed hash under a secret random to this process is
/// used (tests and tools that never show public ids).
pub fn install_legacy_public_ids(derive: LegacyPublicIds) {
    let _ = LEGACY_PUBLIC_IDS.set(derive);
}

pub(crate) fn legacy_public_id(loop_id: &str) -> [u8; 16] {
    let derive = LEGACY_PUBLIC_IDS.get_or_init(|| {
        let secret: [u8; 32] = rand::random();
        Arc::new(move |loop_id: &str| {
            use sha2::{Digest, Sha256};
            let digest = Sha256::new()
                .chain_update(secret)
                .chain_update(loop_id.as_bytes())
                .finalize();
            let mut id = [0; 16];
            id.copy_from_slice(&digest[..16]);
            id
        })
    });
    derive(loop_id)
}

impl PublicKey {
    /// The key of a public id's 16 bytes.
    #[must_use]
    pub fn from_bytes(id: [u8; 16]) -> Self {
        Self(hex::encode(id).into())
    }

    /// The public id of a loop stored before public ids existed (see
    /// [`install_legacy_public_ids`]).
    #[must_use]
    pub fn of_loop(loop_id: &str) -> Self {
        Self::from_bytes(legacy_public_id(loop_id))
    }

    /// The 16 bytes of a public id as the write path stores it (32 hex digits), when `raw` is
    /// one.
    #[must_use]
    pub fn bytes_of(raw: &str) -> Option<[u8; 16]> {
        let mut id = [0; 16];
        (raw.len() == 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| hex::decode_to_slice(raw, &mut id).ok())
        .flatten()
        .map(|()| id)
    }

    /// Parses a public key as a caller sent it back; `None` when it cannot be one.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        Self::bytes_of(raw).map(Self::from_bytes)
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
                decode_cursor(PUBLISHED_CURSOR, raw).and_then(|key| {
                    PublicKey::parse(&key.id)
                        .map(|id| NewestFirst::new(key.at, id))
                        .ok_or_else(|| QueryError::BadCursor(raw.to_owned()))
                })
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
