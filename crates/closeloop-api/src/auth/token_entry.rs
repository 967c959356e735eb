//! One entry of `CLOSELOOP_API_TOKENS`, parsed: `role:token`, `role:token:name`,
//! `role@org/unit:token` or `role@org/unit:token:name`.
//!
//! Nothing here ever puts a token into an error message: a configuration error is printed on
//! the operator's terminal and often ends up in a log, so errors name an entry by its place in
//! the list (and its role), never by its token.

use closeloop_domain::OrgUnit;
use sha2::{Digest, Sha256};

use super::Role;

/// Shortest accepted token, in bytes.
pub const MIN_TOKEN_LEN: usize = 8;
/// Longest accepted token, in bytes.
pub const MAX_TOKEN_LEN: usize = 512;
/// Longest accepted credential name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// `CLOSELOOP_API_TOKENS` could not be read. Entries are counted from 1 in the order given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// An entry is not of one of the accepted forms.
    #[error(
        "CLOSELOOP_API_TOKENS entry {entry}: write it as role:token, role:token:name or role@org/unit:token:name (tokens and names may not contain ':' or ',')"
    )]
    Shape {
        /// The entry, counted from 1.
        entry: usize,
    },
    /// The role is not one of the four.
    #[error(
        "CLOSELOOP_API_TOKENS entry {entry}: unknown role {role}; roles are staff, leader, auditor and admin, written first (role:token:name)"
    )]
    UnknownRole {
        /// The entry, counted from 1.
        entry: usize,
        /// What was written as the role, quoted when it is shorter than any token could be;
        /// otherwise (a token written first, say) only its length.
        role: String,
    },
    /// The org-unit scope after `@` is not a valid org unit path. Not quoted: a token
    /// written in its place must not be printed.
    #[error(
        "CLOSELOOP_API_TOKENS entry {entry}: the org-unit scope after '@' must be a path like rxx/site-a: segments of A-Z, a-z, 0-9, '.', '_' and '-' joined by '/', at most 255 characters"
    )]
    BadScope {
        /// The entry, counted from 1.
        entry: usize,
    },
    /// The token is too short or too long, or holds characters a bearer token cannot.
    #[error(
        "CLOSELOOP_API_TOKENS entry {entry} ({role}): the token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} visible ASCII characters without ':' or ','; use a long random string such as the output of `openssl rand -hex 32`"
    )]
    BadToken {
        /// The entry, counted from 1.
        entry: usize,
        /// Its role.
        role: Role,
    },
    /// The name is empty, too long, or holds a character a name may not.
    #[error(
        "CLOSELOOP_API_TOKENS entry {entry} ({role}): the name must be 1 to {MAX_NAME_CHARS} printable characters without ':' or ',' (e.g. pals-office or Ward 7 kiosk)"
    )]
    BadName {
        /// The entry, counted from 1.
        entry: usize,
        /// Its role.
        role: Role,
    },
    /// The same token is listed twice.
    #[error(
        "CLOSELOOP_API_TOKENS entry {entry} repeats the token of entry {first}; give every entry its own token"
    )]
    DuplicateToken {
        /// The later entry, counted from 1.
        entry: usize,
        /// The earlier one.
        first: usize,
    },
    /// Two entries share a name but not their role and scope, so the name recorded as the
    /// actor of an event would not say what that actor was allowed to do.
    #[error(
        "CLOSELOOP_API_TOKENS entries {first} and {entry} are both named {name:?} with different roles or scopes; a name stands for one caller, so give each its own name"
    )]
    NameConflict {
        /// The later entry, counted from 1.
        entry: usize,
        /// The earlier one.
        first: usize,
        /// The shared name.
        name: String,
    },
}

/// One configured token. Only its SHA-256 digest is kept: comparing digests of equal length
/// means the comparison takes the same time whatever the length of a guess, and the token
/// itself is never held where a `Debug` or a log line could reach it.
#[derive(Clone)]
pub(super) struct TokenEntry {
    pub(super) role: Role,
    pub(super) digest: [u8; 32],
    /// The credential id: the role and a short prefix of the digest (see
    /// [`Credential::id`](super::Credential::id)).
    pub(super) id: String,
    /// The name given after the token, if any.
    pub(super) name: Option<String>,
    /// The org-unit scope given after `@`, if any.
    pub(super) org_unit: Option<OrgUnit>,
}

impl TokenEntry {
    /// Parses the entry at place `entry` (counted from 1), already trimmed and not empty.
    pub(super) fn parse(entry: usize, raw: &str) -> Result<Self, TokenConfigError> {
        let shape = || TokenConfigError::Shape { entry };
        let (access, rest) = raw.split_once(':').ok_or_else(shape)?;
        let (token, name) = match rest.split_once(':') {
            Some((_, name)) if name.contains(':') => return Err(shape()),
            Some((token, name)) => (token.trim(), Some(name.trim())),
            None => (rest.trim(), None),
        };
        let (role, scope) = match access.split_once('@') {
            Some((role, scope)) => (role.trim(), Some(scope.trim())),
            None => (access.trim(), None),
        };
        let role: Role = role.parse().map_err(|_| TokenConfigError::UnknownRole {
            entry,
            role: if role.len() < MIN_TOKEN_LEN {
                format!("{role:?}")
            } else {
                format!("(not shown: {} characters, as long as a token)", role.len())
            },
        })?;
        let org_unit = scope
            .map(|scope| OrgUnit::parse(scope).map_err(|_| TokenConfigError::BadScope { entry }))
            .transpose()?;
        if !is_token(token) {
            return Err(TokenConfigError::BadToken { entry, role });
        }
        let name = name
            .map(|name| {
                is_name(name)
                    .then(|| name.to_owned())
                    .ok_or(TokenConfigError::BadName { entry, role })
            })
            .transpose()?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let id = format!("{role}:{}", hex::encode(&digest[..4]));
        Ok(Self {
            role,
            digest,
            id,
            name,
            org_unit,
        })
    }
}

/// Whether `token` can be sent as a bearer token and told apart from the rest of an entry:
/// visible ASCII (no spaces, which end a token in an `Authorization` header), no `:` or `,`,
/// and long enough not to be guessed.
fn is_token(token: &str) -> bool {
    (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':' && b != b',')
}

/// Whether `name` may name a credential: short, printable (letters, digits, punctuation and
/// single spaces, no control, format or bidirectional characters), without `:` or `,`, and not
/// starting or ending with a space. Names are stored in events and shown to auditors, so
/// nothing in them may hide or reorder text.
fn is_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&count)
        && name.trim() == name
        && !name.contains("  ")
        && name.chars().all(|c| {
            (c == ' ' || !c.is_whitespace())
                && !c.is_control()
                && !is_format(c)
                && c != ':'
                && c != ','
        })
}

/// Invisible format characters that could hide or reorder text: zero-width characters, the
/// bidirectional embeddings, overrides, isolates and marks, and the byte order mark.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<TokenEntry, TokenConfigError> {
        TokenEntry::parse(1, raw)
    }

    #[test]
    fn the_four_forms() {
        let plain = parse("staff:abcdefgh12").unwrap();
        assert_eq!(
            (plain.role, plain.name, plain.org_unit),
            (Role::Staff, None, None)
        );

        let named = parse("leader:abcdefgh12:Board reports").unwrap();
        assert_eq!(named.name.as_deref(), Some("Board reports"));
        assert_eq!(named.org_unit, None);

        let scoped = parse("staff@rxx/site-a:abcdefgh12:pals-site-a").unwrap();
        assert_eq!(scoped.role, Role::Staff);
        assert_eq!(scoped.name.as_deref(), Some("pals-site-a"));
        assert_eq!(scoped.org_unit.unwrap().as_str(), "rxx/site-a");

        let unnamed = parse(" auditor @ rxx : abcdefgh12 ").unwrap();
        assert_eq!(unnamed.role, Role::Auditor);
        assert_eq!(unnamed.name, None);
        assert_eq!(unnamed.org_unit.unwrap().as_str(), "rxx");
        assert_eq!(
            parse("staff:abcdefgh12").unwrap().id,
            plain_id("staff", "abcdefgh12")
        );
    }

    fn plain_id(role: &str, token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        format!("{role}:{}", hex::encode(&digest[..4]))
    }

    #[test]
    fn each_fault_is_named_without_the_token() {
        let secret = "s3cret-token-value";
        let cases: [(String, &str); 12] = [
            (secret.to_owned(), "write it as role:token"),
            (
                format!("staff:{secret}:name:more"),
                "write it as role:token",
            ),
            (format!("nurse:{secret}"), "unknown role \"nurse\""),
            (
                format!("{secret}:staff"),
                "unknown role (not shown: 18 characters",
            ),
            (
                format!("staff@{secret}/:staff"),
                "org-unit scope after '@' must be",
            ),
            (
                format!("staff@rxx//a:{secret}"),
                "org-unit scope after '@' must be",
            ),
            (
                format!("staff@:{secret}"),
                "org-unit scope after '@' must be",
            ),
            ("staff:short".to_owned(), "8 to 512 visible ASCII"),
            (format!("staff:{secret} x"), "8 to 512 visible ASCII"),
            (format!("staff:{secret}:"), "the name must be"),
            (format!("staff:{secret}:a\u{202E}b"), "the name must be"),
            (
                format!("staff:{secret}:{}", "n".repeat(65)),
                "the name must be",
            ),
        ];
        for (raw, expected) in cases {
            let err = parse(&raw)
                .err()
                .unwrap_or_else(|| panic!("{raw:?} was accepted"));
            let shown = err.to_string();
            assert!(shown.contains(expected), "{raw:?}: {shown}");
            assert!(shown.contains("entry 1"), "{raw:?}: {shown}");
            assert!(!shown.contains(secret), "{raw:?} leaks its token: {shown}");
        }
    }

    #[test]
    fn names_are_printable_and_short() {
        for good in [
            "a",
            "PALS office",
            "Zoë O'Brien",
            "ward-7 kiosk (night)",
            &"n".repeat(64),
        ] {
            assert!(is_name(good), "{good:?}");
        }
        for bad in [
            "",
            " lead",
            "lead ",
            "two  spaces",
            "tab\there",
            "a\u{200B}b",
            "x:y",
            "x,y",
            "new\nline",
        ] {
            assert!(!is_name(bad), "{bad:?}");
        }
    }
}
