//! Cookie sessions of the pages: after a person signs in with their token, the browser holds
//! only a random session id; the token never goes back to it.
//!
//! - [`Sessions`]: the server-side table, session id → the [`Credential`] the token gave, a
//!   CSRF token of its own, and when it started and was last used. A session ends after
//!   [`IDLE_TIMEOUT`] without use or [`ABSOLUTE_TIMEOUT`] after it started; the table holds
//!   at most [`MAX_SESSIONS`] (the oldest goes first), so memory stays bounded whatever
//!   signs in. Ids are kept only as SHA-256 digests. Failed sign-ins are counted per minute
//!   ([`MAX_FAILED_SIGN_INS_PER_MINUTE`]), so the sign-in form is no way to guess tokens.
//! - The cookies: [`SESSION_COOKIE`], and the sign-in form's own [`SIGN_IN_COOKIE`] (a
//!   double-submit token, so that no other site can sign a browser in). Both are `Secure`,
//!   `HttpOnly`, `SameSite=Strict` and carry the `__Host-` prefix, which browsers allow only
//!   on a secure cookie for this host and path `/`: a neighbouring subdomain cannot plant
//!   one.
//! - [`local_path`]: the `next` page a sign-in returns to, only ever a path of this site.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderValue, header};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::form::{is_token, random_token};
use crate::auth::{Credential, Source};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "__Host-closeloop_session";
/// The sign-in form's double-submit cookie's name.
pub const SIGN_IN_COOKIE: &str = "__Host-closeloop_signin";
/// A session unused for this long has ended.
pub const IDLE_TIMEOUT: SignedDuration = SignedDuration::from_mins(30);
/// A session this old has ended, however busy.
pub const ABSOLUTE_TIMEOUT: SignedDuration = SignedDuration::from_hours(8);
/// Most sessions held at once; a new one past this ends the oldest.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins the service takes in one minute; past that, every sign-in is refused
/// with 429 until the minute is over (the bearer API is not affected).
pub const MAX_FAILED_SIGN_INS_PER_MINUTE: u32 = 20;
/// How long the sign-in form's cookie lasts: a form older than this is refused, and shown
/// again to be sent anew.
pub const SIGN_IN_FORM_SECONDS: u32 = 3600;

/// Random bytes in a session id and in a CSRF token.
const TOKEN_BYTES: usize = 32;

/// A signed-in request: the credential its session holds and the session's CSRF token, which
/// every form it sends must carry. The guard puts it in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// Who signed in: the credential their token gave, unchanged.
    pub(crate) credential: Credential,
    /// The session's CSRF token.
    pub(crate) csrf: Arc<str>,
    /// The digest of the session id, to end it by.
    key: [u8; 32],
}

/// One session.
#[derive(Debug)]
struct Session {
    /// Its place in the order of creation, for evicting the oldest.
    seq: u64,
    credential: Credential,
    csrf: Arc<str>,
    created: Timestamp,
    last_seen: Timestamp,
}

impl Session {
    fn ended(&self, now: Timestamp) -> bool {
        now.duration_since(self.last_seen) >= IDLE_TIMEOUT
            || now.duration_since(self.created) >= ABSOLUTE_TIMEOUT
    }
}

#[derive(Debug, Default)]
struct Table {
    by_key: HashMap<[u8; 32], Session>,
    /// Creation order: sequence number → key.
    order: BTreeMap<u64, [u8; 32]>,
    next_seq: u64,
}

impl Table {
    fn remove(&mut self, key: &[u8; 32]) {
        if let Some(session) = self.by_key.remove(key) {
            self.order.remove(&session.seq);
        }
    }

    /// Ends sessions from the oldest while they are past their absolute timeout or the
    /// table is over `capacity`.
    fn trim(&mut self, capacity: usize, now: Timestamp) {
        while let Some((&seq, &key)) = self.order.first_key_value() {
            let expired = self
                .by_key
                .get(&key)
                .is_none_or(|session| now.duration_since(session.created) >= ABSOLUTE_TIMEOUT);
            if !expired && self.by_key.len() <= capacity {
                break;
            }
            self.order.remove(&seq);
            self.by_key.remove(&key);
        }
    }
}

/// Failed sign-ins in the current minute.
#[derive(Debug)]
struct Failures {
    window_start: Timestamp,
    count: u32,
}

/// The sessions of the pages (see the module docs).
#[derive(Debug)]
pub struct Sessions {
    table: Mutex<Table>,
    failures: Mutex<Failures>,
    capacity: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_capacity(MAX_SESSIONS)
    }
}

impl Sessions {
    /// An empty table of at most `capacity` sessions.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            failures: Mutex::new(Failures {
                window_start: Timestamp::UNIX_EPOCH,
                count: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    /// Starts a session for `credential` at `now`: its id (the cookie's value, kept nowhere
    /// else) and what the requests of the session carry.
    pub(crate) fn start(&self, mut credential: Credential, now: Timestamp) -> (String, SignedIn) {
        credential.source = Source::Session;
        let id = random_token::<TOKEN_BYTES>();
        let key = digest(&id);
        let csrf: Arc<str> = random_token::<TOKEN_BYTES>().into();
        let mut table = self.lock();
        let seq = table.next_seq;
        table.next_seq += 1;
        table.order.insert(seq, key);
        table.by_key.insert(
            key,
            Session {
                seq,
                credential: credential.clone(),
                csrf: Arc::clone(&csrf),
                created: now,
                last_seen: now,
            },
        );
        table.trim(self.capacity, now);
        (
            id,
            SignedIn {
                credential,
                csrf,
                key,
            },
        )
    }

    /// The live session of the id `id` at `now`, which counts as a use of it; `None` when
    /// there is none (never was, ended, or evicted). An ended session is removed.
    pub(crate) fn find(&self, id: &str, now: Timestamp) -> Option<SignedIn> {
        if !is_token::<TOKEN_BYTES>(id) {
            return None;
        }
        let key = digest(id);
        let mut table = self.lock();
        let session = table.by_key.get_mut(&key)?;
        if session.ended(now) {
            table.remove(&key);
            return None;
        }
        session.last_seen = now.max(session.last_seen);
        Some(SignedIn {
            credential: session.credential.clone(),
            csrf: Arc::clone(&session.csrf),
            key,
        })
    }

    /// Ends the session of a signed-in request.
    pub(crate) fn end(&self, signed_in: &SignedIn) {
        self.lock().remove(&signed_in.key);
    }

    /// How many sessions are held (ended ones not yet removed included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether no session is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seconds until sign-ins are taken again, when this minute's failures are used up.
    pub(crate) fn sign_ins_refused_for(&self, now: Timestamp) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.duration_since(failures.window_start);
        let minute = SignedDuration::from_mins(1);
        if elapsed >= minute || failures.count < MAX_FAILED_SIGN_INS_PER_MINUTE {
            return None;
        }
        let left = (minute - elapsed).as_secs().max(1);
        Some(left.unsigned_abs())
    }

    /// Counts a failed sign-in at `now`.
    pub(crate) fn note_failed_sign_in(&self, now: Timestamp) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(failures.window_start) >= SignedDuration::from_mins(1) {
            failures.window_start = now;
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while the table was held leaves it consistent (every change is a single
        // map operation or a trim that can stop anywhere), so a poisoned lock is taken as is.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The value of the cookie `name` in the request's `Cookie` headers, if it sent one.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// The session cookie a browser keeps until it closes (no `Max-Age`).
pub(crate) fn session_cookie(id: &str) -> HeaderValue {
    set_cookie(SESSION_COOKIE, id, None)
}

/// A session cookie that ends at once: what sign-out and a session that is gone answer.
pub(crate) fn expired_session_cookie() -> HeaderValue {
    set_cookie(SESSION_COOKIE, "", Some(0))
}

/// The sign-in form's double-submit cookie.
pub(crate) fn sign_in_cookie(token: &str) -> HeaderValue {
    set_cookie(SIGN_IN_COOKIE, token, Some(SIGN_IN_FORM_SECONDS))
}

/// The sign-in form's cookie, ended once it has served.
pub(crate) fn expired_sign_in_cookie() -> HeaderValue {
    set_cookie(SIGN_IN_COOKIE, "", Some(0))
}

/// A new token for the sign-in form's cookie and field.
pub(crate) fn new_sign_in_token() -> String {
    random_token::<TOKEN_BYTES>()
}

/// Whether `raw` is a sign-in form token as [`new_sign_in_token`] makes them.
pub(crate) fn is_sign_in_token(raw: &str) -> bool {
    is_token::<TOKEN_BYTES>(raw)
}

fn set_cookie(name: &str, value: &str, max_age: Option<u32>) -> HeaderValue {
    let max_age = max_age.map_or_else(String::new, |seconds| format!("; Max-Age={seconds}"));
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{max_age}"
    ))
    .expect("cookie names and hex values are valid header text")
}

/// Longest `next` a sign-in returns to, in bytes.
pub const MAX_NEXT_BYTES: usize = 2048;

/// `raw` when it is a path of this site to return to after signing in: it starts with one
/// `/` (not `//` or `/\`, which browsers read as another host), holds no backslash, control
/// character or space, and is at most [`MAX_NEXT_BYTES`] long.
#[must_use]
pub fn local_path(raw: &str) -> Option<&str> {
    let local = raw.starts_with('/')
        && !raw.starts_with("//")
        && raw.len() <= MAX_NEXT_BYTES
        && !raw
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    local.then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ApiTokens;

    fn credential() -> Credential {
        let tokens: ApiTokens = "staff@rxx/site-a:staff-token-1:PALS"
            .parse()
            .expect("tokens");
        tokens.credential_of("staff-token-1").expect("credential")
    }

    fn at(minutes: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH
            + SignedDuration::from_hours(24 * 365 * 56)
            + SignedDuration::from_mins(minutes)
    }

    #[test]
    fn a_session_holds_the_credential_unchanged_and_its_own_csrf_token() {
        let sessions = Sessions::default();
        let (id, started) = sessions.start(credential(), at(0));
        let found = sessions.find(&id, at(1)).expect("live");
        let token = credential();
        assert_eq!(
            (
                &found.credential.id,
                found.credential.role,
                &found.credential.name,
                &found.credential.org_unit
            ),
            (&token.id, token.role, &token.name, &token.org_unit),
            "the token's credential, scope and actor included"
        );
        assert_eq!(found.credential.source, Source::Session);
        assert_eq!(found.csrf, started.csrf);
        assert_ne!(&*found.csrf, id.as_str());
        let (other, _) = sessions.start(credential(), at(0));
        assert_ne!(other, id);
        assert_ne!(
            sessions.find(&other, at(1)).expect("live").csrf,
            started.csrf
        );
        assert!(sessions.find("not-a-session", at(1)).is_none());
        assert!(sessions.find(&"0".repeat(64), at(1)).is_none());
    }

    #[test]
    fn a_session_ends_when_idle_and_when_old_however_busy() {
        let sessions = Sessions::default();
        let (idle, _) = sessions.start(credential(), at(0));
        assert!(sessions.find(&idle, at(29)).is_some());
        // Used at 29 minutes: alive until 59.
        assert!(sessions.find(&idle, at(58)).is_some());
        assert!(sessions.find(&idle, at(88)).is_none(), "30 minutes idle");
        assert!(sessions.find(&idle, at(89)).is_none(), "and gone for good");

        let (busy, _) = sessions.start(credential(), at(0));
        for minute in (20..480).step_by(20) {
            assert!(sessions.find(&busy, at(minute)).is_some(), "{minute}");
        }
        assert!(sessions.find(&busy, at(480)).is_none(), "8 hours old");
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_go_first() {
        let sessions = Sessions::with_capacity(3);
        let ids: Vec<String> = (0..5)
            .map(|i| sessions.start(credential(), at(i)).0)
            .collect();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.find(&ids[0], at(5)).is_none());
        assert!(sessions.find(&ids[1], at(5)).is_none());
        assert!(ids[2..].iter().all(|id| sessions.find(id, at(5)).is_some()));
    }

    #[test]
    fn sign_out_ends_only_its_own_session() {
        let sessions = Sessions::default();
        let (mine, signed_in) = sessions.start(credential(), at(0));
        let (theirs, _) = sessions.start(credential(), at(0));
        sessions.end(&signed_in);
        assert!(sessions.find(&mine, at(1)).is_none());
        assert!(sessions.find(&theirs, at(1)).is_some());
    }

    #[test]
    fn failed_sign_ins_beyond_the_limit_close_the_form_for_the_rest_of_the_minute() {
        let sessions = Sessions::default();
        for _ in 0..MAX_FAILED_SIGN_INS_PER_MINUTE {
            assert_eq!(sessions.sign_ins_refused_for(at(0)), None);
            sessions.note_failed_sign_in(at(0));
        }
        let wait = sessions.sign_ins_refused_for(at(0)).expect("refused");
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(sessions.sign_ins_refused_for(at(1)), None, "a new minute");
    }

    #[test]
    fn cookies_are_secure_http_only_strict_and_read_by_name() {
        let set = session_cookie("abc").to_str().expect("text").to_owned();
        for part in [
            "__Host-closeloop_session=abc",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Max-Age"), "a browser-session cookie: {set}");
        assert!(
            expired_session_cookie()
                .to_str()
                .expect("text")
                .contains("Max-Age=0")
        );
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-closeloop_session=xyz"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-closeloop_signin=tok"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn only_paths_of_this_site_are_returned_to() {
        for good in ["/staff", "/staff/loops/a-1?done=acknowledged", "/"] {
            assert_eq!(local_path(good), Some(good));
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "staff",
            "",
            "/staff\r\nSet-Cookie: x=y",
            "/a b",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(
            local_path(&format!("/{}", "a".repeat(MAX_NEXT_BYTES))),
            None
        );
    }
}
