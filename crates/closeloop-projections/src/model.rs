//! [`ReadModels`]: every read model, and how one log entry changes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use closeloop_domain::event::{ChangeMade, FeedbackReceived};
use closeloop_domain::{Event, LoopEvent, LoopId, LoopState, OrgUnit, Stage};
use closeloop_store::{Hash, LoopIds, StoredEvent};

use crate::daily::{TableSizes, Tables};
use crate::index::{Bitmaps, Order, OrderKey, SlotLists, bitmap_mut, list_mut};
use crate::intern::{Lists, Names, RatingSets, RatingValue};
use crate::limits::{
    MAX_CHANGES_PER_LOOP, MAX_DESCRIPTION_BYTES, MAX_NAME_BYTES, MAX_RATINGS, MAX_TAGS, MAX_THEMES,
    truncate,
};
use crate::published::{NewestFirst, PublicKey, PublishedIndex};
use crate::record::{
    CONSENT, Cold, ColdTable, HAS_CHANGE, HAS_OUTCOME, Hot, Ts, When, channel_index, stage_index,
};
use crate::timing::Timing;

/// Every read model of Closeloop, built only from the global log, and the position of the last
/// log entry applied to it (its *checkpoint*).
///
/// Feed it every entry of the log, in position order, with [`apply`](Self::apply); query it
/// with [`summary`](Self::summary), [`list`](Self::list), [`stats`](Self::stats) and
/// [`published`](Self::published). Loops live in *slots* (dense `u32` ids handed out as loops
/// are received) as compact records; filters are bitmaps of slots (see the crate docs).
///
/// Queries take `now` and the [`Sla`](closeloop_domain::Sla) in force, because due dates and
/// `overdue` depend on both. What depends on the SLA but not on `now` (each loop's earliest
/// missed-deadline instant and its working days to acknowledge and close) is computed once per
/// SLA, kept up to date by `apply`, saved in snapshots with the SLA, and rebuilt if a query
/// brings a different SLA; call [`prepare`](Self::prepare) once after start-up so that the
/// first query does not pay for it.
pub struct ReadModels {
    pub(crate) checkpoint: u64,
    /// The `hash` of the entry at the checkpoint (zeros at position 0): a snapshot keeps it so
    /// that loading can check the snapshot was built from the log it is loaded against.
    pub(crate) checkpoint_hash: Hash,
    pub(crate) ids: LoopIds,
    pub(crate) hot: Vec<Hot>,
    pub(crate) cold: ColdTable,
    /// Org unit paths *and* all their prefixes.
    pub(crate) orgs: Names,
    pub(crate) themes: Names,
    pub(crate) tags: Names,
    pub(crate) rating_names: Names,
    /// Lists of theme ids and lists of tag ids share one table: a list is only numbers.
    pub(crate) lists: Lists,
    pub(crate) ratings: RatingSets,
    /// Change descriptions recorded since receipt or the last reopening, in order, of loops
    /// whose author consented to publication: the only loops whose changes the "you said, we
    /// did" page shows. At most [`MAX_CHANGES_PER_LOOP`] a loop, each cut to
    /// [`MAX_DESCRIPTION_BYTES`], as ids in `descriptions`.
    pub(crate) changes: HashMap<u32, Box<[u32]>>,
    /// The text of every change description `changes` ever held, once: teams describe the
    /// same change for many loops.
    pub(crate) descriptions: Names,
    /// Loops with a `loop.erased` event: their keys must stay destroyed (see
    /// [`ReadModels::erased_loops`]).
    pub(crate) erased: BTreeSet<u32>,
    pub(crate) bitmaps: Bitmaps,
    pub(crate) order: Order,
    /// The "you said, we did" read model: closed, consented loops whose latest outcome is a
    /// change, newest `closed_at` first, with what filtering them takes.
    pub(crate) published: PublishedIndex,
    /// The position of the last entry that changed what `published` shows (0: none did).
    /// Derived from the log alone, so it is the same after a rebuild or a restart.
    pub(crate) published_version: u64,
    /// SLA-dependent figures per slot, built on first use (see the type docs).
    pub(crate) timing: RwLock<Option<Timing>>,
}

impl Default for ReadModels {
    fn default() -> Self {
        Self {
            checkpoint: 0,
            checkpoint_hash: Hash::ZERO,
            ids: LoopIds::default(),
            hot: Vec::new(),
            cold: ColdTable::default(),
            orgs: Names::default(),
            themes: Names::default(),
            tags: Names::default(),
            rating_names: Names::default(),
            lists: Lists::default(),
            ratings: RatingSets::default(),
            changes: HashMap::new(),
            descriptions: Names::default(),
            erased: BTreeSet::new(),
            bitmaps: Bitmaps::default(),
            order: Order::default(),
            published: PublishedIndex::default(),
            published_version: 0,
            timing: RwLock::new(None),
        }
    }
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels")
            .field("checkpoint", &self.checkpoint)
            .field("loops", &self.hot.len())
            .field("org_units", &self.orgs.len())
            .field("themes", &self.themes.len())
            .field("published", &self.published.len())
            .finish_non_exhaustive()
    }
}

impl ReadModels {
    /// Every loop with a `loop.erased` event, for checking at start that their keys are still
    /// destroyed (a crash between recording an erasure and destroying the keys, or a key store
    /// restored from a backup older than the erasure).
    #[must_use]
    pub fn erased_loops(&self) -> Vec<LoopId> {
        self.erased
            .iter()
            .filter_map(|&slot| LoopId::parse(self.ids.get(slot)).ok())
            .collect()
    }

    /// Frees the read models one part at a time, calling `after` with each part's name once
    /// it is freed: the `memory` example reads resident memory there to tell how much each part
    /// held. Not for anything else.
    #[doc(hidden)]
    pub fn drop_parts(mut self, mut after: impl FnMut(&'static str)) {
        if let Some(timing) = self
            .timing
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            timing.drop_parts(&mut after);
        }
        macro_rules! part {
            ($($field:ident),*) => {$(
                drop(std::mem::take(&mut self.$field));
                after(stringify!($field));
            )*};
        }
        part!(
            ids,
            hot,
            cold,
            orgs,
            themes,
            tags,
            rating_names,
            lists,
            ratings,
            changes,
            descriptions,
            erased,
            bitmaps,
            order,
            published
        );
    }

    /// Empty read models at position 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one entry of the global log, `event` being `entry` decoded.
    ///
    /// Entries must come strictly in position order, each exactly once: this is what makes the
    /// checkpoint mean "everything up to here, nothing after".
    ///
    /// # Panics
    /// When `entry.position` is not `checkpoint() + 1`: applying out of order or twice would
    /// silently corrupt every read model, so it is treated as the bug it is.
    pub fn apply(&mut self, entry: &StoredEvent, event: &Event) {
        assert_eq!(
            entry.position,
            self.checkpoint + 1,
            "read models at position {} were given the entry at position {}; entries must be applied in order, each once",
            self.checkpoint,
            entry.position
        );
        self.checkpoint = entry.position;
        self.checkpoint_hash = entry.hash;
        if let LoopEvent::FeedbackReceived(data) = &event.payload {
            self.receive(entry, event, data);
            return;
        }
        let Some(slot) = self.ids.find(entry.loop_id.as_str()) else {
            // `decide` never lets this happen; the domain's `apply` ignores such an event too.
            tracing::warn!(
                position = entry.position,
                loop_id = %entry.loop_id,
                "log entry for a loop that was never received; ignored by the read models"
            );
            return;
        };
        self.advance(slot, entry, event);
    }

    /// The position of the last log entry applied; 0 when none.
    #[must_use]
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// The `hash` of the log entry at the checkpoint; zeros when nothing was applied.
    #[must_use]
    pub fn checkpoint_hash(&self) -> Hash {
        self.checkpoint_hash
    }

    /// Whether `entry`, read from the store at the checkpoint's position, is the entry these
    /// read models were built up to: same position, same hash. At position 0 there is no
    /// entry to compare and the answer is `true` when `entry` is `None`.
    #[must_use]
    pub fn built_from(&self, entry: Option<&StoredEvent>) -> bool {
        match entry {
            None => self.checkpoint == 0,
            Some(entry) => entry.position == self.checkpoint && entry.hash == self.checkpoint_hash,
        }
    }

    /// How many loops there are.
    #[must_use]
    pub fn loop_count(&self) -> usize {
        self.hot.len()
    }

    /// The domain state of a loop, as [`LoopState::replay`] of its events would give it.
    #[must_use]
    pub fn state(&self, loop_id: &LoopId) -> Option<LoopState> {
        self.ids
            .find(loop_id.as_str())
            .map(|slot| self.state_of(slot))
    }

    pub(crate) fn state_of(&self, slot: u32) -> LoopState {
        let hot = &self.hot[slot as usize];
        let cold = self.cold.get(slot as usize);
        let received = hot.received();
        LoopState {
            version: cold.version,
            stage: hot.stage(),
            org_unit: self.org_unit(hot.org),
            channel: hot.channel(),
            themes: self.theme_names(hot.themes),
            seldom_heard: self.tag_names(hot.tags),
            ratings: self.rating_map(hot.ratings),
            consent_to_publish: hot.has(CONSENT),
            received_at: received.timestamp(),
            acknowledged_at: cold.get(When::AcknowledgedAt).map(Ts::timestamp),
            first_contact_at: cold.get(When::FirstContactAt).map(Ts::timestamp),
            closed_at: cold.get(When::ClosedAt).map(Ts::timestamp),
            close_clock_from: cold.close_clock_from(received).timestamp(),
            has_outcome: hot.has(HAS_OUTCOME),
        }
    }

    pub(crate) fn org_unit(&self, org: u32) -> OrgUnit {
        // Org names came from parsed `OrgUnit`s (or their prefixes, which are valid too).
        OrgUnit::parse(self.orgs.name(org)).expect("interned org units are valid")
    }

    pub(crate) fn theme_names(&self, list: u32) -> Vec<String> {
        self.lists
            .items(list)
            .iter()
            .map(|&id| self.themes.name(id).to_owned())
            .collect()
    }

    pub(crate) fn tag_names(&self, list: u32) -> Vec<String> {
        self.lists
            .items(list)
            .iter()
            .map(|&id| self.tags.name(id).to_owned())
            .collect()
    }

    pub(crate) fn rating_map(&self, set: u32) -> BTreeMap<String, serde_json::Number> {
        self.ratings
            .get(set)
            .iter()
            .map(|&(name, value)| (self.rating_names.name(name).to_owned(), value.to_number()))
            .collect()
    }

    /// The order key of a slot: (`received_at`, `loop_id`).
    pub(crate) fn order_key(&self, slot: u32) -> (Ts, &str) {
        (self.hot[slot as usize].received(), self.ids.get(slot))
    }

    fn receive(&mut self, entry: &StoredEvent, event: &Event, data: &FeedbackReceived) {
        let received = Ts::of(data.received_at.unwrap_or(event.time));
        let org = self.orgs.intern(data.org_unit.as_str());
        // Capped, so that an event stored before today's limits cannot make any read
        // expensive (see `limits`).
        let theme_ids: Vec<u32> = data
            .themes
            .iter()
            .take(MAX_THEMES)
            .map(|t| self.themes.intern(truncate(t, MAX_NAME_BYTES)))
            .collect();
        let tag_ids: Vec<u32> = data
            .seldom_heard
            .iter()
            .take(MAX_TAGS)
            .map(|t| self.tags.intern(truncate(t, MAX_NAME_BYTES)))
            .collect();
        let mut ratings: Vec<(u32, RatingValue)> = data
            .ratings
            .iter()
            .take(MAX_RATINGS)
            .map(|(name, value)| {
                (
                    self.rating_names.intern(truncate(name, MAX_NAME_BYTES)),
                    RatingValue::from_number(value),
                )
            })
            .collect();
        // Cutting names that share their first bytes makes them equal; they come out of the
        // sorted map side by side, and the first one stands for them.
        ratings.dedup_by_key(|&mut (name, _)| name);
        let hot = Hot {
            received_secs: received.secs,
            received_nanos: received.nanos,
            org,
            themes: self.lists.intern(&theme_ids),
            tags: self.lists.intern(&tag_ids),
            ratings: self.ratings.intern(ratings.into()),
            stage: stage_index(Stage::Received),
            channel: channel_index(data.channel),
            flags: if data.consent_to_publish { CONSENT } else { 0 },
        };
        let public_id = data
            .public_id
            .as_deref()
            .and_then(PublicKey::bytes_of)
            .unwrap_or_else(|| crate::published::legacy_public_id(entry.loop_id.as_str()));
        let cold = Cold::new(entry.version, received, public_id);
        let (slot, before) = match self.ids.find(entry.loop_id.as_str()) {
            Some(slot) => {
                // A second `feedback.received` for a loop: `decide` refuses it, but the
                // domain's `apply` would start the loop afresh, so the read models do too.
                tracing::warn!(
                    position = entry.position,
                    loop_id = %entry.loop_id,
                    "feedback.received for an existing loop; the loop starts afresh"
                );
                if self.unindex(slot) {
                    self.published_version = entry.position;
                }
                self.changes.remove(&slot);
                let before = std::mem::replace(&mut self.hot[slot as usize], hot);
                self.cold.set(slot as usize, cold);
                (slot, Some(before))
            }
            None => {
                let slot = self.ids.push(entry.loop_id.as_str());
                self.hot.push(hot);
                self.cold.push(cold);
                (slot, None)
            }
        };
        self.index(slot);
        self.refresh_timing(slot, before.as_ref());
    }

    /// Mirrors `closeloop_domain::apply` for every event but `feedback.received`.
    fn advance(&mut self, slot: u32, entry: &StoredEvent, event: &Event) {
        let i = slot as usize;
        let (mut hot, mut cold) = (self.hot[i], self.cold.get(i));
        let before = hot;
        let shown_before = self.shown(slot);
        cold.version = entry.version;
        let time = Ts::of(event.time);
        let contacts_the_person = !matches!(
            event.payload,
            LoopEvent::Reopened(_) | LoopEvent::Erased(_) | LoopEvent::StoryApproved(_)
        );
        if cold.get(When::FirstContactAt).is_none() && contacts_the_person {
            cold.set(When::FirstContactAt, Some(time));
        }
        let advance_to = |hot: &mut Hot, stage: Stage| {
            hot.stage = hot.stage.max(stage_index(stage));
        };
        match &event.payload {
            LoopEvent::FeedbackReceived(_) => unreachable!("handled by receive"),
            LoopEvent::Acknowledged(_) => {
                cold.set(When::AcknowledgedAt, Some(time));
                advance_to(&mut hot, Stage::Acknowledged);
            }
            LoopEvent::Responded(_) => advance_to(&mut hot, Stage::Responded),
            LoopEvent::ActionPlanned(_) => advance_to(&mut hot, Stage::ActionPlanned),
            LoopEvent::ChangeMade(ChangeMade { description, .. }) => {
                hot.flags |= HAS_OUTCOME | HAS_CHANGE;
                advance_to(&mut hot, Stage::OutcomeRecorded);
                if hot.has(CONSENT) {
                    let changes = self.changes.entry(slot).or_default();
                    if changes.len() < MAX_CHANGES_PER_LOOP {
                        let id = self
                            .descriptions
                            .intern(truncate(description, MAX_DESCRIPTION_BYTES));
                        *changes = changes.iter().copied().chain([id]).collect();
                    }
                }
            }
            LoopEvent::NoChange(_) => {
                hot.flags |= HAS_OUTCOME;
                hot.flags &= !HAS_CHANGE;
                advance_to(&mut hot, Stage::OutcomeRecorded);
            }
            LoopEvent::ReportedBack(_) => {
                cold.set(When::ClosedAt, Some(time));
                advance_to(&mut hot, Stage::Closed);
            }
            LoopEvent::Reopened(_) => {
                hot.stage = stage_index(Stage::Responded);
                cold.set(When::ClosedAt, None);
                hot.flags &= !(HAS_OUTCOME | HAS_CHANGE);
                cold.set(When::CloseClockFrom, Some(time));
                // The public page shows what was done since the last reopening only.
                self.changes.remove(&slot);
            }
            // The story a published entry shows changes (erased, or approved as another
            // text): the page and its ETag must change with it.
            LoopEvent::Erased(_) | LoopEvent::StoryApproved(_) => {
                if matches!(event.payload, LoopEvent::Erased(_)) {
                    self.erased.insert(slot);
                }
                if shown_before.is_some() {
                    self.published_version = entry.position;
                }
            }
        }
        if hot.stage != self.hot[i].stage {
            let old = self.hot[i];
            self.set_stage_bits(slot, &old, false);
            self.set_stage_bits(slot, &hot, true);
        }
        if let Some((place, _)) = shown_before {
            self.withdraw(slot, place);
        }
        self.hot[i] = hot;
        self.cold.set(i, cold);
        self.publish_if_due(slot);
        if self.shown(slot) != shown_before {
            self.published_version = entry.position;
        }
        self.refresh_timing(slot, Some(&before));
    }

    /// Whether a loop belongs on the public page: closed, consented, and its latest outcome
    /// since receipt or the last reopening is a change.
    fn is_published(hot: &Hot, cold: &Cold) -> bool {
        hot.is_closed()
            && hot.has(CONSENT)
            && hot.has(HAS_CHANGE)
            && cold.get(When::ClosedAt).is_some()
    }

    fn published_key(&self, slot: u32) -> Option<NewestFirst> {
        let (hot, cold) = (&self.hot[slot as usize], self.cold.get(slot as usize));
        if !Self::is_published(hot, &cold) {
            return None;
        }
        let closed = cold.get(When::ClosedAt)?;
        Some(NewestFirst::new(closed, cold.public_id))
    }

    /// What the public page shows of a loop, as far as it can change by one event: its
    /// place, and how many change descriptions it lists. `None` when it is not shown.
    fn shown(&self, slot: u32) -> Option<(NewestFirst, usize)> {
        let key = self.published_key(slot)?;
        let changes = self.changes.get(&slot).map_or(0, |list| list.len());
        Some((key, changes))
    }

    fn publish_if_due(&mut self, slot: u32) {
        if self.published_key(slot).is_some() {
            let places = self.org_prefixes(self.hot[slot as usize].org);
            self.publish_at(slot, &places);
        }
    }

    /// Puts a loop on the public page if it belongs there, `places` being its org unit's
    /// prefixes.
    fn publish_at(&mut self, slot: u32, places: &[u32]) {
        let Some(place) = self.published_key(slot) else {
            return;
        };
        let Self {
            published,
            lists,
            hot,
            cold,
            ..
        } = self;
        published.insert(
            slot,
            place,
            lists.distinct(hot[slot as usize].themes),
            places,
            |s| NewestFirst::of(&cold.get(s as usize)),
        );
    }

    /// Takes a loop off the public page; whether it was on it.
    fn unpublish(&mut self, slot: u32) -> bool {
        match self.published_key(slot) {
            Some(place) => self.withdraw(slot, place),
            None => false,
        }
    }

    /// Takes the loop at `place` off the public page; whether it was on it.
    fn withdraw(&mut self, slot: u32, place: NewestFirst) -> bool {
        let places = self.org_prefixes(self.hot[slot as usize].org);
        let themes = self.lists.distinct(self.hot[slot as usize].themes);
        self.published.remove(slot, place, themes, &places)
    }

    fn set_stage_bits(&mut self, slot: u32, hot: &Hot, on: bool) {
        let status = usize::from(hot.is_closed());
        for bitmap in [
            &mut self.bitmaps.status[status],
            &mut self.bitmaps.stage[usize::from(hot.stage)],
        ] {
            if on {
                bitmap.insert(slot);
            } else {
                bitmap.remove(slot);
            }
        }
    }

    /// Adds a slot to every index, from its record.
    fn index(&mut self, slot: u32) {
        self.index_filters(slot);
        let received = self.hot[slot as usize].received();
        let Self {
            order, ids, hot, ..
        } = self;
        order.insert(slot, OrderKey::new(received, ids.get(slot)), |s| {
            OrderKey::new(hot[s as usize].received(), ids.get(s))
        });
    }

    /// Adds a slot to every index but the order, from its record.
    fn index_filters(&mut self, slot: u32) {
        let hot = self.hot[slot as usize];
        self.set_stage_bits(slot, &hot, true);
        self.bitmaps.channel[usize::from(hot.channel)].insert(slot);
        for prefix in self.org_prefixes(hot.org) {
            bitmap_mut(&mut self.bitmaps.org, prefix).insert(slot);
        }
        for &theme in self.lists.distinct(hot.themes) {
            bitmap_mut(&mut self.bitmaps.theme, theme).insert(slot);
        }
        for &tag in self.lists.distinct(hot.tags) {
            bitmap_mut(&mut self.bitmaps.tag, tag).insert(slot);
        }
        self.publish_if_due(slot);
    }

    /// Adds every slot to every index but the order, as [`index_filters`](Self::index_filters)
    /// one by one would: the slots of each bitmap appended a batch at a time, each org
    /// unit's prefixes found once rather than once a loop.
    pub(crate) fn index_all_filters(&mut self) {
        /// Slots gathered before they go into the bitmaps: one bitmap container's worth.
        const BATCH: usize = 1 << 16;
        let prefixes: Vec<Vec<u32>> = (0..self.orgs.len())
            .map(|org| self.org_prefixes(u32::try_from(org).expect("org ids are u32")))
            .collect();
        let mut bitmaps = Bitmaps::default();
        let mut slots = SlotLists::default();
        for (batch, records) in self.hot.chunks(BATCH).enumerate() {
            let first = u32::try_from(batch * BATCH).expect("slots are u32");
            for (slot, hot) in (first..).zip(records) {
                slots.status[usize::from(hot.is_closed())].push(slot);
                slots.stage[usize::from(hot.stage)].push(slot);
                slots.channel[usize::from(hot.channel)].push(slot);
                let families = [
                    (&mut slots.org, &prefixes[hot.org as usize][..]),
                    (&mut slots.theme, self.lists.distinct(hot.themes)),
                    (&mut slots.tag, self.lists.distinct(hot.tags)),
                ];
                for (family, ids) in families {
                    for &id in ids {
                        list_mut(family, id).push(slot);
                    }
                }
            }
            slots.append_to(&mut bitmaps);
        }
        self.bitmaps = bitmaps;
        for slot in 0..u32::try_from(self.hot.len()).expect("slots are u32") {
            let org = self.hot[slot as usize].org;
            self.publish_at(slot, &prefixes[org as usize]);
        }
    }

    /// Removes a slot from every index; whether it was on the public page.
    fn unindex(&mut self, slot: u32) -> bool {
        let hot = self.hot[slot as usize];
        let was_published = self.unpublish(slot);
        self.set_stage_bits(slot, &hot, false);
        self.bitmaps.channel[usize::from(hot.channel)].remove(slot);
        for prefix in self.org_prefixes(hot.org) {
            bitmap_mut(&mut self.bitmaps.org, prefix).remove(slot);
        }
        for &theme in self.lists.distinct(hot.themes) {
            bitmap_mut(&mut self.bitmaps.theme, theme).remove(slot);
        }
        for &tag in self.lists.distinct(hot.tags) {
            bitmap_mut(&mut self.bitmaps.tag, tag).remove(slot);
        }
        self.order
            .remove(slot, &OrderKey::new(hot.received(), self.ids.get(slot)));
        was_published
    }

    /// The ids of an org unit and all its prefixes, interning the prefixes.
    fn org_prefixes(&mut self, org: u32) -> Vec<u32> {
        let path = self.orgs.name(org).to_owned();
        let mut ids = Vec::new();
        for (i, byte) in path.bytes().enumerate() {
            if byte == b'/' {
                ids.push(self.orgs.intern(&path[..i]));
            }
        }
        ids.push(org);
        ids
    }

    /// How many names each table holds.
    pub(crate) fn table_sizes(&self) -> TableSizes {
        TableSizes {
            orgs: self.orgs.len(),
            themes: self.themes.len(),
            tags: self.tags.len(),
            rating_sets: self.ratings.len(),
        }
    }

    /// What the per-day aggregates read of the tables.
    pub(crate) fn tables(&self) -> Tables<'_> {
        Tables::new(&self.orgs, &self.lists, &self.ratings, &self.rating_names)
    }

    /// Recomputes a slot's SLA-dependent figures and aggregates, if they are being kept;
    /// `before` is its record before the event (`None` for a new loop).
    fn refresh_timing(&mut self, slot: u32, before: Option<&Hot>) {
        let Self {
            timing,
            hot,
            cold,
            orgs,
            lists,
            ratings,
            rating_names,
            ..
        } = self;
        if let Some(timing) = timing
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let tables = Tables::new(orgs, lists, ratings, rating_names);
            let i = slot as usize;
            timing.update(slot, &hot[i], &cold.get(i), before, &tables);
        }
    }
}
