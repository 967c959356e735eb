//! One loop's compact record, and the time type it stores.
//!
//! A record is split in two: [`Hot`] holds what filters and stats read for every loop (32
//! bytes), [`Cold`] what only a loop's summary needs. Scans over a million loops touch the
//! hot half only.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use closeloop_domain::{Channel, Stage};

/// An instant as jiff keeps it: whole seconds since 1970 and the nanoseconds past them (with
/// the sign of the seconds). Ordering the pair orders the instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Ts {
    pub(crate) secs: i64,
    pub(crate) nanos: i32,
}

impl Ts {
    pub(crate) fn of(ts: Timestamp) -> Self {
        Self {
            secs: ts.as_second(),
            nanos: ts.subsec_nanosecond(),
        }
    }

    /// Back to a [`Timestamp`]. Values only ever come from timestamps (or from a snapshot
    /// that checked them), so this cannot fail in practice; the fallback keeps it total.
    pub(crate) fn timestamp(self) -> Timestamp {
        Timestamp::new(self.secs, self.nanos).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    pub(crate) fn is_valid(self) -> bool {
        Timestamp::new(self.secs, self.nanos).is_ok()
    }
}

/// Nanoseconds since 1970, clamped to `i64`: exact from 1678 to 2262, which is every instant
/// a due date or a `now` will realistically be. Used only to compare due dates with `now`.
pub(crate) fn clamped_nanos(ts: Timestamp) -> i64 {
    let nanos = ts.as_nanosecond();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// Flag: the person agreed to publication of their redacted story.
pub(crate) const CONSENT: u8 = 1;
/// Flag: a change or no-change was recorded since receipt or the last reopening.
pub(crate) const HAS_OUTCOME: u8 = 2;
/// Flag: the latest outcome recorded since receipt or the last reopening is a change (a
/// `loop.change_made`, not a `loop.no_change`).
pub(crate) const HAS_CHANGE: u8 = 4;

/// What every filter and aggregate reads: kept small so that scans stay in cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hot {
    /// `received_at`, seconds part.
    pub(crate) received_secs: i64,
    /// `received_at`, nanoseconds part.
    pub(crate) received_nanos: i32,
    /// The org unit's id in the org names table (the full path).
    pub(crate) org: u32,
    /// The themes' list id.
    pub(crate) themes: u32,
    /// The seldom-heard tags' list id.
    pub(crate) tags: u32,
    /// The ratings' set id.
    pub(crate) ratings: u32,
    /// Index into [`Stage::ALL`].
    pub(crate) stage: u8,
    /// Index into [`Channel::ALL`].
    pub(crate) channel: u8,
    /// [`CONSENT`], [`HAS_OUTCOME`], [`HAS_CHANGE`].
    pub(crate) flags: u8,
}

impl Hot {
    pub(crate) fn received(&self) -> Ts {
        Ts {
            secs: self.received_secs,
            nanos: self.received_nanos,
        }
    }

    pub(crate) fn stage(&self) -> Stage {
        Stage::ALL[usize::from(self.stage)]
    }

    pub(crate) fn channel(&self) -> Channel {
        Channel::ALL[usize::from(self.channel)]
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.stage() == Stage::Closed
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The index of a stage in [`Stage::ALL`].
pub(crate) fn stage_index(stage: Stage) -> u8 {
    match stage {
        Stage::Received => 0,
        Stage::Acknowledged => 1,
        Stage::Responded => 2,
        Stage::ActionPlanned => 3,
        Stage::OutcomeRecorded => 4,
        Stage::Closed => 5,
    }
}

/// The index of a channel in [`Channel::ALL`].
pub(crate) fn channel_index(channel: Channel) -> u8 {
    let index = Channel::ALL
        .iter()
        .position(|&c| c == channel)
        .expect("every channel is in Channel::ALL");
    u8::try_from(index).expect("ten channels")
}

/// Marks an absent time in [`Cold`]: no real instant has this nanosecond part.
const NONE_NANOS: i32 = i32::MIN;

/// Which time of [`Cold`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum When {
    AcknowledgedAt = 0,
    FirstContactAt = 1,
    ClosedAt = 2,
    CloseClockFrom = 3,
}

/// What only a loop's summary and due dates need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cold {
    /// The loop's version: the version of the last event applied to it.
    pub(crate) version: u64,
    secs: [i64; 4],
    nanos: [i32; 4],
    /// The loop's public id (see [`PublicKey`](crate::PublicKey)).
    pub(crate) public_id: [u8; 16],
}

impl Cold {
    pub(crate) fn new(version: u64, received: Ts, public_id: [u8; 16]) -> Self {
        let mut cold = Self {
            version,
            secs: [0; 4],
            nanos: [NONE_NANOS; 4],
            public_id,
        };
        cold.set(When::CloseClockFrom, Some(received));
        cold
    }

    /// The stored times as they are kept, for snapshots: seconds and nanoseconds by
    /// [`When`], an absent time with a nanosecond part no real instant has.
    pub(crate) fn times(&self) -> ([i64; 4], [i32; 4]) {
        (self.secs, self.nanos)
    }

    /// A record from the parts [`times`](Self::times) gives; check it with
    /// [`is_valid`](Self::is_valid).
    pub(crate) fn from_times(
        version: u64,
        secs: [i64; 4],
        nanos: [i32; 4],
        public_id: [u8; 16],
    ) -> Self {
        Self {
            version,
            secs,
            nanos,
            public_id,
        }
    }

    pub(crate) fn get(&self, when: When) -> Option<Ts> {
        let i = when as usize;
        (self.nanos[i] != NONE_NANOS).then_some(Ts {
            secs: self.secs[i],
            nanos: self.nanos[i],
        })
    }

    pub(crate) fn set(&mut self, when: When, ts: Option<Ts>) {
        let i = when as usize;
        match ts {
            Some(ts) => {
                self.secs[i] = ts.secs;
                self.nanos[i] = ts.nanos;
            }
            None => {
                self.secs[i] = 0;
                self.nanos[i] = NONE_NANOS;
            }
        }
    }

    /// Whether every stored time is a real instant (checked when a snapshot is loaded).
    pub(crate) fn is_valid(&self) -> bool {
        (0..4).all(|i| {
            self.nanos[i] == NONE_NANOS
                || Ts {
                    secs: self.secs[i],
                    nanos: self.nanos[i],
                }
                .is_valid()
        })
    }

    /// `close_clock_from`, which every loop has.
    pub(crate) fn close_clock_from(&self, received: Ts) -> Ts {
        self.get(When::CloseClockFrom).unwrap_or(received)
    }
}

/// Every loop's [`Cold`] half by slot, packed into 56 bytes a loop instead of 72: each time as
/// nanoseconds since 1970 in one `i64` (exact from 1678 to 2262) and the version in 32 bits.
/// A record that does not fit (an instant outside those years, a version past four billion)
/// is kept whole on the side, so every record reads back exactly as it was stored.
#[derive(Debug, Default)]
pub(crate) struct ColdTable {
    packed: Vec<PackedCold>,
    /// The records [`PackedCold`] cannot hold, by slot; their packed entry is a marker.
    whole: HashMap<u32, Cold>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedCold {
    /// By [`When`]: nanoseconds since 1970, or [`NO_TIME`].
    times: [i64; 4],
    public_id: [u8; 16],
    /// The loop's version, or [`KEPT_WHOLE`].
    version: u32,
}

/// A time that is not set, in [`PackedCold::times`].
const NO_TIME: i64 = i64::MIN;
/// In [`PackedCold::version`]: the record is in [`ColdTable::whole`].
const KEPT_WHOLE: u32 = u32::MAX;
const NANOS_PER_SEC: i64 = 1_000_000_000;

impl PackedCold {
    /// The record packed, if packing loses nothing.
    fn pack(cold: &Cold) -> Option<Self> {
        let version = u32::try_from(cold.version)
            .ok()
            .filter(|&v| v != KEPT_WHOLE)?;
        let mut times = [NO_TIME; 4];
        for (i, time) in times.iter_mut().enumerate() {
            if cold.nanos[i] != NONE_NANOS {
                *time = cold.secs[i]
                    .checked_mul(NANOS_PER_SEC)?
                    .checked_add(i64::from(cold.nanos[i]))
                    .filter(|&t| t != NO_TIME)?;
            }
        }
        let packed = Self {
            times,
            public_id: cold.public_id,
            version,
        };
        // Seconds and nanoseconds of opposite signs (never from a timestamp) would come back
        // as another pair for the same instant: keep such a record whole.
        (packed.unpack() == *cold).then_some(packed)
    }

    fn unpack(&self) -> Cold {
        let mut secs = [0; 4];
        let mut nanos = [NONE_NANOS; 4];
        for (i, &time) in self.times.iter().enumerate() {
            if time != NO_TIME {
                // Both truncate towards zero: the nanoseconds get the sign of the seconds,
                // as jiff keeps them.
                secs[i] = time / NANOS_PER_SEC;
                nanos[i] = i32::try_from(time % NANOS_PER_SEC).expect("under a second");
            }
        }
        Cold::from_times(u64::from(self.version), secs, nanos, self.public_id)
    }
}

impl ColdTable {
    pub(crate) fn len(&self) -> usize {
        self.packed.len()
    }

    /// The record of `slot`, which must exist.
    pub(crate) fn get(&self, slot: usize) -> Cold {
        let packed = &self.packed[slot];
        if packed.version == KEPT_WHOLE {
            let slot = u32::try_from(slot).expect("slots are u32");
            return self.whole[&slot];
        }
        packed.unpack()
    }

    /// Replaces the record of `slot`, which must exist.
    pub(crate) fn set(&mut self, slot: usize, cold: Cold) {
        let key = u32::try_from(slot).expect("slots are u32");
        match PackedCold::pack(&cold) {
            Some(packed) => {
                self.packed[slot] = packed;
                self.whole.remove(&key);
            }
            None => {
                self.packed[slot] = Self::marker(cold.public_id);
                self.whole.insert(key, cold);
            }
        }
    }

    /// Adds the record of the next slot.
    pub(crate) fn push(&mut self, cold: Cold) {
        let slot = self.packed.len();
        self.packed.push(Self::marker(cold.public_id));
        self.set(slot, cold);
    }

    /// Every record in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Cold> + '_ {
        (0..self.packed.len()).map(|slot| self.get(slot))
    }

    fn marker(public_id: [u8; 16]) -> PackedCold {
        PackedCold {
            times: [NO_TIME; 4],
            public_id,
            version: KEPT_WHOLE,
        }
    }
}

impl From<Vec<Cold>> for ColdTable {
    fn from(records: Vec<Cold>) -> Self {
        let mut table = Self {
            packed: Vec::with_capacity(records.len()),
            whole: HashMap::new(),
        };
        for cold in records {
            table.push(cold);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_small() {
        assert_eq!(std::mem::size_of::<Hot>(), 32);
        // 56 bytes of times and version, and the 16-byte public id.
        assert_eq!(std::mem::size_of::<Cold>(), 72);
        // Packed: 32 bytes of times, the public id, a 32-bit version.
        assert_eq!(std::mem::size_of::<PackedCold>(), 56);
    }

    fn cold_at(version: u64, times: [Option<&str>; 4]) -> Cold {
        let mut cold = Cold::from_times(version, [0; 4], [NONE_NANOS; 4], [7; 16]);
        for (i, when) in [
            When::AcknowledgedAt,
            When::FirstContactAt,
            When::ClosedAt,
            When::CloseClockFrom,
        ]
        .into_iter()
        .enumerate()
        {
            cold.set(
                when,
                times[i].map(|t| Ts::of(t.parse().expect("timestamp"))),
            );
        }
        cold
    }

    #[test]
    fn the_cold_table_gives_back_every_record_exactly() {
        let records = vec![
            cold_at(1, [None, None, None, Some("2026-11-27T09:30:00Z")]),
            cold_at(
                5,
                [
                    Some("2026-11-27T09:30:00.000000001Z"),
                    Some("1969-12-31T23:59:59.5Z"),
                    Some("1970-01-01T00:00:00Z"),
                    Some("2262-04-11T23:47:16Z"),
                ],
            ),
            // Outside what 64 bits of nanoseconds hold: kept whole.
            cold_at(2, [Some("1600-01-01T00:00:00.5Z"), None, None, None]),
            cold_at(
                3,
                [None, None, Some("9999-12-30T00:00:00.999999999Z"), None],
            ),
            cold_at(u64::from(u32::MAX), [None; 4]),
            cold_at(u64::MAX, [None; 4]),
            // Not from a timestamp: seconds and nanoseconds of opposite signs.
            Cold::from_times(
                1,
                [1, 0, 0, 0],
                [-5, NONE_NANOS, NONE_NANOS, NONE_NANOS],
                [1; 16],
            ),
        ];
        let mut table = ColdTable::from(records.clone());
        assert_eq!(table.iter().collect::<Vec<_>>(), records);
        assert_eq!(table.whole.len(), 5, "only the records that do not fit");
        // Records move between packed and whole as they change.
        table.set(2, records[0]);
        table.set(0, records[3]);
        assert_eq!(table.get(2), records[0]);
        assert_eq!(table.get(0), records[3]);
        assert_eq!(table.whole.len(), 5);
        table.set(0, records[1]);
        assert_eq!(table.whole.len(), 4);
        assert_eq!(table.get(0), records[1]);
        assert_eq!(table.len(), records.len());
    }

    #[test]
    fn ts_orders_like_timestamps_before_and_after_1970() {
        let mut stamps: Vec<Timestamp> = [
            "1969-12-31T23:59:58.5Z",
            "1969-12-31T23:59:59Z",
            "1969-12-31T23:59:59.5Z",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.25Z",
            "2026-11-27T09:30:00.000000001Z",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        stamps.reverse();
        let mut ts: Vec<Ts> = stamps.iter().copied().map(Ts::of).collect();
        ts.sort();
        stamps.sort();
        let back: Vec<Timestamp> = ts.into_iter().map(Ts::timestamp).collect();
        assert_eq!(back, stamps);
    }
}
