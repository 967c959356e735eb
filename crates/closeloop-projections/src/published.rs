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
//!
//! A page may be filtered by place (an org unit and everything below it: a ward is in its
//! hospital) and by theme ([`PublishedFilter`]); its cost follows the page, not the number
//! of published loops, however rare the filter (see [`PublishedIndex`]). The places and themes
//! that have entries are counted, for the page's filter lists
//! ([`ReadModels::published_places`], [`ReadModels::published_themes`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use jiff::Timestamp;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use closeloop_domain::{LoopId, OrgUnit};

use crate::index::Order;
use crate::model::ReadModels;
use crate::query::{QueryError, SMALL_RESULT, Trace, decode_cursor, encode_cursor};
use crate::record::{Cold, Ts, When};

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

/// A place in the public order: newest `closed_at` first, then by public id. The id's bytes
/// order as its lowercase hex text ([`PublicKey`]) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NewestFirst {
    pub(crate) closed_at: Reverse<Ts>,
    pub(crate) id: [u8; 16],
}

impl NewestFirst {
    pub(crate) fn new(closed_at: Ts, id: [u8; 16]) -> Self {
        Self {
            closed_at: Reverse(closed_at),
            id,
        }
    }

    /// The place of a published loop, from its record. Every published loop is closed; the
    /// fallback (its closing time as 1970) only keeps this total.
    pub(crate) fn of(cold: &Cold) -> Self {
        let closed = cold.get(When::ClosedAt).unwrap_or(Ts { secs: 0, nanos: 0 });
        Self::new(closed, cold.public_id)
    }

    /// The public key this place names.
    pub(crate) fn key(self) -> PublicKey {
        PublicKey::from_bytes(self.id)
    }

    /// The cursor of a page that ends here.
    fn cursor(self) -> String {
        encode_cursor(PUBLISHED_CURSOR, self.closed_at.0, self.key().as_str())
    }
}

/// Which entries of the "you said, we did" page to show: every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedFilter {
    /// Only loops in this org unit or below it, matching whole path segments (a ward is in
    /// its hospital).
    pub place: Option<OrgUnit>,
    /// Only loops with this theme, exactly as given.
    pub theme: Option<String>,
}

impl PublishedFilter {
    /// Whether it lets every entry through.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.place.is_none() && self.theme.is_none()
    }
}

/// How many published loops each name has (a theme id, or an org unit's id), ranked, so that
/// the most used are listed without looking at the others.
#[derive(Debug, Default)]
struct Tally {
    counts: HashMap<u32, u32>,
    ranked: BTreeSet<(Reverse<u32>, u32)>,
}

impl Tally {
    fn add(&mut self, id: u32) {
        let count = self.counts.entry(id).or_default();
        self.ranked.remove(&(Reverse(*count), id));
        *count += 1;
        self.ranked.insert((Reverse(*count), id));
    }

    fn subtract(&mut self, id: u32) {
        let Some(count) = self.counts.get_mut(&id) else {
            return;
        };
        self.ranked.remove(&(Reverse(*count), id));
        *count -= 1;
        if *count == 0 {
            self.counts.remove(&id);
        } else {
            self.ranked.insert((Reverse(*count), id));
        }
    }

    /// At most `max` ids and their counts, the most used first (ties by id).
    fn top(&self, max: usize) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.ranked
            .iter()
            .take(max)
            .map(|&(Reverse(count), id)| (id, count))
    }
}

/// The indexes of the "you said, we did" page: which loops it shows, in its order.
///
/// - `entries`: every published loop by its place, newest first: an unfiltered page is a range
///   of it, exactly the entries shown.
/// - `slots` and `order`: the same loops as a bitmap, and as buckets of at most
///   [`MAX_BUCKET`](crate::index::MAX_BUCKET) slots in page order (like the loop list's order).
///   A filtered page intersects the loop-wide bitmaps of its place (every org unit *prefix*
///   has one) and theme with `slots`; a small result is sorted whole, a large one is found by
///   walking the buckets from the cursor, intersecting each with it. So a page costs its own
///   size plus at most one bitmap intersection per bucket, never a look at each loop.
/// - `themes` and `places`: how many published loops each theme and each org unit (and
///   prefix) has, ranked, for the page's filter lists.
///
/// Memory, per published loop: an `entries` node (about 50 bytes with the B-tree's
/// overhead) and a bit in `slots` and in one bucket (a few bytes); nothing per theme or place
/// of a loop beyond the counts, which cost about 50 bytes per theme and per place that has
/// entries at all.
#[derive(Debug, Default)]
pub(crate) struct PublishedIndex {
    entries: BTreeMap<NewestFirst, u32>,
    slots: RoaringBitmap,
    order: Order<NewestFirst>,
    themes: Tally,
    places: Tally,
}

impl PublishedIndex {
    /// How many loops the page shows.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry with its loop's slot, newest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NewestFirst, &u32)> {
        self.entries.iter()
    }

    /// Puts a loop on the page at `place`; `themes` are its distinct theme ids, `places` the
    /// ids of its org unit and every prefix of it, and `place_of` gives the place of any loop
    /// already on the page. Nothing happens when it is already there.
    pub(crate) fn insert(
        &mut self,
        slot: u32,
        place: NewestFirst,
        themes: &[u32],
        places: &[u32],
        place_of: impl Fn(u32) -> NewestFirst,
    ) {
        if self.entries.insert(place, slot).is_some() {
            return;
        }
        self.slots.insert(slot);
        self.order.insert(slot, place, place_of);
        themes.iter().for_each(|&theme| self.themes.add(theme));
        places.iter().for_each(|&org| self.places.add(org));
    }

    /// Takes the loop at `place` off the page (`themes` and `places` as for
    /// [`insert`](Self::insert)); whether it was on it.
    pub(crate) fn remove(
        &mut self,
        slot: u32,
        place: NewestFirst,
        themes: &[u32],
        places: &[u32],
    ) -> bool {
        if self.entries.remove(&place).is_none() {
            return false;
        }
        self.slots.remove(slot);
        self.order.remove(slot, &place);
        themes.iter().for_each(|&theme| self.themes.subtract(theme));
        places.iter().for_each(|&org| self.places.subtract(org));
        true
    }

    /// The first `limit` loops after `cursor`, and whether more follow.
    fn first(&self, cursor: Option<&NewestFirst>, limit: usize) -> (Vec<u32>, bool) {
        let range = match cursor {
            Some(cursor) => self
                .entries
                .range((Bound::Excluded(cursor), Bound::Unbounded)),
            None => self.entries.range(..),
        };
        let mut slots: Vec<u32> = range.take(limit + 1).map(|(_, &slot)| slot).collect();
        let more = slots.len() > limit;
        slots.truncate(limit);
        (slots, more)
    }

    /// The first `limit` loops of `candidates` (all on the page) after `cursor`, and whether
    /// more follow (see the type docs).
    fn first_of(
        &self,
        candidates: &RoaringBitmap,
        cursor: Option<&NewestFirst>,
        limit: usize,
        place_of: impl Fn(u32) -> NewestFirst,
        trace: &mut Trace,
    ) -> (Vec<u32>, bool) {
        let after = |slot: u32| cursor.is_none_or(|cursor| place_of(slot) > *cursor);
        if candidates.len() <= SMALL_RESULT {
            let mut slots: Vec<u32> = candidates.iter().filter(|&slot| after(slot)).collect();
            trace.examined += slots.len();
            let more = slots.len() > limit;
            if more {
                slots.select_nth_unstable_by_key(limit, |&slot| place_of(slot));
                slots.truncate(limit);
            }
            slots.sort_unstable_by_key(|&slot| place_of(slot));
            return (slots, more);
        }
        let mut slots = Vec::with_capacity(limit + 1);
        for bucket in self.order.buckets_from(cursor) {
            trace.buckets += 1;
            let hits = bucket & candidates;
            trace.examined += usize::try_from(hits.len()).unwrap_or(usize::MAX);
            let start = slots.len();
            slots.extend(hits.iter().filter(|&slot| after(slot)));
            slots[start..].sort_unstable_by_key(|&slot| place_of(slot));
            if slots.len() > limit {
                slots.truncate(limit);
                return (slots, true);
            }
        }
        (slots, false)
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
    /// Where the feedback was about.
    pub org_unit: OrgUnit,
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
    /// [`QueryError::BadCursor`] when `after` was not made by this method or
    /// [`published_matching`](Self::published_matching).
    pub fn published(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<PublishedPage, QueryError> {
        self.published_matching(&PublishedFilter::default(), limit, after)
    }

    /// Like [`published`](Self::published), only the entries `filter` lets through. Cursors
    /// name a place in the page order, so a cursor of one filter may be used with another.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] when `after` was not made by this method.
    pub fn published_matching(
        &self,
        filter: &PublishedFilter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<PublishedPage, QueryError> {
        self.published_traced(filter, limit, after)
            .map(|(page, _)| page)
    }

    pub(crate) fn published_traced(
        &self,
        filter: &PublishedFilter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(PublishedPage, Trace), QueryError> {
        let cursor = after
            .map(|raw| {
                decode_cursor(PUBLISHED_CURSOR, raw).and_then(|key| {
                    PublicKey::bytes_of(&key.id)
                        .map(|id| NewestFirst::new(key.at, id))
                        .ok_or_else(|| QueryError::BadCursor(raw.to_owned()))
                })
            })
            .transpose()?;
        let limit = limit.max(1);
        let place_of = |slot: u32| NewestFirst::of(&self.cold.get(slot as usize));
        let mut trace = Trace::default();
        let (slots, more) = if filter.is_empty() {
            self.published.first(cursor.as_ref(), limit)
        } else {
            match self.published_candidates(filter) {
                Some(candidates) => self.published.first_of(
                    &candidates,
                    cursor.as_ref(),
                    limit,
                    place_of,
                    &mut trace,
                ),
                None => (Vec::new(), false),
            }
        };
        let next_cursor = if more {
            slots.last().map(|&slot| place_of(slot).cursor())
        } else {
            None
        };
        let mut items = Vec::with_capacity(slots.len());
        for slot in slots {
            let Ok(loop_id) = LoopId::parse(self.ids.get(slot)) else {
                // Stored loop ids were parsed before they were stored; one that is not valid
                // is left off the public page rather than failing it.
                continue;
            };
            let hot = &self.hot[slot as usize];
            let place = place_of(slot);
            items.push(PublishedLoop {
                key: place.key(),
                loop_id,
                org_unit: self.org_unit(hot.org),
                themes: self.theme_names(hot.themes),
                we_did: self
                    .changes
                    .get(&slot)
                    .map(|changes| {
                        changes
                            .iter()
                            .map(|&id| self.descriptions.name(id).to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
                closed_at: place.closed_at.0.timestamp(),
            });
        }
        Ok((
            PublishedPage {
                items,
                next_cursor,
                version: self.published_version,
            },
            trace,
        ))
    }

    /// The published loops `filter` lets through; `None` when it names a place or theme no
    /// loop ever had.
    fn published_candidates(&self, filter: &PublishedFilter) -> Option<RoaringBitmap> {
        let mut filters = vec![&self.published.slots];
        if let Some(place) = &filter.place {
            filters.push(self.org_bitmap(place)?);
        }
        if let Some(theme) = &filter.theme {
            filters.push(self.bitmaps.theme.get(self.themes.get(theme)? as usize)?);
        }
        filters.sort_by_key(|bitmap| bitmap.len());
        let (first, rest) = filters.split_first()?;
        let mut result = (*first).clone();
        for bitmap in rest {
            if result.is_empty() {
                break;
            }
            result &= *bitmap;
        }
        Some(result)
    }

    /// The places with entries on the "you said, we did" page and how many each has: every
    /// org unit of a published loop and every prefix of one (a hospital as well as its
    /// wards). At most `max`, the places with the most entries first (ties in the order the
    /// places were first seen).
    #[must_use]
    pub fn published_places(&self, max: usize) -> Vec<(OrgUnit, u64)> {
        self.published
            .places
            .top(max)
            .map(|(org, count)| (self.org_unit(org), u64::from(count)))
            .collect()
    }

    /// The themes of the entries on the "you said, we did" page and how many entries have
    /// each. At most `max`, the themes with the most entries first (ties in the order the
    /// themes were first seen).
    #[must_use]
    pub fn published_themes(&self, max: usize) -> Vec<(String, u64)> {
        self.published
            .themes
            .top(max)
            .map(|(theme, count)| (self.themes.name(theme).to_owned(), u64::from(count)))
            .collect()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use closeloop_domain::event::{ChangeMade, FeedbackReceived, ReportedBack};
    use closeloop_domain::{Channel, Event, LoopEvent};
    use closeloop_store::{Hash, StoredEvent};
    use jiff::SignedDuration;

    use super::*;
    use crate::index::MAX_BUCKET;

    /// `n` published loops, closed a minute apart in slot order; loop `i` has the theme
    /// `theme_of(i)` and the org unit `org_of(i)`.
    fn published(
        n: u32,
        theme_of: impl Fn(u32) -> &'static str,
        org_of: impl Fn(u32) -> &'static str,
    ) -> ReadModels {
        let start: Timestamp = "2026-01-05T08:00:00Z".parse().unwrap();
        let mut models = ReadModels::default();
        let mut position = 0;
        let mut apply = |models: &mut ReadModels, loop_id: &str, version, at, payload| {
            position += 1;
            let entry = StoredEvent {
                position,
                loop_id: LoopId::parse(loop_id).unwrap(),
                version,
                prev_hash: Hash::ZERO,
                hash: Hash::ZERO,
                record: Vec::new(),
            };
            let event = Event {
                event_id: position.to_string(),
                source: "test".into(),
                time: at,
                payload,
                actor: None,
            };
            models.apply(&entry, &event);
        };
        for i in 0..n {
            let loop_id = format!("loop-{i}");
            let at = start + SignedDuration::from_mins(i64::from(i));
            let feedback = FeedbackReceived {
                org_unit: OrgUnit::parse(org_of(i)).unwrap(),
                channel: Channel::Web,
                received_at: Some(at),
                story: None,
                ratings: BTreeMap::new(),
                themes: vec![theme_of(i).to_owned()],
                seldom_heard: Vec::new(),
                author: None,
                consent_to_publish: true,
                language: None,
                public_id: None,
                extra: serde_json::Map::new(),
            };
            let change = ChangeMade {
                by: "ward".into(),
                description: "A change".into(),
                change_id: None,
                evidence: None,
                extra: serde_json::Map::new(),
            };
            let report = ReportedBack {
                by: "pals".into(),
                message: "done".into(),
                channel: None,
                extra: serde_json::Map::new(),
            };
            for (version, payload) in [
                (1, LoopEvent::FeedbackReceived(feedback)),
                (2, LoopEvent::ChangeMade(change)),
                (3, LoopEvent::ReportedBack(report)),
            ] {
                apply(&mut models, &loop_id, version, at, payload);
            }
        }
        models
    }

    fn run(
        models: &ReadModels,
        filter: &PublishedFilter,
        after: Option<&str>,
    ) -> (PublishedPage, Trace) {
        models.published_traced(filter, 20, after).unwrap()
    }

    #[test]
    fn filtered_pages_look_at_the_page_not_at_every_published_loop() {
        let n = 40_000;
        let bound = usize::try_from(2 * MAX_BUCKET).unwrap();
        // Every 10,000th loop has a rare theme; the oldest 3,000 are in a unit of their own.
        let models = published(
            n,
            |i| if i % 10_000 == 1 { "rare" } else { "common" },
            |i| {
                if i < 3_000 {
                    "rxx/old-site/ward-1"
                } else {
                    "rxx/site-a"
                }
            },
        );
        assert_eq!(models.published_count(), 40_000);
        let filter = |place: Option<&str>, theme: Option<&str>| PublishedFilter {
            place: place.map(|place| OrgUnit::parse(place).unwrap()),
            theme: theme.map(str::to_owned),
        };

        // Unfiltered: a range of the page order, nothing examined one by one.
        let (page, trace) = run(&models, &PublishedFilter::default(), None);
        assert_eq!(page.items[0].loop_id.as_str(), "loop-39999");
        assert_eq!((trace.examined, trace.buckets), (0, 0));

        // A rare theme: its four loops are sorted, nothing else is looked at.
        let (page, trace) = run(&models, &filter(None, Some("rare")), None);
        let ids: Vec<&str> = page
            .items
            .iter()
            .map(|item| item.loop_id.as_str())
            .collect();
        assert_eq!(ids, ["loop-30001", "loop-20001", "loop-10001", "loop-1"]);
        assert_eq!((trace.examined, trace.buckets), (4, 0));

        // A common filter: the first bucket or two hold the page.
        let (page, trace) = run(&models, &filter(Some("rxx"), Some("common")), None);
        assert_eq!(page.items.len(), 20);
        assert!(trace.buckets <= 2 && trace.examined <= bound, "{trace:?}");

        // A place whose 3,000 loops are all the oldest: too many to sort whole, found by
        // walking buckets; those without a hit cost one intersection each, not a look at
        // each loop.
        let old = filter(Some("rxx/old-site"), None);
        let (page, trace) = run(&models, &old, None);
        assert_eq!(page.items[0].loop_id.as_str(), "loop-2999");
        assert!(
            trace.buckets <= models.published.order.bucket_count(),
            "{trace:?}"
        );
        assert!(trace.examined <= bound, "{trace:?}");
        // Deep in its pages too, each starting from its cursor's bucket.
        let mut cursor = page.next_cursor;
        for _ in 0..100 {
            let (page, trace) = run(&models, &old, cursor.as_deref());
            assert!(trace.buckets <= 3 && trace.examined <= bound, "{trace:?}");
            cursor = page.next_cursor;
        }
        let (page, _) = run(&models, &old, cursor.as_deref());
        assert_eq!(page.items[0].loop_id.as_str(), "loop-979");
    }
}
