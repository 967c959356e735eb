//! The SLA-dependent figures in a snapshot (since format 5): the SLA they were computed for,
//! every slot's due instant and working days, and the per-day aggregates built on them, so
//! that a start with the same SLA does not compute them again. The open loops by due day are
//! rebuilt from the slots' due instants on load.
//!
//! Loading checks them as it checks the records: the same number of slots as loops, each
//! slot's figures present exactly when its record says they can be, aggregates well formed,
//! naming only ids the tables have, and counting every loop once.

use closeloop_domain::{Calendar, Sla};
use serde::{Deserialize, Serialize};

use super::plain::{Column, column};
use crate::daily::{Daily, FlatDaily, TableSizes};
use crate::record::{ColdTable, Hot};
use crate::stats::{Aggregates, FlatAggregates};
use crate::timing::{SlotTiming, Timing, check_slots};

/// An [`Sla`] as plain values: its days, and its holidays as `YYYY-MM-DD`.
#[derive(Debug, Serialize, Deserialize)]
struct SlaParts {
    acknowledge_days: u32,
    close_days: u32,
    holidays: Vec<String>,
}

impl SlaParts {
    fn of(sla: &Sla) -> Self {
        Self {
            acknowledge_days: sla.acknowledge_days,
            close_days: sla.close_days,
            holidays: sla.calendar.holidays().map(|day| day.to_string()).collect(),
        }
    }

    fn to_sla(&self) -> Result<Sla, String> {
        let holidays = self
            .holidays
            .iter()
            .map(|day| {
                day.parse()
                    .map_err(|err| format!("the SLA's holiday {day:?} is not a date: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sla {
            acknowledge_days: self.acknowledge_days,
            close_days: self.close_days,
            calendar: Calendar::with_holidays(holidays),
        })
    }
}

/// The figures as a snapshot writes them.
#[derive(Serialize)]
pub(super) struct FiguresOut<'a> {
    sla: SlaParts,
    slots: Column<'a, SlotTiming>,
    daily: FlatDaily,
    stats: FlatAggregates,
}

impl<'a> FiguresOut<'a> {
    pub(super) fn of(timing: &'a Timing) -> Self {
        Self {
            sla: SlaParts::of(timing.sla()),
            slots: Column(&timing.slots),
            daily: timing.daily.to_flat(),
            stats: timing.stats.to_flat(),
        }
    }
}

/// The figures as a snapshot holds them, before they are checked.
#[derive(Deserialize)]
pub(super) struct FiguresIn<'a> {
    sla: SlaParts,
    slots: &'a [u8],
    daily: FlatDaily,
    stats: FlatAggregates,
}

impl FiguresIn<'_> {
    /// The figures, checked against the loops' records and the tables' sizes (see the module
    /// docs).
    pub(super) fn restore(
        &self,
        hot: &[Hot],
        cold: &ColdTable,
        sizes: &TableSizes,
    ) -> Result<Timing, String> {
        let sla = self.sla.to_sla()?;
        let slots: Vec<SlotTiming> = column(self.slots, "SLA figures")?;
        check_slots(&slots, hot, cold)?;
        let loops = hot.len() as u64;
        let daily = Daily::from_flat(&self.daily, sizes)?;
        if daily.loops() != loops {
            return Err("the per-day aggregates do not count every loop once".into());
        }
        let stats = Aggregates::from_flat(&self.stats, sizes)?;
        if stats.loops() != loops {
            return Err("the stats aggregates do not count every loop once".into());
        }
        Ok(Timing::from_parts(sla, slots, daily, stats))
    }
}
