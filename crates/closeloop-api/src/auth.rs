//! Who is calling: bearer tokens and their roles from `CLOSELOOP_API_TOKENS`
//! (`role:token,role:token,…`), and the [`Credential`] a request carries once the route's
//! guard has accepted it.

use std::fmt;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use closeloop_domain::OrgUnit;
use sha2::{Digest, Sha256};

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
    type Err = TokenConfigError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "staff" => Ok(Role::Staff),
            "leader" => Ok(Role::Leader),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            other => Err(TokenConfigError(format!(
                "unknown role {other:?}; roles are staff, leader, auditor and admin"
            ))),
        }
    }
}

/// `CLOSELOOP_API_TOKENS` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CLOSELOOP_API_TOKENS: {0}")]
pub struct TokenConfigError(String);

/// One configured token. Only its SHA-256 digest is kept: comparing digests of equal length
/// means the comparison takes the same time whatever the length of a guess, and the token
/// itself is never held where a `Debug` or a log line could reach it.
#[derive(Clone)]
struct TokenEntry {
    role: Role,
    digest: [u8; 32],
    /// The credential id: the role and a short prefix of the digest (see [`Credential::id`]).
    id: String,
}

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
            name: None,
            org_unit: None,
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

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut tokens = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((role, token)) = entry.split_once(':') else {
                return Err(TokenConfigError(
                    "each entry must be role:token, e.g. staff:s3cret".to_owned(),
                ));
            };
            let role: Role = role.trim().parse()?;
            let token = token.trim();
            if token.len() < 8 {
                return Err(TokenConfigError(format!(
                    "the {role} token is shorter than 8 characters; use a long random string"
                )));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let id = format!("{role}:{}", hex::encode(&digest[..4]));
            tokens.push(TokenEntry { role, digest, id });
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
    /// digits of the token's SHA-256 (`staff:1a2b3c4d`), never the token.
    pub id: String,
    /// What the caller may do.
    pub role: Role,
    /// How the caller signed in.
    pub source: Source,
    /// A display name, when the source knows one (tokens do not).
    pub name: Option<String>,
    /// The part of the organisation the caller is limited to; `None`: all of it (every token
    /// today).
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

    /// Whether this credential may use a route open to `allowed` (admin may use every route).
    #[must_use]
    pub fn may(&self, allowed: &[Role]) -> bool {
        self.role == Role::Admin || allowed.contains(&self.role)
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
    }
}
