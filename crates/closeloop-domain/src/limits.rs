//! How much one event may hold, and when it may be dated: the bounds that keep any single input
//! from taking the service down.
//!
//! Every field of every event has a bound, checked where the data is parsed
//! ([`LoopEvent::from_data_with`](crate::LoopEvent::from_data_with)) and where a command meets
//! its loop ([`decide_with`](crate::decide_with)), for HTTP and NATS alike. The defaults are the
//! documented ones (`docs/events.md`, "Limits"); an operator may lower them, never raise them,
//! because the rest of the system (the outbound feed, the projections, the dead-letter stream)
//! is sized for the defaults. [`Limits::check`] enforces that.

use std::fmt;

use jiff::{SignedDuration, Timestamp};

/// The bounds on one event's data and times. Build one with [`Limits::default`] and lower
/// fields as needed; [`Limits::check`] refuses a configuration above the defaults.
///
/// Text lengths are counted in UTF-8 bytes. A value that is exactly at a limit is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest `story`, in bytes. Default 100,000.
    pub max_story_bytes: usize,
    /// Longest value of every other text, in bytes: `by`, `message`, `text`, `description`,
    /// `owner`, `reason`, `language`, `change_id`, `author.name`, `author.contact`, and each
    /// unknown field (of the data or of `author`) and `evidence`, which are measured as
    /// serialised JSON unless they are strings. Default 20,000.
    pub max_text_bytes: usize,
    /// Most `themes` on one loop. Default 50.
    pub max_themes: usize,
    /// Most `seldom_heard` tags on one loop. Default 20.
    pub max_seldom_heard: usize,
    /// Longest theme or seldom-heard tag, in bytes. Default 100.
    pub max_tag_bytes: usize,
    /// Most `ratings` on one loop. Default 20.
    pub max_ratings: usize,
    /// Longest rating name, in bytes. Default 100.
    pub max_rating_name_bytes: usize,
    /// Deepest nesting of objects and arrays in an event's data, the data object itself being
    /// level 1. Default 32.
    pub max_depth: usize,
    /// The earliest time an event, `received_at` or a `due` date may name.
    /// Default 2000-01-01T00:00:00Z.
    pub earliest: Timestamp,
    /// How far after the command's time `received_at` may be, and how far after its arrival a
    /// CloudEvent's `time` may be: clocks drift, but feedback is not received in the future.
    /// Default 5 minutes.
    pub max_future: SignedDuration,
}

impl Limits {
    /// The documented defaults, the highest values [`Limits::check`] allows.
    pub const DEFAULT: Limits = Limits {
        max_story_bytes: 100_000,
        max_text_bytes: 20_000,
        max_themes: 50,
        max_seldom_heard: 20,
        max_tag_bytes: 100,
        max_ratings: 20,
        max_rating_name_bytes: 100,
        max_depth: 32,
        // 2000-01-01T00:00:00Z.
        earliest: Timestamp::constant(946_684_800, 0),
        max_future: SignedDuration::from_mins(5),
    };

    /// Checks that every limit is at or below its default (for `earliest`: not before it), and
    /// that no size is zero, which would refuse every event.
    ///
    /// # Errors
    /// A [`LimitError`] naming the first limit that is out of range.
    pub fn check(&self) -> Result<(), LimitError> {
        let default = Limits::DEFAULT;
        let sizes = [
            (
                "max_story_bytes",
                self.max_story_bytes,
                default.max_story_bytes,
                1,
            ),
            (
                "max_text_bytes",
                self.max_text_bytes,
                default.max_text_bytes,
                1,
            ),
            ("max_themes", self.max_themes, default.max_themes, 0),
            (
                "max_seldom_heard",
                self.max_seldom_heard,
                default.max_seldom_heard,
                0,
            ),
            (
                "max_tag_bytes",
                self.max_tag_bytes,
                default.max_tag_bytes,
                1,
            ),
            ("max_ratings", self.max_ratings, default.max_ratings, 0),
            (
                "max_rating_name_bytes",
                self.max_rating_name_bytes,
                default.max_rating_name_bytes,
                1,
            ),
            ("max_depth", self.max_depth, default.max_depth, 1),
        ];
        for (name, value, default, min) in sizes {
            if value > default {
                return Err(LimitError::AboveDefault {
                    name,
                    value: value.to_string(),
                    default: default.to_string(),
                });
            }
            if value < min {
                return Err(LimitError::TooLow {
                    name,
                    value: value.to_string(),
                    min: min.to_string(),
                });
            }
        }
        if self.earliest < default.earliest {
            return Err(LimitError::AboveDefault {
                name: "earliest",
                value: self.earliest.to_string(),
                default: default.earliest.to_string(),
            });
        }
        if self.max_future > default.max_future {
            return Err(LimitError::AboveDefault {
                name: "max_future",
                value: Minutes(self.max_future).to_string(),
                default: Minutes(default.max_future).to_string(),
            });
        }
        if self.max_future.is_negative() {
            return Err(LimitError::TooLow {
                name: "max_future",
                value: Minutes(self.max_future).to_string(),
                min: "0 seconds".to_owned(),
            });
        }
        Ok(())
    }

    /// Checks that `instant` lies in the accepted window: not before [`Limits::earliest`] and
    /// at most [`Limits::max_future`] after `reference` (the time it is compared with, such as
    /// the command's time or when a message arrived).
    ///
    /// # Errors
    /// [`OutOfWindow`] saying which edge was crossed; its
    /// [`sentence`](OutOfWindow::sentence) explains it to the sender.
    pub fn check_time(&self, instant: Timestamp, reference: Timestamp) -> Result<(), OutOfWindow> {
        if instant < self.earliest {
            return Err(OutOfWindow::BeforeEarliest {
                instant,
                earliest: self.earliest,
            });
        }
        // Near the end of the representable range there is nothing later to refuse.
        let latest = reference
            .checked_add(self.max_future)
            .unwrap_or(Timestamp::MAX);
        if instant > latest {
            return Err(OutOfWindow::TooFarAhead {
                instant,
                reference,
                max_future: self.max_future,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A configured [`Limits`] that cannot be used. The message names the limit and what is
/// allowed, for the operator who set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A limit is looser than its documented default.
    #[error(
        "the limit {name} is set to {value}, looser than its default {default}; limits can be lowered but not raised"
    )]
    AboveDefault {
        /// The limit's name, as the [`Limits`] field.
        name: &'static str,
        /// The configured value.
        value: String,
        /// The default, the loosest value allowed.
        default: String,
    },
    /// A limit is so low that no event could pass.
    #[error(
        "the limit {name} is set to {value}; it must be at least {min}, or no event could be accepted"
    )]
    TooLow {
        /// The limit's name, as the [`Limits`] field.
        name: &'static str,
        /// The configured value.
        value: String,
        /// The lowest value allowed.
        min: String,
    },
}

/// Why an instant is outside the window of [`Limits::check_time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfWindow {
    /// The instant is before [`Limits::earliest`].
    BeforeEarliest {
        /// The refused instant.
        instant: Timestamp,
        /// The earliest accepted.
        earliest: Timestamp,
    },
    /// The instant is more than [`Limits::max_future`] after the reference time.
    TooFarAhead {
        /// The refused instant.
        instant: Timestamp,
        /// What it was compared with.
        reference: Timestamp,
        /// How far after `reference` is still accepted.
        max_future: SignedDuration,
    },
}

impl OutOfWindow {
    /// A sentence for the sender: `what` names the refused time as they wrote it (e.g.
    /// `received_at`), `reference` names the time it was compared with (e.g. `the event's time`).
    #[must_use]
    pub fn sentence(&self, what: &str, reference: &str) -> String {
        match *self {
            OutOfWindow::BeforeEarliest { instant, earliest } => format!(
                "{what} is {instant}, before the earliest accepted time {earliest}; check the date"
            ),
            OutOfWindow::TooFarAhead {
                instant,
                reference: at,
                max_future,
            } => format!(
                "{what} is {instant}, more than {} after {reference} ({at}); times may not be in the future, so check the sender's clock",
                Minutes(max_future)
            ),
        }
    }
}

/// A duration in words, e.g. `5 minutes` or `90 seconds`, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Minutes(pub(crate) SignedDuration);

impl fmt::Display for Minutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        let plural = |n: i64| if n.abs() == 1 { "" } else { "s" };
        if seconds % 60 == 0 && self.0.subsec_nanos() == 0 {
            let minutes = seconds / 60;
            write!(f, "{minutes} minute{}", plural(minutes))
        } else {
            write!(f, "{seconds} second{}", plural(seconds))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_their_own_check() {
        assert_eq!(Limits::default(), Limits::DEFAULT);
        assert_eq!(Limits::DEFAULT.check(), Ok(()));
        assert_eq!(Limits::DEFAULT.earliest.to_string(), "2000-01-01T00:00:00Z");
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(
            Minutes(SignedDuration::from_mins(5)).to_string(),
            "5 minutes"
        );
        assert_eq!(
            Minutes(SignedDuration::from_mins(1)).to_string(),
            "1 minute"
        );
        assert_eq!(
            Minutes(SignedDuration::from_secs(90)).to_string(),
            "90 seconds"
        );
        assert_eq!(Minutes(SignedDuration::ZERO).to_string(), "0 minutes");
    }
}
