//! Who is calling: bearer tokens, their roles, names and org-unit scopes from
//! `CLOSELOOP_API_TOKENS` (`role:token`, `role:token:name` or `role@org/unit:token:name`,
//! comma-separated; see `token_entry`), and the [`Credential`] a request carries once the
//! route's guard has accepted it.

mod token_entry;

use std::fmt;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use closeloop_domain::OrgUnit;
use sha2::{Digest, Sha256};

use token_entry::TokenEntry;
pub use token_entry::{MAX_NAME_CHARS, MAX_TOKEN_LEN, MIN_TOKEN_LEN, TokenConfigError};

use crate::error::ApiError;

/// What a token may do (contract §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Records and reads loops.
    Staff,
    /// Reads loops and stats: patient leaders.
    Leader,
    /// Reads everything, replays and verifies the log.
    Auditor,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, in the order the documentation lists them.
    pub const ALL: [Role; 4] = [Role::Staff, Role::Leader, Role::Auditor, Role::Admin];

    /// The role's name in `CLOSELOOP_API_TOKENS`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Leader => "leader",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "staff" => Ok(Role::Staff),
            "leader" => Ok(Role::Leader),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A role name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; roles are staff, leader, auditor and admin")]
pub struct UnknownRole(pub String);

/// The configured tokens. Never printed: `Debug` shows only roles.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<TokenEntry>,
}

impl ApiTokens {
    /// The role of a presented token, if it is one of ours.
    #[must_use]
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.credential_of(presented)
            .map(|credential| credential.role)
    }

    /// The credential of a presented token, if it is one of ours.
    ///
    /// Every configured token is compared, in constant time and without stopping at the first
    /// match, so the response time says nothing about which token (or how much of one) a guess
    /// got right.
    #[must_use]
    pub fn credential_of(&self, presented: &str) -> Option<Credential> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.tokens {
            if constant_time_eq(&entry.digest, &digest) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|entry| Credential {
            id: entry.id.clone(),
            role: entry.role,
            source: Source::Token,
            name: entry.name.clone(),
            org_unit: entry.org_unit.clone(),
        })
    }

    /// How many tokens are configured.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is configured (only public endpoints are usable).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl FromStr for ApiTokens {
    type Err = TokenConfigError;

    /// Parses the comma-separated entries of `CLOSELOOP_API_TOKENS`; empty entries (a
    /// trailing comma) are skipped.
    ///
    /// # Errors
    /// [`TokenConfigError`] naming the first faulty entry by its place, never by its token.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut tokens: Vec<TokenEntry> = Vec::new();
        let entries = raw.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (entry, text) in (1..).zip(entries) {
            let parsed = TokenEntry::parse(entry, text)?;
            if let Some(first) = tokens.iter().position(|t| t.digest == parsed.digest) {
                return Err(TokenConfigError::DuplicateToken {
                    entry,
                    first: first + 1,
                });
            }
            // One name may have several tokens (a token being replaced, say), but only for
            // the same role and scope: the name is what events record as their actor.
            if let Some(name) = &parsed.name
                && let Some(first) = tokens.iter().position(|t| {
                    t.name.as_ref() == Some(name)
                        && (t.role, &t.org_unit) != (parsed.role, &parsed.org_unit)
                })
            {
                return Err(TokenConfigError::NameConflict {
                    entry,
                    first: first + 1,
                    name: name.clone(),
                });
            }
            tokens.push(parsed);
        }
        Ok(Self { tokens })
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<&str> = self
            .tokens
            .iter()
            .map(|entry| entry.role.as_str())
            .collect();
        f.debug_struct("ApiTokens")
            .field("roles", &roles)
            .finish_non_exhaustive()
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// An `Authorization: Bearer` token from `CLOSELOOP_API_TOKENS`.
    Token,
    /// A cookie session of the HTML pages, started with such a token: the credential is that
    /// token's, only its source differs.
    Session,
}

/// The caller of a request, as the route's guard accepted it: what every handler and every
/// later check (org-unit scope, idempotency keys, audit trails) looks at.
///
/// Handlers take it as an extractor; it is present on every route that is not public. Other
/// ways of signing in (a cookie session of the staff pages, say) add a [`Source`] and yield
/// the same type, so nothing that checks a credential changes with them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credential {
    /// A stable identifier that is safe to log and to store: the role and the first 8 hex
    /// digits of the token's SHA-256 (`staff:1a2b3c4d`), never the token. Idempotency keys
    /// belong to it.
    pub id: String,
    /// What the caller may do.
    pub role: Role,
    /// How the caller signed in.
    pub source: Source,
    /// The name the configuration gives the caller (`role:token:name`), if any.
    pub name: Option<String>,
    /// The part of the organisation the caller is limited to (`role@org/unit:token`): it
    /// reads, writes and sees stats only of loops in that unit or below it. `None`: all of it.
    pub org_unit: Option<OrgUnit>,
}

impl Credential {
    /// Identifies the caller from request headers: `Authorization: Bearer <token>`, the
    /// scheme in any case (RFC 9110 §11.1).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when there is no valid bearer token.
    pub fn from_headers(tokens: &ApiTokens, headers: &HeaderMap) -> Result<Self, ApiError> {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        tokens
            .credential_of(presented)
            .ok_or(ApiError::Unauthorized)
    }

    /// Who acted, as events record it: the credential's name when the configuration gives
    /// one, else its [`id`](Self::id). Never the token. A name holds no `:` and an id always
    /// does, so a name can never pass for another credential's id.
    #[must_use]
    pub fn actor(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// Whether this credential may use a route open to `allowed` (admin may use every route).
    #[must_use]
    pub fn may(&self, allowed: &[Role]) -> bool {
        self.role == Role::Admin || allowed.contains(&self.role)
    }

    /// Whether a loop in `org_unit` is within this credential's scope: always for an
    /// unscoped credential, else when `org_unit` is the scope or below it (whole path
    /// segments, as the `org_unit` filter of `GET /v1/loops` matches).
    #[must_use]
    pub fn covers(&self, org_unit: &OrgUnit) -> bool {
        self.org_unit
            .as_ref()
            .is_none_or(|scope| org_unit.is_within(scope))
    }

    /// Whether this credential reads the personal data of loops (authors, stories and the
    /// follow-up texts addressed to the person): every role but `leader` (contract §3 v1.1).
    #[must_use]
    pub fn reads_personal_data(&self) -> bool {
        self.role != Role::Leader
    }
}

/// The token of an `Authorization` value whose scheme is `Bearer` in any letter case.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The route guard puts it there for every route that is not public; a handler of a
        // public route asking for one is a wiring mistake, answered as one.
        parts
            .extensions
            .get::<Credential>()
            .cloned()
            .ok_or_else(|| {
                ApiError::Internal("a handler asked for a credential on a public route".to_owned())
            })
    }
}

/// Roles that record loops.
pub const WRITERS: &[Role] = &[Role::Staff];
/// Roles that read loops and stats.
pub const READERS: &[Role] = &[Role::Staff, Role::Leader, Role::Auditor];
/// Patient leaders (and admins): the insights page.
pub const LEADERS: &[Role] = &[Role::Leader];
/// Roles that read the raw log and proofs.
pub const AUDITORS: &[Role] = &[Role::Auditor];
/// Roles that manage dead letters: only admin (who may do everything).
pub const ADMINS: &[Role] = &[];

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn tokens_map_to_roles_and_never_print() {
        let tokens: ApiTokens = "staff:staff-token-1, auditor:audit-token-2"
            .parse()
            .unwrap();
        assert_eq!(tokens.role_of("staff-token-1"), Some(Role::Staff));
        assert_eq!(tokens.role_of("audit-token-2"), Some(Role::Auditor));
        assert_eq!(tokens.role_of("staff-token-"), None);
        assert_eq!(tokens.role_of("staff-token-12"), None);
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("staff") && !shown.contains("staff-token-1"),
            "{shown}"
        );
    }

    #[test]
    fn a_credential_id_names_the_role_and_never_holds_the_token() {
        let tokens: ApiTokens = "staff:staff-token-1,staff:staff-token-2".parse().unwrap();
        let one = tokens.credential_of("staff-token-1").unwrap();
        let two = tokens.credential_of("staff-token-2").unwrap();
        assert!(one.id.starts_with("staff:") && one.id.len() == "staff:".len() + 8);
        assert_ne!(one.id, two.id, "two tokens of one role are told apart");
        assert!(!one.id.contains("token"));
        assert_eq!(tokens.credential_of("staff-token-1").unwrap().id, one.id);
        assert_eq!(one.source, Source::Token);
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        let tokens: ApiTokens = "leader:leader-token-1".parse().unwrap();
        for value in [
            "Bearer leader-token-1",
            "bearer leader-token-1",
            "BEARER leader-token-1",
            "bEaReR   leader-token-1 ",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            let credential = Credential::from_headers(&tokens, &headers)
                .unwrap_or_else(|err| panic!("{value:?}: {err}"));
            assert_eq!(credential.role, Role::Leader);
        }
        for value in [
            "Basic leader-token-1",
            "Bearer",
            "Bearer ",
            "Bearerleader-token-1",
            "leader-token-1",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert!(
                Credential::from_headers(&tokens, &headers).is_err(),
                "{value:?} was accepted"
            );
        }
    }

    #[test]
    fn admin_may_use_every_route() {
        let tokens: ApiTokens = "admin:admin-token-1,leader:leader-token-1".parse().unwrap();
        let admin = tokens.credential_of("admin-token-1").unwrap();
        let leader = tokens.credential_of("leader-token-1").unwrap();
        assert!(admin.may(ADMINS) && admin.may(WRITERS));
        assert!(leader.may(READERS) && !leader.may(WRITERS) && !leader.may(ADMINS));
    }

    #[test]
    fn bad_entries_say_what_to_fix() {
        let err = "nurse:abcdefghij".parse::<ApiTokens>().unwrap_err();
        assert!(err.to_string().contains("unknown role \"nurse\""), "{err}");
        assert!("staff".parse::<ApiTokens>().is_err());
        assert!("staff:short".parse::<ApiTokens>().is_err());
        assert!("".parse::<ApiTokens>().unwrap().is_empty());
        let err = "staff:abcdefghij,leader:abcdefghij"
            .parse::<ApiTokens>()
            .unwrap_err();
        assert_eq!(err, TokenConfigError::DuplicateToken { entry: 2, first: 1 });
        assert!(!err.to_string().contains("abcdefghij"), "{err}");
    }

    #[test]
    fn names_and_scopes_reach_the_credential() {
        let tokens: ApiTokens =
            "staff:plain-token-1, leader:named-token-1:Board, staff@rxx/site-a:scoped-token-1:PALS site A"
                .parse()
                .unwrap();
        let plain = tokens.credential_of("plain-token-1").unwrap();
        assert_eq!(
            (plain.name.as_deref(), plain.org_unit.as_ref()),
            (None, None)
        );
        assert_eq!(
            plain.actor(),
            plain.id,
            "an unnamed credential acts as its id"
        );

        let named = tokens.credential_of("named-token-1").unwrap();
        assert_eq!(named.actor(), "Board");
        assert!(named.id.starts_with("leader:"));

        let scoped = tokens.credential_of("scoped-token-1").unwrap();
        assert_eq!(scoped.actor(), "PALS site A");
        assert_eq!(
            scoped.org_unit.as_ref().map(OrgUnit::as_str),
            Some("rxx/site-a")
        );
        let unit = |raw: &str| OrgUnit::parse(raw).unwrap();
        assert!(scoped.covers(&unit("rxx/site-a")));
        assert!(scoped.covers(&unit("rxx/site-a/ward-7")));
        assert!(!scoped.covers(&unit("rxx/site-ab")));
        assert!(!scoped.covers(&unit("rxx")));
        assert!(plain.covers(&unit("ryy/anywhere")));
    }

    #[test]
    fn a_name_stands_for_one_role_and_scope() {
        // Two tokens of one caller (one being replaced) may share its name...
        let tokens: ApiTokens = "staff@rxx:old-token-1:pals,staff@rxx:new-token-1:pals"
            .parse()
            .unwrap();
        assert_eq!(tokens.len(), 2);
        // ...but not two callers with different rights.
        for raw in [
            "staff:token-one-1:pals,admin:token-two-2:pals",
            "staff@rxx/a:token-one-1:pals,staff@rxx/b:token-two-2:pals",
            "staff:token-one-1:pals,staff@rxx:token-two-2:pals",
        ] {
            let err = raw.parse::<ApiTokens>().unwrap_err();
            assert!(
                matches!(
                    err,
                    TokenConfigError::NameConflict {
                        entry: 2,
                        first: 1,
                        ..
                    }
                ),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn only_leaders_read_without_personal_data() {
        let tokens: ApiTokens =
            "staff:staff-token-1,leader:leader-token-1,auditor:audit-token-1,admin:admin-token-1"
                .parse()
                .unwrap();
        for (token, reads) in [
            ("staff-token-1", true),
            ("leader-token-1", false),
            ("audit-token-1", true),
            ("admin-token-1", true),
        ] {
            let credential = tokens.credential_of(token).unwrap();
            assert_eq!(credential.reads_personal_data(), reads, "{token}");
        }
    }
}
