//! `GET /v1/loops` and the loop summary: filters, order, cursors.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use closeloop_domain::{Channel, LoopId, LoopState, OrgUnit, Sla, Stage, Status};
use jiff::Timestamp;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::index::OrderKey;
use crate::model::ReadModels;
use crate::record::{Ts, channel_index, clamped_nanos, stage_index};

/// Which loops `GET /v1/loops` lists by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Open loops only (the default).
    #[default]
    Open,
    /// Closed loops only.
    Closed,
    /// Every loop.
    All,
}

impl StatusFilter {
    /// Parses `open`, `closed` or `all`; `None` for anything else.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// The query of `GET /v1/loops`: every filter given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopQuery {
    /// Open (default), closed or all loops.
    pub status: StatusFilter,
    /// Only loops at this stage.
    pub stage: Option<Stage>,
    /// Only loops in this org unit or below it, matching whole path segments.
    pub org_unit: Option<OrgUnit>,
    /// The caller's org-unit scope: only loops in this unit or below it, like `org_unit` and
    /// together with it. Counted in `total` like every filter, so a scoped caller learns
    /// nothing of loops outside its scope, and applied before paging, so cursors stay exact.
    pub scope: Option<OrgUnit>,
    /// Only loops with this theme.
    pub theme: Option<String>,
    /// Only loops that arrived through this channel.
    pub channel: Option<Channel>,
    /// Only loops with this seldom-heard community tag.
    pub seldom_heard: Option<String>,
    /// `Some(true)`: only overdue loops; `Some(false)`: only loops that are not overdue.
    pub overdue: Option<bool>,
    /// Page size; the caller checks it is within 1–500.
    pub limit: usize,
    /// Where the previous page ended: its `next_cursor`.
    pub cursor: Option<String>,
}

impl Default for LoopQuery {
    /// Open loops, no other filter, 50 a page, from the start.
    fn default() -> Self {
        Self {
            status: StatusFilter::Open,
            stage: None,
            org_unit: None,
            scope: None,
            theme: None,
            channel: None,
            seldom_heard: None,
            overdue: None,
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of `GET /v1/loops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopPage {
    /// The loops, oldest `received_at` first, ties by `loop_id`.
    pub items: Vec<LoopSummary>,
    /// The cursor for the next page; `None` (JSON `null`) when this is the last.
    pub next_cursor: Option<String>,
    /// How many loops match the filters, on every page.
    pub total: u64,
}

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The cursor is not one this service handed out (HTTP 400 `invalid_request`): start
    /// again from the first page.
    #[error("cursor {0:?} is not valid; start again without a cursor")]
    BadCursor(String),
}

/// A loop as lists and `GET /v1/loops/{loop_id}` show it (contract §3): field names and order
/// are the contract's; absent times are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSummary {
    /// The loop's id.
    pub loop_id: LoopId,
    /// `open` or `closed`.
    pub status: Status,
    /// How far it has come.
    pub stage: Stage,
    /// Where the feedback is about.
    pub org_unit: OrgUnit,
    /// How it arrived.
    pub channel: Channel,
    /// Its themes, as given.
    pub themes: Vec<String>,
    /// Its seldom-heard community tags, as given.
    pub seldom_heard: Vec<String>,
    /// Its ratings by name.
    pub ratings: BTreeMap<String, serde_json::Number>,
    /// When the feedback was received.
    pub received_at: Timestamp,
    /// When `loop.acknowledged` was recorded.
    pub acknowledged_at: Option<Timestamp>,
    /// When the loop was (last) closed; `null` while open.
    pub closed_at: Option<Timestamp>,
    /// When the person must have heard back.
    pub acknowledge_by: Timestamp,
    /// When the loop must be closed.
    pub close_by: Timestamp,
    /// Open and past a due date it has not met, at the time of the query.
    pub overdue: bool,
    /// The loop's version (its number of events).
    pub version: u64,
    /// The loop's opaque public id, as the public page names it (contract §3 v1.1).
    pub public_id: String,
}

impl LoopSummary {
    /// The summary of a loop in state `state`, at `now`, under `sla`.
    #[must_use]
    pub fn of(loop_id: LoopId, state: LoopState, now: Timestamp, sla: &Sla) -> Self {
        Self {
            public_id: crate::PublicKey::of_loop(loop_id.as_str())
                .as_str()
                .to_owned(),
            loop_id,
            status: state.status(),
            stage: state.stage,
            acknowledge_by: sla.acknowledge_by(&state),
            close_by: sla.close_by(&state),
            overdue: sla.is_overdue(&state, now),
            version: state.version,
            received_at: state.received_at,
            acknowledged_at: state.acknowledged_at,
            closed_at: state.closed_at,
            org_unit: state.org_unit,
            channel: state.channel,
            themes: state.themes,
            seldom_heard: state.seldom_heard,
            ratings: state.ratings,
        }
    }
}

/// Results at most this large are sorted whole rather than found by walking the order index.
pub(crate) const SMALL_RESULT: u64 = 2048;

/// The first byte of a loop-list cursor, so that cursors of different lists cannot be mixed.
pub(crate) const LIST_CURSOR: u8 = b'L';

/// Encodes a position in a (time, `loop_id`) order as an opaque URL-safe string.
pub(crate) fn encode_cursor(tag: u8, at: Ts, id: &str) -> String {
    let mut bytes = Vec::with_capacity(13 + id.len());
    bytes.push(tag);
    bytes.extend_from_slice(&at.secs.to_be_bytes());
    bytes.extend_from_slice(&at.nanos.to_be_bytes());
    bytes.extend_from_slice(id.as_bytes());
    BASE64URL.encode(bytes)
}

/// Decodes a cursor made by [`encode_cursor`] with the same tag.
pub(crate) fn decode_cursor(tag: u8, raw: &str) -> Result<OrderKey, QueryError> {
    let bad = || QueryError::BadCursor(raw.to_owned());
    let bytes = BASE64URL.decode(raw).map_err(|_| bad())?;
    if bytes.len() < 14 || bytes[0] != tag {
        return Err(bad());
    }
    let secs = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| bad())?);
    let nanos = i32::from_be_bytes(bytes[9..13].try_into().map_err(|_| bad())?);
    let at = Ts { secs, nanos };
    let id = std::str::from_utf8(&bytes[13..]).map_err(|_| bad())?;
    if !at.is_valid() || LoopId::parse(id).is_err() {
        return Err(bad());
    }
    Ok(OrderKey::new(at, id))
}

/// What a list query looked at, for tests that check queries do not scan.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Trace {
    /// Loops whose order key was compared or that were checked one by one.
    pub(crate) examined: usize,
    /// Order buckets intersected with the query's bitmap.
    pub(crate) buckets: usize,
}

impl ReadModels {
    /// The summary of one loop at `now` under `sla`; `None` when there is no such loop.
    #[must_use]
    pub fn summary(&self, loop_id: &LoopId, now: Timestamp, sla: &Sla) -> Option<LoopSummary> {
        let slot = self.ids.find(loop_id.as_str())?;
        Some(self.summary_of(slot, now, sla))
    }

    /// The org unit of one loop; `None` when there is no such loop. A loop's org unit never
    /// changes once it is received, so this answer stays true.
    #[must_use]
    pub fn org_unit_of(&self, loop_id: &LoopId) -> Option<OrgUnit> {
        let slot = self.ids.find(loop_id.as_str())?;
        Some(self.org_unit(self.hot[slot as usize].org))
    }

    fn summary_of(&self, slot: u32, now: Timestamp, sla: &Sla) -> LoopSummary {
        let loop_id = LoopId::parse(self.ids.get(slot)).expect("stored loop ids are valid");
        let mut summary = LoopSummary::of(loop_id, self.state_of(slot), now, sla);
        summary.public_id = crate::PublicKey::from_bytes(self.cold.get(slot as usize).public_id)
            .as_str()
            .to_owned();
        summary
    }

    /// One page of loops matching `query`, at `now` under `sla` (contract §3 `GET /v1/loops`).
    ///
    /// The filters are intersected as bitmaps; the page is then found by walking the
    /// `received_at` order from the cursor, bucket by bucket, or, for a small result, by
    /// sorting it whole. Only `overdue` is checked loop by loop, with one comparison each.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] when `query.cursor` was not made by this method.
    pub fn list(
        &self,
        query: &LoopQuery,
        now: Timestamp,
        sla: &Sla,
    ) -> Result<LoopPage, QueryError> {
        self.list_traced(query, now, sla).map(|(page, _)| page)
    }

    pub(crate) fn list_traced(
        &self,
        query: &LoopQuery,
        now: Timestamp,
        sla: &Sla,
    ) -> Result<(LoopPage, Trace), QueryError> {
        let cursor = query
            .cursor
            .as_deref()
            .map(|raw| decode_cursor(LIST_CURSOR, raw))
            .transpose()?;
        let Some(candidates) = self.candidates(query) else {
            return Ok((
                LoopPage {
                    items: Vec::new(),
                    next_cursor: None,
                    total: 0,
                },
                Trace::default(),
            ));
        };
        let limit = query.limit.max(1);
        let mut trace = Trace::default();
        let (slots, more, total) = match query.overdue {
            None => {
                let total = candidates.len();
                let (slots, more) =
                    self.page(&candidates, cursor.as_ref(), limit, |_| true, &mut trace);
                (slots, more, total)
            }
            Some(wanted) => self.with_timing(sla, |timing| {
                let now = clamped_nanos(now);
                let keep = |slot: u32| timing.is_overdue(slot, now) == wanted;
                let count_overdue = |open: &RoaringBitmap, trace: &mut Trace| {
                    trace.examined += usize::try_from(open.len()).unwrap_or(usize::MAX);
                    open.iter()
                        .filter(|&slot| timing.is_overdue(slot, now))
                        .count() as u64
                };
                // Only open loops can be overdue: count those among the open candidates, and
                // the rest are not overdue.
                let overdue = match query.status {
                    StatusFilter::Closed => 0,
                    StatusFilter::Open => count_overdue(&candidates, &mut trace),
                    StatusFilter::All => {
                        count_overdue(&(&candidates & &self.bitmaps.status[0]), &mut trace)
                    }
                };
                let total = if wanted {
                    overdue
                } else {
                    candidates.len() - overdue
                };
                let (slots, more) =
                    self.page(&candidates, cursor.as_ref(), limit, keep, &mut trace);
                (slots, more, total)
            }),
        };
        let next_cursor = if more {
            slots.last().map(|&slot| {
                let (at, id) = self.order_key(slot);
                encode_cursor(LIST_CURSOR, at, id)
            })
        } else {
            None
        };
        let items = slots
            .into_iter()
            .map(|slot| self.summary_of(slot, now, sla))
            .collect();
        Ok((
            LoopPage {
                items,
                next_cursor,
                total,
            },
            trace,
        ))
    }

    /// The slots matching every bitmap filter of `query`; `None` when a filter names a value
    /// no loop ever had.
    fn candidates(&self, query: &LoopQuery) -> Option<RoaringBitmap> {
        let b = &self.bitmaps;
        let mut filters: Vec<&RoaringBitmap> = Vec::new();
        match query.status {
            StatusFilter::Open => filters.push(&b.status[0]),
            StatusFilter::Closed => filters.push(&b.status[1]),
            StatusFilter::All => {}
        }
        if let Some(stage) = query.stage {
            filters.push(&b.stage[usize::from(stage_index(stage))]);
        }
        if let Some(channel) = query.channel {
            filters.push(&b.channel[usize::from(channel_index(channel))]);
        }
        for org in [&query.org_unit, &query.scope].into_iter().flatten() {
            filters.push(self.org_bitmap(org)?);
        }
        if let Some(theme) = &query.theme {
            filters.push(b.theme.get(self.themes.get(theme)? as usize)?);
        }
        if let Some(tag) = &query.seldom_heard {
            filters.push(b.tag.get(self.tags.get(tag)? as usize)?);
        }
        filters.sort_by_key(|bitmap| bitmap.len());
        let mut filters = filters.into_iter();
        let Some(first) = filters.next() else {
            let mut all = RoaringBitmap::new();
            all.insert_range(0..u32::try_from(self.hot.len()).expect("slots are u32"));
            return Some(all);
        };
        let mut result = first.clone();
        for bitmap in filters {
            if result.is_empty() {
                break;
            }
            result &= bitmap;
        }
        Some(result)
    }

    /// The slots of the loops in `org` or below it; `None` when no loop was ever there.
    pub(crate) fn org_bitmap(&self, org: &OrgUnit) -> Option<&RoaringBitmap> {
        self.bitmaps.org.get(self.orgs.get(org.as_str())? as usize)
    }

    /// The first `limit` slots of `candidates` that pass `keep`, after `cursor` in
    /// (`received_at`, `loop_id`) order, and whether more follow.
    fn page(
        &self,
        candidates: &RoaringBitmap,
        cursor: Option<&OrderKey>,
        limit: usize,
        keep: impl Fn(u32) -> bool,
        trace: &mut Trace,
    ) -> (Vec<u32>, bool) {
        let after = |slot: u32| {
            cursor.is_none_or(|c| {
                let (at, id) = self.order_key(slot);
                (at, id) > (c.at, &*c.id)
            })
        };
        let by_key = |&a: &u32, &b: &u32| self.order_key(a).cmp(&self.order_key(b));
        if candidates.len() <= SMALL_RESULT {
            let mut slots: Vec<u32> = candidates
                .iter()
                .filter(|&slot| keep(slot) && after(slot))
                .collect();
            trace.examined += slots.len();
            let more = slots.len() > limit;
            if more {
                slots.select_nth_unstable_by(limit, by_key);
                slots.truncate(limit);
            }
            slots.sort_unstable_by(by_key);
            return (slots, more);
        }
        let mut slots = Vec::with_capacity(limit + 1);
        for bucket in self.order.buckets_from(cursor) {
            trace.buckets += 1;
            let hits = bucket & candidates;
            if hits.is_empty() {
                continue;
            }
            let start = slots.len();
            slots.extend(hits.iter().filter(|&slot| keep(slot) && after(slot)));
            trace.examined += usize::try_from(hits.len()).unwrap_or(usize::MAX);
            slots[start..].sort_unstable_by(by_key);
            if slots.len() > limit {
                slots.truncate(limit);
                return (slots, true);
            }
        }
        (slots, false)
    }
}

#[cfg(test)]
mod tests {
    use closeloop_domain::event::{FeedbackReceived, ReportedBack};
    use closeloop_domain::{Event, LoopEvent};
    use closeloop_store::{Hash, StoredEvent};
    use jiff::SignedDuration;

    use super::*;
    use crate::index::MAX_BUCKET;

    /// `n` loops received a minute apart; every 10,000th has the theme `rare`; all but the
    /// newest `open` are closed.
    fn models(n: u32, open: u32) -> ReadModels {
        models_in(n, open, |_| "rxx/site-a")
    }

    /// The same, loop `i` in the org unit `org_of(i)`.
    fn models_in(n: u32, open: u32, org_of: impl Fn(u32) -> &'static str) -> ReadModels {
        let start: Timestamp = "2026-01-05T08:00:00Z".parse().unwrap();
        let mut models = ReadModels::default();
        let mut position = 0;
        let mut apply = |models: &mut ReadModels, loop_id: &str, version, payload| {
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
                time: start + SignedDuration::from_mins(i64::from(n) + 60),
                payload,
                actor: None,
            };
            models.apply(&entry, &event);
        };
        for i in 0..n {
            let loop_id = format!("loop-{i}");
            let themes = if i % 10_000 == 1 {
                vec!["rare".to_owned()]
            } else {
                vec!["common".to_owned()]
            };
            let feedback = FeedbackReceived {
                org_unit: OrgUnit::parse(org_of(i)).unwrap(),
                channel: Channel::Web,
                received_at: Some(start + SignedDuration::from_mins(i64::from(i))),
                story: None,
                ratings: BTreeMap::new(),
                themes,
                seldom_heard: Vec::new(),
                author: None,
                consent_to_publish: false,
                language: None,
                public_id: None,
                extra: serde_json::Map::new(),
            };
            apply(
                &mut models,
                &loop_id,
                1,
                LoopEvent::FeedbackReceived(feedback),
            );
            if i < n - open {
                let report = ReportedBack {
                    by: "pals".into(),
                    message: "done".into(),
                    channel: None,
                    extra: serde_json::Map::new(),
                };
                apply(&mut models, &loop_id, 2, LoopEvent::ReportedBack(report));
            }
        }
        models
    }

    fn run(models: &ReadModels, query: &LoopQuery) -> (LoopPage, Trace) {
        let now = "2026-06-01T00:00:00Z".parse().unwrap();
        models.list_traced(query, now, &Sla::default()).unwrap()
    }

    #[test]
    fn lists_look_at_the_page_not_at_every_loop() {
        let n = 40_000;
        let bound = usize::try_from(2 * MAX_BUCKET).unwrap();

        // Only the newest 3,000 loops are open: the walk skips the closed ones a bucket at a
        // time, by intersecting bitmaps, without looking at them one by one.
        let models = models(n, 3_000);
        let (page, trace) = run(&models, &LoopQuery::default());
        assert_eq!(page.total, 3_000);
        assert_eq!(page.items[0].loop_id.as_str(), "loop-37000");
        assert!(trace.examined <= bound, "{trace:?}");
        assert!(trace.buckets <= models.order.bucket_count(), "{trace:?}");

        // Everything: the first page and a page deep in the order each look at a bucket or two.
        let all = LoopQuery {
            status: StatusFilter::All,
            limit: 100,
            ..LoopQuery::default()
        };
        let (page, trace) = run(&models, &all);
        assert_eq!(page.total, u64::from(n));
        assert!(trace.examined <= bound && trace.buckets <= 2, "{trace:?}");
        let mut deep = all.clone();
        for _ in 0..150 {
            let (page, _) = run(&models, &deep);
            deep.cursor = page.next_cursor;
        }
        let (page, trace) = run(&models, &deep);
        assert_eq!(page.items[0].loop_id.as_str(), "loop-15000");
        assert!(trace.examined <= bound && trace.buckets <= 2, "{trace:?}");

        // A rare theme: its bitmap has four loops, and only those are looked at.
        let rare = LoopQuery {
            theme: Some("rare".into()),
            ..all
        };
        let (page, trace) = run(&models, &rare);
        assert_eq!(page.total, 4);
        assert_eq!(trace.examined, 4);
        assert_eq!(trace.buckets, 0);
    }

    #[test]
    fn a_scope_pages_through_its_subtree_exactly() {
        // Three units, one a sibling whose name starts like the scope's; enough loops that
        // the scope's result is walked bucket by bucket as well as sorted whole.
        let units = ["rxx/site-a/ward-1", "rxx/site-ab", "rxx/site-a"];
        for n in [60, 9_000] {
            let models = models_in(n, n, |i| units[i as usize % 3]);
            let scope = OrgUnit::parse("rxx/site-a").unwrap();
            let expected: Vec<String> = (0..n)
                .filter(|i| i % 3 != 1)
                .map(|i| format!("loop-{i}"))
                .collect();
            let mut query = LoopQuery {
                scope: Some(scope.clone()),
                limit: 7,
                ..LoopQuery::default()
            };
            let mut seen = Vec::new();
            loop {
                let (page, _) = run(&models, &query);
                assert_eq!(page.total, expected.len() as u64, "n = {n}");
                seen.extend(
                    page.items
                        .iter()
                        .map(|item| item.loop_id.as_str().to_owned()),
                );
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => break,
                }
            }
            assert_eq!(seen, expected, "n = {n}");

            // With an org_unit filter both must hold: inside the scope it narrows, outside it
            // finds nothing.
            let narrower = LoopQuery {
                scope: Some(scope.clone()),
                org_unit: Some(OrgUnit::parse("rxx/site-a/ward-1").unwrap()),
                ..LoopQuery::default()
            };
            assert_eq!(run(&models, &narrower).0.total, u64::from(n.div_ceil(3)));
            // An ancestor of the scope finds the scope's loops; a unit outside it, none.
            for (org_unit, total) in [
                ("rxx", expected.len() as u64),
                ("rxx/site-ab", 0),
                ("ryy", 0),
            ] {
                let query = LoopQuery {
                    scope: Some(scope.clone()),
                    org_unit: Some(OrgUnit::parse(org_unit).unwrap()),
                    ..LoopQuery::default()
                };
                assert_eq!(run(&models, &query).0.total, total, "{org_unit}");
            }
        }
    }

    #[test]
    fn a_scope_no_loop_was_ever_in_finds_nothing() {
        let models = models_in(30, 30, |_| "rxx/site-a");
        let query = LoopQuery {
            scope: Some(OrgUnit::parse("rxx/site-z").unwrap()),
            ..LoopQuery::default()
        };
        let (page, _) = run(&models, &query);
        assert_eq!((page.total, page.items.len()), (0, 0));
        let site = LoopId::parse("loop-3").unwrap();
        assert_eq!(
            models.org_unit_of(&site).map(|org| org.as_str().to_owned()),
            Some("rxx/site-a".to_owned())
        );
        assert_eq!(models.org_unit_of(&LoopId::parse("nope").unwrap()), None);
    }
}
