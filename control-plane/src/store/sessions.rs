//! Dashboard sessions (`dashboard_sessions`): shared by every replica, so a sign-in holds
//! behind a load balancer and a sign-out ends it everywhere. Rows name a session and its API
//! token only by SHA-256 digests; who the token belongs to is looked up in the replica's
//! configuration at each request, so removing a token from `TICKETMAX_API_TOKENS` ends its
//! sessions and a role change applies at once.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Value};

use super::{Context, Result, Store, truncate};

/// A stored session, as found by the digest of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the API token the session acts with (open-API sessions are not stored).
    pub token_hash: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    pub async fn create_session(
        &self,
        id_hash: &str,
        session: &StoredSession,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO dashboard_sessions (id_hash, token_hash, csrf, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                vec![
                    id_hash.into(),
                    session.token_hash.clone().into(),
                    session.csrf.clone().into(),
                    truncate(now).into(),
                    truncate(session.expires_at).into(),
                ],
            ))
            .await
            .ctx("storing a dashboard session")?;
        Ok(())
    }

    /// The session named by `id_hash`, if it lives at `now`.
    pub async fn find_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredSession>> {
        let row = self
            .db
            .query_one_raw(self.stmt(
                "SELECT token_hash, csrf, expires_at FROM dashboard_sessions \
                 WHERE id_hash = $1 AND expires_at > $2",
                vec![id_hash.into(), Value::from(truncate(now))],
            ))
            .await
            .ctx("reading a dashboard session")?;
        row.map(|r| {
            Ok(StoredSession {
                token_hash: r.try_get("", "token_hash").ctx("reading a session")?,
                csrf: r.try_get("", "csrf").ctx("reading a session")?,
                expires_at: r.try_get("", "expires_at").ctx("reading a session")?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "DELETE FROM dashboard_sessions WHERE id_hash = $1",
                vec![id_hash.into()],
            ))
            .await
            .ctx("deleting a dashboard session")?;
        Ok(())
    }

    /// Deletes the sessions expired at `now` (the cleaner's pass); how many went.
    pub async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let res = self
            .db
            .execute_raw(self.stmt(
                "DELETE FROM dashboard_sessions WHERE expires_at <= $1",
                vec![Value::from(truncate(now))],
            ))
            .await
            .ctx("deleting expired dashboard sessions")?;
        Ok(res.rows_affected())
    }
}
