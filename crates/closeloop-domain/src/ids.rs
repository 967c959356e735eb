//! Validated identifiers and small value types: once parsed, always valid.

use crate::Rejection;

/// Longest accepted `loop_id`, in characters (contract §1).
pub const LOOP_ID_MAX_LEN: usize = 128;
/// Longest accepted `org_unit` path, in characters.
pub const ORG_UNIT_MAX_LEN: usize = 255;

/// Whether a name is `.` or `..`, the names a path gives to "here" and "the parent".
fn is_dot_name(raw: &str) -> bool {
    matches!(raw, "." | "..")
}

/// Identifies one loop: 1–128 characters from `[A-Za-z0-9._:-]`, other than `.` and `..`
/// (which name directories and paths, never a loop).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoopId(String);

impl LoopId {
    /// Parses a loop id, rejecting anything outside the contract's alphabet or length, and the
    /// ids `.` and `..`, which would read as "this" and "the parent" wherever a loop id becomes
    /// part of a path or URL.
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] naming what is wrong with the id.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        if raw.is_empty() || raw.len() > LOOP_ID_MAX_LEN {
            return Err(Rejection::invalid(format!(
                "loop_id must be 1 to {LOOP_ID_MAX_LEN} characters long, got {}",
                raw.chars().count()
            )));
        }
        if is_dot_name(raw) {
            return Err(Rejection::invalid(
                "loop_id may not be \".\" or \"..\"; choose an id with a letter or digit in it",
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(Rejection::invalid(format!(
                "loop_id may only contain A-Z, a-z, 0-9, '.', '_', ':' and '-', found {bad:?}"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the feedback is about, as a path of segments: trust / site / ward or service,
/// e.g. `rxx/site-a/ward-7`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgUnit(String);

impl OrgUnit {
    /// Parses an org unit path: non-empty segments of `[A-Za-z0-9._-]` joined by `/`, none of
    /// them `.` or `..` (which would make one unit look like another's parent in a path).
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] naming what is wrong with the path.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        if raw.is_empty() || raw.len() > ORG_UNIT_MAX_LEN {
            return Err(Rejection::invalid(format!(
                "org_unit must be 1 to {ORG_UNIT_MAX_LEN} characters long"
            )));
        }
        for segment in raw.split('/') {
            if segment.is_empty() {
                return Err(Rejection::invalid(format!(
                    "org_unit {raw:?} has an empty segment; write it like \"rxx/site-a/ward-7\""
                )));
            }
            if is_dot_name(segment) {
                return Err(Rejection::invalid(format!(
                    "org_unit {raw:?} has a segment \"{segment}\"; segments may not be \".\" or \"..\", write the path out like \"rxx/site-a/ward-7\""
                )));
            }
            if let Some(bad) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(Rejection::invalid(format!(
                    "org_unit segments may only contain A-Z, a-z, 0-9, '.', '_' and '-', found {bad:?}"
                )));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// The path as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether `prefix` names this unit or one of its ancestors, matching whole segments:
    /// `rxx/site-a` contains `rxx/site-a/ward-7` but not `rxx/site-ab`.
    #[must_use]
    pub fn is_within(&self, prefix: &OrgUnit) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0) && self.0.as_bytes()[prefix.0.len()] == b'/')
    }
}

/// How the feedback reached the organisation (contract §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// A web form.
    Web,
    /// A text message.
    Sms,
    /// An e-mail.
    Email,
    /// A phone call.
    Phone,
    /// A paper form or letter.
    Paper,
    /// Said in person.
    InPerson,
    /// A survey, such as the Friends and Family Test.
    Survey,
    /// Social media.
    Social,
    /// Gathered by a community organisation that reaches seldom-heard groups.
    CommunityPartner,
    /// Anything else.
    Other,
}

impl Channel {
    /// Every channel, in the contract's order.
    pub const ALL: [Channel; 10] = [
        Channel::Web,
        Channel::Sms,
        Channel::Email,
        Channel::Phone,
        Channel::Paper,
        Channel::InPerson,
        Channel::Survey,
        Channel::Social,
        Channel::CommunityPartner,
        Channel::Other,
    ];

    /// The contract's name for the channel.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Phone => "phone",
            Channel::Paper => "paper",
            Channel::InPerson => "in_person",
            Channel::Survey => "survey",
            Channel::Social => "social",
            Channel::CommunityPartner => "community_partner",
            Channel::Other => "other",
        }
    }

    /// Parses a channel name.
    ///
    /// # Errors
    /// [`Rejection::InvalidData`] listing the accepted names.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| {
                let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                // A short value is quoted so the sender sees their typo; a long one is not, so
                // that a huge value cannot flood the message.
                let given = if raw.chars().count() <= 32 {
                    format!("channel {raw:?}")
                } else {
                    "channel".to_owned()
                };
                Rejection::invalid(format!("{given} is not one of: {}", names.join(", ")))
            })
    }
}

/// Implements `Display`, `FromStr` (with `$err`, the error of `parse`) and serde as a string
/// for a newtype with `fn parse(&str) -> Result<Self, $err>` and `fn as_str(&self) -> &str`.
/// The caller needs `serde` as a dependency.
#[macro_export]
macro_rules! string_type {
    ($ty:ty, $err:ty) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let raw = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&raw).map_err(::serde::de::Error::custom)
            }
        }
    };
}

string_type!(LoopId, Rejection);
string_type!(OrgUnit, Rejection);
string_type!(Channel, Rejection);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_id_accepts_the_contract_alphabet_and_rejects_the_rest() {
        assert!(LoopId::parse("fft-rxx-000123").is_ok());
        assert!(LoopId::parse("a.b_c:d-E9").is_ok());
        assert!(LoopId::parse(&"x".repeat(128)).is_ok());
        assert!(LoopId::parse("").is_err());
        assert!(LoopId::parse(&"x".repeat(129)).is_err());
        assert!(LoopId::parse("has space").is_err());
        assert!(LoopId::parse("slash/no").is_err());
        assert!(LoopId::parse("é").is_err());
    }

    #[test]
    fn org_unit_matches_prefixes_on_whole_segments() {
        let ward = OrgUnit::parse("rxx/site-a/ward-7").unwrap();
        let check = |prefix: &str| ward.is_within(&OrgUnit::parse(prefix).unwrap());
        assert!(check("rxx"));
        assert!(check("rxx/site-a"));
        assert!(check("rxx/site-a/ward-7"));
        assert!(!check("rxx/site"));
        assert!(!check("rxx/site-a/ward-77"));
        assert!(!check("ryy"));
        assert!(OrgUnit::parse("rxx//ward").is_err());
        assert!(OrgUnit::parse("/rxx").is_err());
        assert!(OrgUnit::parse("rxx/ward 7").is_err());
    }

    #[test]
    fn channels_round_trip_through_their_names() {
        for channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()).unwrap(), channel);
        }
        let err = Channel::parse("carrier_pigeon").unwrap_err();
        assert!(err.to_string().contains("community_partner"), "{err}");
        assert!(err.to_string().contains("\"carrier_pigeon\""), "{err}");
        let err = Channel::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
