//! Per-loop figures that depend on the SLA but not on `now`, kept per slot.
//!
//! A loop is overdue when it is open and `now` is past a due date it has not met
//! ([`Sla::is_overdue`]). Its due dates depend only on its state and the SLA, so the earliest
//! instant at which it *becomes* overdue is computed once per state change: a query then
//! decides `overdue` for each loop with one comparison. The working days it took to
//! acknowledge and to close (for the stats' medians) are kept the same way, and so are the
//! per-day aggregates built on them: the insights' ([`Daily`]) and the stats' ([`Aggregates`]).
//!
//! A snapshot keeps them with the [`Sla`] they were computed for (`snapshot::figures`):
//! loaded models whose SLA is the one asked for use them as they are, and compute them again
//! for any other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use closeloop_domain::{Channel, LoopState, OrgUnit, Sla, Stage};
use jiff::Timestamp;
use roaring::{MultiOps, RoaringBitmap};

use crate::daily::{self, Daily, Tables};
use crate::model::ReadModels;
use crate::record::{Cold, ColdTable, Hot, Ts, When, clamped_nanos};
use crate::stats::{self, Aggregates};

/// The SLA-dependent figures of every slot, for one [`Sla`].
#[derive(Debug)]
pub(crate) struct Timing {
    sla: Sla,
    /// By slot, side by side so that a scan reads one stream.
    pub(crate) slots: Vec<SlotTiming>,
    /// A scratch state through which the [`Sla`]'s own methods compute due dates, so that
    /// they are never re-implemented here.
    scratch: LoopState,
    /// Per-day aggregates of every loop, in whole working days of this SLA's calendar.
    pub(crate) daily: Daily,
    /// The per-day aggregates `GET /v1/stats` is answered from.
    pub(crate) stats: Aggregates,
    /// Open loops by the day (UTC) on which they become overdue, so that the loops overdue at
    /// a given time are a union of bitmaps (see [`overdue_at`](Self::overdue_at)). A few bytes
    /// per open loop.
    due_days: BTreeMap<i64, RoaringBitmap>,
    /// The union of `due_days` before a day, as the last query asked for it, kept up to date
    /// as loops change: queries on the same day copy it instead of uniting a bitmap per day.
    due_before: Mutex<Option<(i64, RoaringBitmap)>>,
    /// The open loops due on one day in the order they become overdue, as the last query
    /// asked for them; dropped whenever a loop due that day changes.
    due_today: Mutex<Option<(i64, Arc<[DueLoop]>)>>,
}

/// An open loop due on the day [`Timing::due_in_order`] was asked for, with what a stats
/// query checks of it, so that counting the ones overdue reads one sorted list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DueLoop {
    /// The instant it becomes overdue (see [`clamped_nanos`]).
    pub(crate) due: i64,
    pub(crate) slot: u32,
    /// Its org unit's id.
    pub(crate) org: u32,
    /// Its channel's index in `Channel::ALL`.
    pub(crate) channel: u8,
    /// The day (UTC) it was received.
    pub(crate) received: daily::Day,
}

impl Timing {
    pub(crate) fn build(sla: &Sla, hot: &[Hot], cold: &ColdTable, tables: &Tables<'_>) -> Self {
        let mut timing = Self {
            sla: sla.clone(),
            slots: Vec::with_capacity(hot.len()),
            scratch: scratch_state(),
            daily: Daily::default(),
            stats: Aggregates::default(),
            due_days: BTreeMap::new(),
            due_before: Mutex::new(None),
            due_today: Mutex::new(None),
        };
        for (slot, (hot, cold)) in hot.iter().zip(cold.iter()).enumerate() {
            let slot = u32::try_from(slot).expect("slots are u32");
            timing.compute(slot, hot, &cold);
        }
        // The two sets of aggregates read the same figures and nothing of each other: one
        // core each.
        let slots = &timing.slots;
        let (daily, stats) = std::thread::scope(|scope| {
            let stats = scope.spawn(|| Aggregates::build(hot, slots, tables.lists()));
            let daily = daily::build(tables, hot, slots);
            (
                daily,
                stats
                    .join()
                    .expect("building the stats aggregates does not panic"),
            )
        });
        timing.daily = daily;
        timing.stats = stats;
        timing
    }

    /// Figures taken from a snapshot (checked with [`check_slots`] and the aggregates' own
    /// checks), with the open loops by due day rebuilt from the slots.
    pub(crate) fn from_parts(
        sla: Sla,
        slots: Vec<SlotTiming>,
        daily: Daily,
        stats: Aggregates,
    ) -> Self {
        let due_days = due_days_of(&slots);
        Self {
            sla,
            slots,
            scratch: scratch_state(),
            daily,
            stats,
            due_days,
            due_before: Mutex::new(None),
            due_today: Mutex::new(None),
        }
    }

    /// See [`ReadModels::drop_parts`].
    pub(crate) fn drop_parts(self, after: &mut impl FnMut(&'static str)) {
        let Self {
            slots,
            daily,
            stats,
            due_days,
            due_before,
            ..
        } = self;
        drop(slots);
        after("timing.slots");
        drop(daily);
        after("timing.daily");
        drop(stats);
        after("timing.stats");
        drop((due_days, due_before));
        after("timing.due_days");
    }

    pub(crate) fn sla(&self) -> &Sla {
        &self.sla
    }

    /// Recomputes one slot after an event changed it (a new slot must be the next one), and
    /// moves its contribution to the aggregates. `before` is the slot's record as it was
    /// before the event, `None` for a new slot.
    pub(crate) fn update(
        &mut self,
        slot: u32,
        hot: &Hot,
        cold: &Cold,
        before: Option<&Hot>,
        tables: &Tables<'_>,
    ) {
        let i = slot as usize;
        let lists = tables.lists();
        let previous = before.zip(self.slots.get(i)).map(|(before, timing)| {
            (
                *before,
                tables.contribution(before, timing),
                stats::Contribution::of(before, timing, lists),
            )
        });
        self.compute(slot, hot, cold);
        let now = tables.contribution(hot, &self.slots[i]);
        let now_stats = stats::Contribution::of(hot, &self.slots[i], lists);
        match previous {
            Some((before, was, was_stats)) if same_keys(&before, hot) => {
                if was != now {
                    self.daily.replace(&tables.keys_of(hot), &was, &now);
                }
                if was_stats != now_stats {
                    let keys = stats::keys_of(hot, lists);
                    self.stats.replace(&keys, &was_stats, &now_stats);
                }
            }
            Some((before, was, was_stats)) => {
                self.daily.remove(&tables.keys_of(&before), &was);
                self.daily.add(&tables.keys_of(hot), &now);
                self.stats
                    .remove(&stats::keys_of(&before, lists), &was_stats);
                self.stats.add(&stats::keys_of(hot, lists), &now_stats);
            }
            None => {
                self.daily.add(&tables.keys_of(hot), &now);
                self.stats.add(&stats::keys_of(hot, lists), &now_stats);
            }
        }
    }

    /// Computes one slot's figures (a new slot must be the next one).
    fn compute(&mut self, slot: u32, hot: &Hot, cold: &Cold) {
        let received = hot.received();
        let state = &mut self.scratch;
        state.stage = hot.stage();
        state.received_at = received.timestamp();
        state.first_contact_at = cold.get(When::FirstContactAt).map(Ts::timestamp);
        state.close_clock_from = cold.close_clock_from(received).timestamp();
        let due = if hot.is_closed() {
            i64::MAX
        } else {
            // `Sla::is_overdue` is: open && ((no first contact && now > acknowledge_by) ||
            // now > close_by), that is: now > the earlier of the due dates still unmet.
            let close_by = self.sla.close_by(state);
            let due = if state.first_contact_at.is_none() {
                close_by.min(self.sla.acknowledge_by(state))
            } else {
                close_by
            };
            clamped_nanos(due)
        };
        let days = |to: Option<Timestamp>| {
            to.map_or(NO_DAYS, |to| {
                days_key(
                    self.sla
                        .calendar
                        .working_days_between(state.received_at, to),
                )
            })
        };
        let timing = SlotTiming {
            due,
            ack: days(state.first_contact_at),
            close: days(cold.get(When::ClosedAt).map(Ts::timestamp)),
        };
        let i = slot as usize;
        let before = self.slots.get(i).map(|before| before.due);
        let due_today = self
            .due_today
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((day, _)) = due_today
            && [before.and_then(due_day), due_day(timing.due)].contains(&Some(*day))
        {
            // Its due instant, org unit or day of receipt may have changed.
            *due_today = None;
        }
        if i == self.slots.len() {
            self.slots.push(timing);
        } else {
            self.slots[i] = timing;
        }
        if before != Some(timing.due) {
            let due_before = self
                .due_before
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(day) = before.and_then(due_day) {
                if let Some(open) = self.due_days.get_mut(&day) {
                    open.remove(slot);
                    if open.is_empty() {
                        self.due_days.remove(&day);
                    }
                }
                if let Some((before_day, union)) = due_before.as_mut()
                    && day < *before_day
                {
                    union.remove(slot);
                }
            }
            if let Some(day) = due_day(timing.due) {
                self.due_days.entry(day).or_default().insert(slot);
                if let Some((before_day, union)) = due_before.as_mut()
                    && day < *before_day
                {
                    union.insert(slot);
                }
            }
        }
    }

    /// The loops overdue at `now` (see [`clamped_nanos`]): every open loop due on an earlier
    /// day, and those due earlier today.
    pub(crate) fn overdue_at(&self, now: i64) -> RoaringBitmap {
        let today = now.div_euclid(NANOS_PER_DAY);
        let mut overdue = {
            let mut due_before = self
                .due_before
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match due_before.as_ref() {
                Some((day, union)) if *day == today => union.clone(),
                _ => {
                    let union = self.due_days.range(..today).map(|(_, open)| open).union();
                    *due_before = Some((today, union.clone()));
                    union
                }
            }
        };
        if let Some(open) = self.due_days.get(&today) {
            overdue.extend(open.iter().filter(|&slot| self.is_overdue(slot, now)));
        }
        overdue
    }

    /// The open loops that become overdue on `day` (UTC days since 1970), in the order they
    /// do: those overdue at any instant of the day are the ones before it.
    pub(crate) fn due_in_order(&self, day: i64, hot: &[Hot]) -> Arc<[DueLoop]> {
        let mut cached = self
            .due_today
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((cached_day, loops)) = cached.as_ref()
            && *cached_day == day
        {
            return Arc::clone(loops);
        }
        let mut loops: Vec<DueLoop> = self
            .due_on(day)
            .into_iter()
            .flatten()
            .map(|slot| {
                let hot = &hot[slot as usize];
                DueLoop {
                    due: self.slots[slot as usize].due,
                    slot,
                    org: hot.org,
                    channel: hot.channel,
                    received: daily::day_of(hot.received()),
                }
            })
            .collect();
        loops.sort_unstable_by_key(|due| (due.due, due.slot));
        let loops: Arc<[DueLoop]> = loops.into();
        *cached = Some((day, Arc::clone(&loops)));
        loops
    }

    /// The open loops that become overdue on `day` (UTC days since 1970), if any.
    pub(crate) fn due_on(&self, day: i64) -> Option<&RoaringBitmap> {
        self.due_days.get(&day)
    }

    /// Whether the loop in `slot` is overdue at `now` (see [`clamped_nanos`]).
    pub(crate) fn is_overdue(&self, slot: u32, now: i64) -> bool {
        now > self.slots[slot as usize].due
    }
}

/// The open loops by the day on which they become overdue, as [`Timing::compute`] keeps
/// them: slot after slot, so that each day's slots come in order.
fn due_days_of(slots: &[SlotTiming]) -> BTreeMap<i64, RoaringBitmap> {
    let mut by_day: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (slot, timing) in (0_u32..).zip(slots) {
        if let Some(day) = due_day(timing.due) {
            by_day.entry(day).or_default().push(slot);
        }
    }
    by_day
        .into_iter()
        .map(|(day, slots)| {
            let open = RoaringBitmap::from_sorted_iter(slots).expect("slots in increasing order");
            (day, open)
        })
        .collect()
}

/// Whether every slot's figures agree with its record as [`Timing::compute`] makes them: one
/// a loop; a closed loop never due; working days to acknowledge exactly when there was a
/// first contact and to close exactly when it is closed, never negative.
///
/// # Errors
/// A sentence saying what does not agree.
pub(crate) fn check_slots(
    slots: &[SlotTiming],
    hot: &[Hot],
    cold: &ColdTable,
) -> Result<(), String> {
    if slots.len() != hot.len() {
        return Err("the SLA figures are not one a loop".into());
    }
    let days_agree = |key: u64, at: Option<Ts>| {
        (key == NO_DAYS) == at.is_none() && (key == NO_DAYS || f64::from_bits(key) >= 0.0)
    };
    let agree = slots
        .iter()
        .zip(hot)
        .zip(cold.iter())
        .all(|((timing, hot), cold)| {
            (!hot.is_closed() || timing.due == i64::MAX)
                && days_agree(timing.ack, cold.get(When::FirstContactAt))
                && days_agree(timing.close, cold.get(When::ClosedAt))
        });
    if agree {
        Ok(())
    } else {
        Err("a loop's SLA figures do not agree with its record".into())
    }
}

/// Nanoseconds in a day.
pub(crate) const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The day a due instant falls on; `None` for a closed loop, which is never due.
pub(crate) fn due_day(due: i64) -> Option<i64> {
    (due != i64::MAX).then(|| due.div_euclid(NANOS_PER_DAY))
}

/// Whether two records of a loop count in the same keys: only a second `feedback.received`
/// changes them.
fn same_keys(a: &Hot, b: &Hot) -> bool {
    (a.org, a.themes, a.tags, a.channel) == (b.org, b.themes, b.tags, b.channel)
}

/// One slot's SLA-dependent figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotTiming {
    /// The loop is overdue exactly when `clamped_nanos(now) > due`; `i64::MAX` for a closed
    /// loop, which is never overdue.
    pub(crate) due: i64,
    /// Working days from `received_at` to the first contact, as a [`days_key`]; [`NO_DAYS`]
    /// when there was none.
    pub(crate) ack: u64,
    /// Working days from `received_at` to `closed_at`, as a [`days_key`]; [`NO_DAYS`] while
    /// open.
    pub(crate) close: u64,
}

/// Marks "no value" among [`days_key`]s: a NaN pattern `working_days_between` never returns.
pub(crate) const NO_DAYS: u64 = u64::MAX;

/// A number of working days (never negative) as the bits of its `f64`: for non-negative
/// floats, ordering the bits as integers orders the numbers, and integers compare faster.
pub(crate) fn days_key(days: f64) -> u64 {
    debug_assert!(days >= 0.0, "working days are never negative");
    days.max(0.0).to_bits()
}

/// The working days of a [`days_key`] counted in `1 / per_day` parts of a day, made whole
/// by `round` (`f64::floor`, `f64::round`) and clamped to the range of `u32`; `None` for
/// [`NO_DAYS`].
pub(crate) fn days_in_units(key: u64, per_day: f64, round: fn(f64) -> f64) -> Option<u32> {
    if key == NO_DAYS {
        return None;
    }
    let units = round(f64::from_bits(key) * per_day);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to the range of u32 first"
    )]
    Some(units.clamp(0.0, f64::from(u32::MAX)) as u32)
}

fn scratch_state() -> LoopState {
    LoopState {
        version: 0,
        stage: Stage::Received,
        org_unit: OrgUnit::parse("scratch").expect("a valid org unit"),
        channel: Channel::Other,
        themes: Vec::new(),
        seldom_heard: Vec::new(),
        ratings: std::collections::BTreeMap::new(),
        consent_to_publish: false,
        received_at: Timestamp::UNIX_EPOCH,
        acknowledged_at: None,
        first_contact_at: None,
        closed_at: None,
        close_clock_from: Timestamp::UNIX_EPOCH,
        has_outcome: false,
    }
}

impl ReadModels {
    /// Computes the SLA-dependent figures for `sla` now, if they are not kept already (models
    /// loaded from a snapshot saved with figures for the same SLA keep them), so that the
    /// first query with this SLA is as fast as the rest. From then on [`apply`](Self::apply)
    /// keeps them up to date. Returns whether it computed them (then a snapshot saved now
    /// keeps them for the next start).
    pub fn prepare(&self, sla: &Sla) -> bool {
        {
            let guard = self.timing.read().unwrap_or_else(PoisonError::into_inner);
            if guard.as_ref().is_some_and(|timing| timing.sla() == sla) {
                return false;
            }
        }
        self.with_timing(sla, |_| ());
        true
    }

    /// Runs `f` with the figures for `sla`, computing them first when they are missing or were
    /// computed for another SLA.
    pub(crate) fn with_timing<R>(&self, sla: &Sla, f: impl FnOnce(&Timing) -> R) -> R {
        {
            let guard = self.timing.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(timing) = guard.as_ref()
                && timing.sla() == sla
            {
                return f(timing);
            }
        }
        let mut guard = self.timing.write().unwrap_or_else(PoisonError::into_inner);
        if guard.as_ref().is_none_or(|t| t.sla() != sla) {
            let started = std::time::Instant::now();
            *guard = Some(Timing::build(sla, &self.hot, &self.cold, &self.tables()));
            tracing::debug!(
                loops = self.hot.len(),
                seconds = started.elapsed().as_secs_f64(),
                "computed due dates for the SLA in use"
            );
        }
        f(guard.as_ref().expect("just computed"))
    }
}
