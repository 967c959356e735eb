//! One loop's compact record, and the time type it stores.
//!
//! A record is split in two: [`Hot`] holds what filters and stats read for every loop (32
//! bytes), [`Cold`] what only a loop's summary needs. Scans over a million loops touch the
//! hot half only.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_small() {
        assert_eq!(std::mem::size_of::<Hot>(), 32);
        // 56 bytes of times and version, and the 16-byte public id.
        assert_eq!(std::mem::size_of::<Cold>(), 72);
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
