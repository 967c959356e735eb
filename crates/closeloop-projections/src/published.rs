//! "You said, we did": closed loops whose author consented to publication and that led to a
//! change, ordered by when they were closed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use closeloop_domain::LoopId;

use crate::model::ReadModels;
use crate::query::{QueryError, decode_cursor, encode_cursor};
use crate::record::Ts;

/// The first byte of a published-page cursor.
const PUBLISHED_CURSOR: u8 = b'P';

/// One page of "you said, we did" candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedPage {
    /// The loops, by `closed_at` then `loop_id`.
    pub items: Vec<PublishedLoop>,
    /// The cursor for the next page; `None` when this is the last.
    pub next_cursor: Option<String>,
}

/// A loop the public page may show. It holds no personal data: the caller adds `you_said`,
/// the loop's story passed through [`redact`](crate::redact), from the event store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedLoop {
    /// The loop.
    pub loop_id: LoopId,
    /// Its themes.
    pub themes: Vec<String>,
    /// What changed: the descriptions of its `loop.change_made` events, in order.
    pub we_did: Vec<String>,
    /// When it was closed.
    pub closed_at: Timestamp,
}

impl ReadModels {
    /// Up to `limit` loops for the "you said, we did" page after the cursor `after` (a
    /// previous page's `next_cursor`): loops that are closed now, whose author consented to
    /// publication, and that recorded at least one change.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] when `after` was not made by this method.
    pub fn published(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<PublishedPage, QueryError> {
        let cursor = after
            .map(|raw| decode_cursor(PUBLISHED_CURSOR, raw))
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
            entries
                .last()
                .map(|(key, _)| encode_cursor(PUBLISHED_CURSOR, key.at, &key.id))
        } else {
            None
        };
        let items = entries
            .into_iter()
            .map(|(key, &slot)| PublishedLoop {
                loop_id: LoopId::parse(&key.id).expect("stored loop ids are valid"),
                themes: self.theme_names(self.hot[slot as usize].themes),
                we_did: self
                    .changes
                    .get(&slot)
                    .map(|changes| changes.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                closed_at: Ts::timestamp(key.at),
            })
            .collect();
        Ok(PublishedPage { items, next_cursor })
    }
}
