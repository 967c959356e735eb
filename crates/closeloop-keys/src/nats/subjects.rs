//! The subjects of the key stream. A loop id may hold '.', NATS's token separator, so every
//! subject names its loop by the loop id's lowercase hex: one token of `[0-9a-f]`, never a
//! wildcard, never whitespace, and one loop id has exactly one spelling.

use crate::loop_id::check_loop_id;

/// The subjects the stream takes: everything the key store publishes lives under it.
pub(super) const ALL: &str = "closeloop.keys.>";
/// The store's wrapped secrets and master key check (the latest message is in force).
pub(super) const META: &str = "closeloop.keys.meta";

const KEY_PREFIX: &str = "closeloop.keys.key.";
const CONTACT_PREFIX: &str = "closeloop.keys.contact.";
const ERASED_PREFIX: &str = "closeloop.keys.erased.";

/// What a message of the key stream is about, by its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Topic {
    /// The store's secrets: [`META`].
    Meta,
    /// A loop's data key (one version of it): `closeloop.keys.key.<hex loop id>`.
    Key(String),
    /// A contact digest of a loop: `closeloop.keys.contact.<hex loop id>`.
    Contact(String),
    /// The erasure of a loop: `closeloop.keys.erased.<hex loop id>`.
    Erased(String),
}

impl Topic {
    /// The subject of this topic. The caller has checked the loop id.
    pub(super) fn subject(&self) -> String {
        match self {
            Topic::Meta => META.to_owned(),
            Topic::Key(loop_id) => format!("{KEY_PREFIX}{}", hex::encode(loop_id)),
            Topic::Contact(loop_id) => format!("{CONTACT_PREFIX}{}", hex::encode(loop_id)),
            Topic::Erased(loop_id) => format!("{ERASED_PREFIX}{}", hex::encode(loop_id)),
        }
    }

    /// The topic of a subject in the stream, or what is wrong with it.
    pub(super) fn parse(subject: &str) -> Result<Topic, String> {
        if subject == META {
            return Ok(Topic::Meta);
        }
        /// Makes a loop's topic from its loop id.
        type MakeTopic = fn(String) -> Topic;
        let prefixes: [(&str, MakeTopic); 3] = [
            (KEY_PREFIX, Topic::Key),
            (CONTACT_PREFIX, Topic::Contact),
            (ERASED_PREFIX, Topic::Erased),
        ];
        for (prefix, topic) in prefixes {
            if let Some(token) = subject.strip_prefix(prefix) {
                return loop_id_of(token).map(topic);
            }
        }
        Err(format!("unexpected subject {subject:?} in the key stream"))
    }
}

/// The loop id a subject token spells in lowercase hex.
fn loop_id_of(token: &str) -> Result<String, String> {
    let bad = || format!("subject token {token:?} does not spell a loop id in lowercase hex");
    if token.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let loop_id = String::from_utf8(bytes).map_err(|_| bad())?;
    check_loop_id(&loop_id).map_err(|_| bad())?;
    Ok(loop_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_round_trips_through_its_subject() {
        let long = "x".repeat(128);
        for loop_id in ["loop-1", "a.b_c:d-E9", long.as_str()] {
            for topic in [
                Topic::Key(loop_id.to_owned()),
                Topic::Contact(loop_id.to_owned()),
                Topic::Erased(loop_id.to_owned()),
            ] {
                let subject = topic.subject();
                let token = subject.rsplit('.').next().unwrap();
                assert!(
                    token.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{subject} has a token of hex only"
                );
                assert_eq!(subject.matches('.').count(), 3, "{subject}");
                assert_eq!(Topic::parse(&subject).unwrap(), topic);
            }
        }
        assert_eq!(Topic::parse(META).unwrap(), Topic::Meta);
    }

    #[test]
    fn foreign_subjects_and_bad_tokens_are_refused() {
        for subject in [
            "closeloop.keys.other.6c",
            "closeloop.keys.key.zz",
            "closeloop.keys.key.6C6F",
            "closeloop.keys.key.",
            "closeloop.keys.key.2f",
            "elsewhere",
        ] {
            assert!(Topic::parse(subject).is_err(), "{subject} accepted");
        }
    }
}
