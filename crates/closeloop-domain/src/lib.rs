//! The loop state machine of Closeloop, as pure functions.
//!
//! A *loop* is one piece of feedback and everything done about it, until the outcome is
//! reported back. This crate holds:
//!
//! - [`ids`]: validated identifiers ([`LoopId`], [`OrgUnit`], [`Channel`]);
//! - [`event`]: the eight event types of the contract and the [`Event`] envelope;
//! - [`state`]: [`LoopState`], folded from a loop's events by [`apply`];
//! - [`decide()`]: given a loop's state and a [`Command`], the events to record or a [`Rejection`];
//! - [`limits`]: [`Limits`], the bounds on every field and time, checked by
//!   [`LoopEvent::from_data`] and [`decide()`] (and their `_with` variants for lowered limits);
//! - [`calendar`]: working-day due dates and the `overdue` rule.
//!
//! Nothing here does I/O or reads a clock: time comes in with each command, so every rule can
//! be tested as given-events / when-command / then-events-or-rejection.

pub mod calendar;
mod check;
mod decide;
pub mod event;
pub mod ids;
pub mod limits;
mod rejection;
pub mod state;

pub use calendar::{Calendar, Sla};
pub use decide::{Command, decide, decide_with};
pub use event::{Event, EventType, LoopEvent};
pub use ids::{Channel, LoopId, OrgUnit};
pub use limits::{LimitError, Limits, OutOfWindow};
pub use rejection::Rejection;
pub use state::{LoopState, Stage, Status, apply};
