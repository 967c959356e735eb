//! Bearer tokens and roles, from `CLOSELOOP_API_TOKENS` (`role:token,role:token,…`).

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};

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

/// The configured tokens. Never printed: `Debug` shows only roles.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<(Role, SecretString)>,
}

impl ApiTokens {
    /// The role of a presented token, if it is one of ours.
    #[must_use]
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.tokens
            .iter()
            .find(|(_, token)| {
                constant_time_eq(token.expose_secret().as_bytes(), presented.as_bytes())
            })
            .map(|(role, _)| *role)
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
                    "the {} token is shorter than 8 characters; use a long random string",
                    role.as_str()
                )));
            }
            tokens.push((role, SecretString::from(token.to_owned())));
        }
        Ok(Self { tokens })
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<&str> = self.tokens.iter().map(|(role, _)| role.as_str()).collect();
        f.debug_struct("ApiTokens")
            .field("roles", &roles)
            .finish_non_exhaustive()
    }
}

/// Who is calling, from the `Authorization: Bearer` header; checks the role a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// Identifies the caller from request headers.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when there is no valid bearer token.
    pub fn from_headers(tokens: &ApiTokens, headers: &HeaderMap) -> Result<Self, ApiError> {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        tokens
            .role_of(presented)
            .map(|role| Self { role })
            .ok_or(ApiError::Unauthorized)
    }

    /// Checks that the caller has one of `allowed` (admin always has).
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] naming the roles that may.
    pub fn require(self, allowed: &[Role], action: &'static str) -> Result<Self, ApiError> {
        if self.role == Role::Admin || allowed.contains(&self.role) {
            return Ok(self);
        }
        let mut names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        names.push("admin");
        Err(ApiError::Forbidden {
            role: self.role.as_str(),
            action,
            allowed: names.join(", "),
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

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_roles_and_never_print() {
        let tokens: ApiTokens = "staff:staff-token-1, auditor:audit-token-2"
            .parse()
            .unwrap();
        assert_eq!(tokens.role_of("staff-token-1"), Some(Role::Staff));
        assert_eq!(tokens.role_of("audit-token-2"), Some(Role::Auditor));
        assert_eq!(tokens.role_of("staff-token-"), None);
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("staff") && !shown.contains("staff-token-1"),
            "{shown}"
        );
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
