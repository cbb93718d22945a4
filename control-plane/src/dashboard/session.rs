//! Dashboard sessions: a sign-in with an API token creates a session held in this replica's
//! memory (the token never goes back to the browser), named by a random id in an HttpOnly,
//! SameSite=Strict cookie (Secure when the HTTP port serves TLS) that expires. Each session
//! has its own CSRF token, which every state-changing form must carry.
//!
//! With no API tokens configured the API is open, and so is the dashboard: a visitor gets an
//! anonymous session on the first page (for the CSRF token) and acts as nobody in particular,
//! like an unauthenticated gRPC caller.
//!
//! Sessions live in one replica's memory: behind a load balancer, sign-ins stick to a replica
//! or sign in again (a restart signs everyone out, by design: nothing secret is persisted).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::auth::{Principal, Role};

/// The cookie that names a session.
pub const COOKIE: &str = "tm_session";

/// A signed-in (or, on an open API, anonymous) browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    /// The API token the session acts with; `None` on an open API.
    pub token: Option<String>,
    /// Who the token belongs to; `None` on an open API.
    pub principal: Option<Principal>,
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether the session may change things (operator, or an open API).
    pub fn can_write(&self) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|p| p.role == Role::Operator)
    }

    /// "alice (operator)", or "open access" without tokens.
    pub fn who(&self) -> String {
        match &self.principal {
            Some(p) => format!(
                "{} ({})",
                p.name,
                if p.role == Role::Operator {
                    "operator"
                } else {
                    "viewer"
                }
            ),
            None => "open access".to_owned(),
        }
    }

    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        ticketmax_runtime::credentials::constant_time_eq(given.as_bytes(), self.csrf.as_bytes())
    }
}

/// The sessions of this replica.
pub struct Sessions {
    ttl: Duration,
    secure: bool,
    by_id: Mutex<HashMap<String, Session>>,
}

/// At most this many sessions are kept; beyond it the oldest expire first.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    pub fn new(ttl: Duration, secure: bool) -> Self {
        Self {
            ttl,
            secure,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session acting with `token` as `principal`.
    pub fn create(&self, token: Option<String>, principal: Option<Principal>) -> Session {
        let now = Instant::now();
        let session = Session {
            id: random_token(),
            token,
            principal,
            csrf: random_token(),
            expires: now + self.ttl,
        };
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.values().min_by_key(|s| s.expires).map(|s| s.id.clone())
        {
            map.remove(&oldest);
        }
        map.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session the request's cookie names.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The `Set-Cookie` value that hands `session` to the browser.
    pub fn set_cookie(&self, session: &Session) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            session.id,
            self.ttl.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// 256 random bits as hex (two v4 UUIDs: 244 random bits from the OS's generator).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            cookie.parse().expect("a header value"),
        );
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_only_while_it_lives() {
        let sessions = Sessions::new(Duration::from_millis(50), false);
        let s = sessions.create(Some("t".into()), None);
        let found = sessions
            .from_headers(&headers(&format!("a=b; {COOKIE}={}; c=d", s.id)))
            .expect("the session");
        assert_eq!(found.id, s.id);
        assert!(sessions.from_headers(&headers("tm_session=nope")).is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            sessions
                .from_headers(&headers(&format!("{COOKIE}={}", s.id)))
                .is_none(),
            "an expired session is gone"
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let plain = Sessions::new(Duration::from_secs(600), false);
        let s = plain.create(None, None);
        let c = plain.set_cookie(&s);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=600")
        );
        assert!(!c.contains("Secure"));
        let tls = Sessions::new(Duration::from_secs(600), true);
        assert!(tls.set_cookie(&s).ends_with("; Secure"));
        assert!(tls.clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_must_match_exactly() {
        let sessions = Sessions::new(Duration::from_secs(60), false);
        let (a, b) = (sessions.create(None, None), sessions.create(None, None));
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.csrf.len(), 64);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
    }

    #[test]
    fn viewers_cannot_write_operators_and_open_access_can() {
        let sessions = Sessions::new(Duration::from_secs(60), false);
        let viewer = sessions.create(
            Some("v".into()),
            Some(Principal {
                name: "dash".into(),
                role: Role::Viewer,
            }),
        );
        assert!(!viewer.can_write());
        assert_eq!(viewer.who(), "dash (viewer)");
        let operator = sessions.create(
            Some("o".into()),
            Some(Principal {
                name: "alice".into(),
                role: Role::Operator,
            }),
        );
        assert!(operator.can_write());
        assert!(sessions.create(None, None).can_write());
    }
}
