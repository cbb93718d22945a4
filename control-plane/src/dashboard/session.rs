//! Dashboard sessions: a sign-in with an API token creates a session, named by a random id in
//! an HttpOnly, SameSite=Strict cookie (Secure when the HTTP port serves TLS) that expires.
//! Each session has its own CSRF token, which every state-changing form must carry.
//!
//! Sessions are rows of the control plane's database ([`crate::store::sessions`]), so a
//! sign-in holds on every replica behind a load balancer and a sign-out ends it everywhere.
//! Neither the token nor the session id is stored: only their SHA-256 digests. The dashboard
//! calls the API with the session's token digest ([`SessionCaller`]); who that is comes from
//! the replica's configured tokens at each request, so a revoked token ends its sessions.
//!
//! With no API tokens configured the API is open, and so is the dashboard: a visitor gets an
//! anonymous session on the first page and acts as nobody in particular, like an
//! unauthenticated gRPC caller. Such a session is not stored: its CSRF token is derived from
//! its random id (a digest of it), which a page of another site can neither read from the
//! HttpOnly cookie nor guess, so every replica checks it without a row and a visitor without a
//! cookie costs no write.
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::Utc;

use crate::auth::{Auth, Principal, Role, SessionCaller, sha256_hex};
use crate::store::{Store, StoreError, sessions::StoredSession};

/// The cookie that names a session.
pub const COOKIE: &str = "tm_session";

/// A signed-in (or, on an open API, anonymous) browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    /// What the session calls the API as; `None` on an open API.
    pub caller: Option<SessionCaller>,
    /// Who the token belongs to; `None` on an open API.
    pub principal: Option<Principal>,
    pub csrf: String,
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

/// The sessions, as this replica sees them.
pub struct Sessions {
    ttl: Duration,
    secure: bool,
}

impl Sessions {
    pub fn new(ttl: Duration, secure: bool) -> Self {
        Self { ttl, secure }
    }

    /// A new anonymous session for an open API (not stored; see the module's docs).
    pub fn anonymous(&self) -> Session {
        anonymous_session(random_token())
    }

    /// A new session acting with the token whose digest is `token_hash`.
    pub async fn create(
        &self,
        store: &Store,
        auth: &Auth,
        token_hash: String,
    ) -> Result<Session, StoreError> {
        let now = Utc::now();
        let id = random_token();
        let stored = StoredSession {
            token_hash,
            csrf: random_token(),
            expires_at: now + chrono::Duration::from_std(self.ttl).unwrap_or_default(),
        };
        store.create_session(&sha256_hex(&id), &stored, now).await?;
        Ok(session_of(id, stored, auth))
    }

    /// The live session the request's cookie names, if its token is still configured.
    pub async fn from_headers(
        &self,
        store: &Store,
        auth: &Auth,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, StoreError> {
        let Some(id) = cookie(headers, COOKIE).filter(|id| !id.is_empty() && id.len() <= 128)
        else {
            return Ok(None);
        };
        if !auth.api_tokens_configured() {
            return Ok(Some(anonymous_session(id.to_owned())));
        }
        let Some(stored) = store.find_session(&sha256_hex(id), Utc::now()).await? else {
            return Ok(None);
        };
        let session = session_of(id.to_owned(), stored, auth);
        // A session whose token was revoked no longer stands for anyone.
        Ok(session.principal.is_some().then_some(session))
    }

    pub async fn remove(&self, store: &Store, id: &str) -> Result<(), StoreError> {
        store.delete_session(&sha256_hex(id)).await
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

fn anonymous_session(id: String) -> Session {
    Session {
        csrf: sha256_hex(&format!("csrf:{id}")),
        id,
        caller: None,
        principal: None,
    }
}

fn session_of(id: String, stored: StoredSession, auth: &Auth) -> Session {
    Session {
        id,
        principal: auth.principal_for_hash(&stored.token_hash),
        caller: Some(SessionCaller {
            token_hash: stored.token_hash,
        }),
        csrf: stored.csrf,
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

    /// A migrated SQLite store in a fresh directory (the Postgres side is covered by the
    /// dashboard scenarios, which sign in on one replica and act on another).
    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tm-sessions-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let url = format!("sqlite://{}?mode=rwc", dir.join("cp.db").display());
        let store = Store::connect(&url).await.expect("sqlite");
        store.migrate().await.expect("migrations");
        (store, dir)
    }

    const VIEW: &str = "view-secret";
    const OP: &str = "op-secret";

    fn auth() -> Auth {
        let tokens = format!(
            "dash:viewer:{},alice:operator:{}",
            sha256_hex(VIEW),
            sha256_hex(OP)
        );
        Auth::new(Some(&tokens), None, 60).expect("tokens")
    }

    #[tokio::test]
    async fn a_session_is_found_by_its_cookie_only_while_it_lives_and_until_signed_out() {
        let (store, dir) = store().await;
        let auth = auth();
        let sessions = Sessions::new(Duration::from_millis(300), false);
        let s = sessions
            .create(&store, &auth, sha256_hex(OP))
            .await
            .expect("created");
        let cookie = format!("a=b; {COOKIE}={}; c=d", s.id);
        let found = sessions
            .from_headers(&store, &auth, &headers(&cookie))
            .await
            .expect("read")
            .expect("the session");
        assert_eq!(found.id, s.id);
        assert_eq!(found.csrf, s.csrf);
        assert_eq!(found.who(), "alice (operator)");
        // Another replica (another `Sessions` over the same store) knows it too.
        let elsewhere = Sessions::new(Duration::from_millis(300), false);
        assert!(
            elsewhere
                .from_headers(&store, &auth, &headers(&cookie))
                .await
                .expect("read")
                .is_some()
        );
        for wrong in ["tm_session=nope", "tm_session=", "other=1"] {
            assert!(
                sessions
                    .from_headers(&store, &auth, &headers(wrong))
                    .await
                    .expect("read")
                    .is_none(),
                "{wrong}"
            );
        }
        // The table holds digests, never the id.
        let raw: Vec<String> = sea_orm::ConnectionTrait::query_all_raw(
            store.connection(),
            sea_orm::Statement::from_string(
                store.backend(),
                "SELECT id_hash FROM dashboard_sessions",
            ),
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.try_get::<String>("", "id_hash").expect("id_hash"))
        .collect();
        assert_eq!(raw, vec![sha256_hex(&s.id)]);

        let other = sessions
            .create(&store, &auth, sha256_hex(VIEW))
            .await
            .expect("created");
        elsewhere.remove(&store, &other.id).await.expect("removed");
        assert!(
            sessions
                .from_headers(&store, &auth, &headers(&format!("{COOKIE}={}", other.id)))
                .await
                .expect("read")
                .is_none(),
            "signed out on another replica is signed out here"
        );

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            sessions
                .from_headers(&store, &auth, &headers(&cookie))
                .await
                .expect("read")
                .is_none(),
            "an expired session is gone"
        );
        assert_eq!(
            store
                .delete_expired_sessions(Utc::now())
                .await
                .expect("deleted"),
            1
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_revoked_token_ends_its_sessions_and_open_sessions_are_not_stored() {
        let (store, dir) = store().await;
        let sessions = Sessions::new(Duration::from_secs(60), false);
        let s = sessions
            .create(&store, &auth(), sha256_hex(OP))
            .await
            .expect("created");
        let cookie = headers(&format!("{COOKIE}={}", s.id));
        // The same database, a replica configured without alice's token.
        let revoked = Auth::new(Some(&format!("dash:viewer:{}", sha256_hex(VIEW))), None, 60)
            .expect("tokens");
        assert!(
            sessions
                .from_headers(&store, &revoked, &cookie)
                .await
                .expect("read")
                .is_none()
        );
        let open = Auth::new(None, None, 60).expect("no tokens");
        let anonymous = sessions.anonymous();
        let anon_cookie = headers(&format!("{COOKIE}={}", anonymous.id));
        let elsewhere = Sessions::new(Duration::from_secs(60), false)
            .from_headers(&store, &open, &anon_cookie)
            .await
            .expect("read")
            .expect("an anonymous session");
        assert!(elsewhere.can_write() && elsewhere.who() == "open access");
        assert_eq!(
            elsewhere.csrf, anonymous.csrf,
            "every replica derives the same CSRF token from the cookie"
        );
        assert_ne!(anonymous.csrf, sessions.anonymous().csrf);
        assert!(
            sessions
                .from_headers(&store, &auth(), &anon_cookie)
                .await
                .expect("read")
                .is_none(),
            "an anonymous session is worth nothing once tokens are configured"
        );
        let rows = store
            .delete_expired_sessions(Utc::now() + chrono::Duration::days(1))
            .await
            .expect("deleted");
        assert_eq!(rows, 1, "only alice's session was ever stored");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn cookies_are_http_only_strict_and_secure_under_tls() {
        let (store, dir) = store().await;
        let plain = Sessions::new(Duration::from_secs(600), false);
        let s = plain
            .create(&store, &auth(), sha256_hex(VIEW))
            .await
            .expect("created");
        let c = plain.set_cookie(&s);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=600")
        );
        assert!(!c.contains("Secure"));
        let tls = Sessions::new(Duration::from_secs(600), true);
        assert!(tls.set_cookie(&s).ends_with("; Secure"));
        assert!(tls.clear_cookie().contains("Max-Age=0"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn csrf_tokens_differ_per_session_and_must_match_exactly() {
        let (store, dir) = store().await;
        let auth = auth();
        let sessions = Sessions::new(Duration::from_secs(60), false);
        let a = sessions
            .create(&store, &auth, sha256_hex(VIEW))
            .await
            .expect("created");
        let b = sessions
            .create(&store, &auth, sha256_hex(OP))
            .await
            .expect("created");
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.csrf.len(), 64);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.can_write());
        assert_eq!(a.who(), "dash (viewer)");
        assert!(b.can_write());
        let _ = std::fs::remove_dir_all(dir);
    }
}
