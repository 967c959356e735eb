//! [`AccessEntry`]: one line of the access log, and the validated values it is made of. An
//! entry says who read what and when; it never holds personal data (no names of patients, no
//! stories, no tokens), only a credential's name or id, a role, a loop id and a fixed word.

use std::fmt;

use closeloop_domain::LoopId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest [`Actor`], in bytes.
pub const ACTOR_MAX_BYTES: usize = 128;
/// Longest [`RoleName`], in bytes.
pub const ROLE_MAX_BYTES: usize = 32;

/// One read of personal data: who (`actor`, `role`), when (`at`), which loop (`loop_id`,
/// `None` for a read across loops such as the event export) and what was read (`what`).
///
/// Serialised as the NDJSON line of `GET /v1/audit/access`, fields in this order:
/// `{"at", "actor", "role", "loop_id", "what"}`, `loop_id` `null` when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// When the read happened. Within one log, times strictly increase: a log stamps an
    /// entry that is not later than the one before it one nanosecond after that one, so
    /// `after` is an exact cursor.
    pub at: Timestamp,
    /// Who read: a credential's name or id, never a token.
    pub actor: Actor,
    /// The role they read with.
    pub role: RoleName,
    /// The loop read, or `None` for a read across loops.
    pub loop_id: Option<LoopId>,
    /// What was read.
    pub what: What,
}

/// What kind of read an entry records: a short fixed word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// `GET /v1/loops/{loop_id}`: one loop with its timeline.
    Loop,
    /// `GET /v1/events`: the raw log, across loops.
    Events,
    /// `closeloop replay`: the raw log read from the data directory.
    Replay,
    /// A loop's timeline shown on a staff page.
    Timeline,
}

impl What {
    /// The word as it appears in the log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            What::Loop => "loop",
            What::Events => "events",
            What::Replay => "replay",
            What::Timeline => "timeline",
        }
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that cannot go into the access log; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

/// Who read: a credential's name or id (`staff:1a2b3c4d`), or the operator of a command-line
/// tool. 1–128 bytes without control characters, so that a line of the log stays one line and
/// short. Never a token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor(String);

impl Actor {
    /// Parses an actor.
    ///
    /// # Errors
    /// [`InvalidValue`] when it is empty, longer than [`ACTOR_MAX_BYTES`] or holds a control
    /// character.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() || raw.len() > ACTOR_MAX_BYTES {
            return Err(InvalidValue(format!(
                "actor must be 1 to {ACTOR_MAX_BYTES} bytes long, got {}",
                raw.len()
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue(
                "actor may not contain control characters (line breaks, tabs)".to_owned(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The actor as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The role a read was made with: 1–32 characters of `[a-z_]` (`staff`, `auditor`, `admin`,
/// `operator` for a command-line tool). A plain word rather than the API's role type, so the
/// log can record readers that are not API credentials.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Parses a role name.
    ///
    /// # Errors
    /// [`InvalidValue`] when it is empty, longer than [`ROLE_MAX_BYTES`] or holds anything but
    /// `a`–`z` and `_`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty()
            || raw.len() > ROLE_MAX_BYTES
            || !raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(InvalidValue(format!(
                "role must be 1 to {ROLE_MAX_BYTES} characters of a-z and _, e.g. staff"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The role as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

closeloop_domain::string_type!(Actor, InvalidValue);
closeloop_domain::string_type!(RoleName, InvalidValue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_the_documented_line() {
        let entry = AccessEntry {
            at: "2026-11-27T09:30:00Z".parse().unwrap(),
            actor: Actor::parse("staff:1a2b3c4d").unwrap(),
            role: RoleName::parse("staff").unwrap(),
            loop_id: None,
            what: What::Events,
        };
        let line = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            line,
            r#"{"at":"2026-11-27T09:30:00Z","actor":"staff:1a2b3c4d","role":"staff","loop_id":null,"what":"events"}"#
        );
        assert_eq!(serde_json::from_str::<AccessEntry>(&line).unwrap(), entry);
    }

    #[test]
    fn actors_and_roles_are_bounded_single_line_words() {
        assert!(Actor::parse("ward 7 sister").is_ok());
        assert!(Actor::parse("").is_err());
        assert!(Actor::parse("a\nb").is_err());
        assert!(Actor::parse(&"x".repeat(ACTOR_MAX_BYTES + 1)).is_err());
        assert!(RoleName::parse("operator").is_ok());
        assert!(RoleName::parse("Staff").is_err());
        assert!(RoleName::parse("").is_err());
    }
}
