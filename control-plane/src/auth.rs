//! Who may call what. API callers present `authorization: Bearer <token>`; tokens are configured
//! only as SHA-256 hashes (`TICKETMAX_API_TOKENS`), each with a name and a role. `viewer` reads
//! (status, jobs, runs, watch, reports); `operator` also changes (trigger, cancel, pause, resume,
//! update). Executors and the control plane share one secret (`TICKETMAX_EXECUTOR_TOKEN`) for
//! registration and RunJob. With no tokens configured, the API is open (the embedded default on
//! loopback); the control plane warns when that is not on loopback.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tonic::{Request, Status, metadata::MetadataMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// A caller already authenticated by a dashboard session: the SHA-256 of the session's API
/// token, placed in a request's extensions by the dashboard (a remote caller cannot set
/// extensions, only metadata). The token itself stays in the browser's sign-in form only.
#[derive(Debug, Clone)]
pub struct SessionCaller {
    pub token_hash: String,
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthConfigError {
    #[error(
        "TICKETMAX_API_TOKENS entry {0} is not NAME:ROLE:SHA256HEX (role viewer or operator, 64 hex digits)"
    )]
    BadEntry(usize),
    #[error("TICKETMAX_API_TOKENS names '{0}' twice")]
    Duplicate(String),
    #[error("TICKETMAX_API_TOKENS gives '{0}' and '{1}' the same token: each needs its own")]
    SameToken(String, String),
}

pub struct Auth {
    /// Hex SHA-256 of a token → who it is.
    tokens: HashMap<String, Principal>,
    executor_token: Option<String>,
    triggers_per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
}

use ticketmax_runtime::credentials::constant_time_eq;

fn bearer(md: &MetadataMap) -> Option<&str> {
    ticketmax_runtime::credentials::bearer(md.get("authorization")?.to_str().ok()?)
}

impl Auth {
    pub fn new(
        api_tokens: Option<&str>,
        executor_token: Option<String>,
        triggers_per_minute: u32,
    ) -> Result<Self, AuthConfigError> {
        let mut tokens = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, entry) in api_tokens
            .unwrap_or("")
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
            let [name, role, hash] = parts.as_slice() else {
                return Err(AuthConfigError::BadEntry(i + 1));
            };
            let role = match *role {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                _ => return Err(AuthConfigError::BadEntry(i + 1)),
            };
            let hash = hash.to_ascii_lowercase();
            if name.is_empty() || hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(AuthConfigError::BadEntry(i + 1));
            }
            if !names.insert((*name).to_string()) {
                return Err(AuthConfigError::Duplicate((*name).to_string()));
            }
            // One secret under two names (and maybe two roles): the last one would silently win.
            if let Some(earlier) = tokens.insert(
                hash,
                Principal {
                    name: (*name).to_string(),
                    role,
                },
            ) {
                return Err(AuthConfigError::SameToken(
                    earlier.name,
                    (*name).to_string(),
                ));
            }
        }
        Ok(Self {
            tokens,
            executor_token: executor_token.filter(|t| !t.is_empty()),
            triggers_per_minute,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    pub fn api_tokens_configured(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn executor_token(&self) -> Option<&str> {
        self.executor_token.as_deref()
    }

    /// The caller of `req`, when it may do what `method` needs: a dashboard session's
    /// ([`SessionCaller`]) or the bearer token's. `None` when the API is open.
    pub fn require_request<T>(
        &self,
        req: &Request<T>,
        need: Role,
        method: &str,
    ) -> Result<Option<Principal>, Status> {
        match req.extensions().get::<SessionCaller>() {
            Some(caller) => self.require_hash(Some(&caller.token_hash), need, method),
            None => self.require(req.metadata(), need, method),
        }
    }

    /// The caller, when it may do what `method` needs. `None` when the API is open.
    pub fn require(
        &self,
        md: &MetadataMap,
        need: Role,
        method: &str,
    ) -> Result<Option<Principal>, Status> {
        let hash = bearer(md).map(sha256_hex);
        self.require_hash(hash.as_deref(), need, method)
    }

    /// Who holds the token whose SHA-256 is `token_hash`, if it is configured.
    pub fn principal_for_hash(&self, token_hash: &str) -> Option<Principal> {
        self.tokens.get(token_hash).cloned()
    }

    fn require_hash(
        &self,
        token_hash: Option<&str>,
        need: Role,
        method: &str,
    ) -> Result<Option<Principal>, Status> {
        if self.tokens.is_empty() {
            return Ok(None);
        }
        let token_hash = token_hash.ok_or_else(|| {
            Status::unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
        })?;
        let who = self
            .tokens
            .get(token_hash)
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        if who.role < need {
            return Err(Status::permission_denied(format!(
                "token '{}' has role {}; {method} needs {}",
                who.name,
                who.role.as_str(),
                need.as_str()
            )));
        }
        Ok(Some(who.clone()))
    }

    /// Executor registration and heartbeats carry the shared executor secret when one is set.
    pub fn require_executor(&self, md: &MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.executor_token else {
            return Ok(());
        };
        match bearer(md) {
            Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong executor token")),
            None => Err(Status::unauthenticated(
                "missing executor token: set TICKETMAX_EXECUTOR_TOKEN on the executor",
            )),
        }
    }

    /// A token bucket per caller: `triggers_per_minute` sustained, the same as burst.
    pub fn allow_trigger(&self, who: &str) -> Result<(), Status> {
        if self.triggers_per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(self.triggers_per_minute) / 60.0;
        let burst = f64::from(self.triggers_per_minute);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let b = buckets.entry(who.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
            Err(Status::resource_exhausted(format!(
                "trigger rate limit of {} per minute reached for '{who}'; retry in {}s",
                self.triggers_per_minute,
                wait.as_secs().max(1)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", v.parse().unwrap());
        m
    }

    fn auth() -> Auth {
        let cfg = format!(
            "alice:operator:{},dash:viewer:{}",
            sha256_hex("op-secret"),
            sha256_hex("view-secret")
        );
        Auth::new(Some(&cfg), Some("ex-secret".into()), 2).unwrap()
    }

    #[test]
    fn roles_and_tokens() {
        let a = auth();
        assert_eq!(
            a.require(&MetadataMap::new(), Role::Viewer, "GetRun")
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            a.require(&md("Bearer nope"), Role::Viewer, "GetRun")
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        let denied = a
            .require(&md("Bearer view-secret"), Role::Operator, "TriggerJob")
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(!denied.message().contains("view-secret"));
        assert_eq!(
            a.require(&md("bearer view-secret"), Role::Viewer, "GetRun")
                .unwrap()
                .unwrap()
                .name,
            "dash"
        );
        assert_eq!(
            a.require(&md("Bearer op-secret"), Role::Operator, "TriggerJob")
                .unwrap()
                .unwrap()
                .name,
            "alice"
        );
    }

    #[test]
    fn executor_secret() {
        let a = auth();
        assert!(a.require_executor(&md("Bearer ex-secret")).is_ok());
        assert!(a.require_executor(&md("Bearer op-secret")).is_err());
        assert!(a.require_executor(&MetadataMap::new()).is_err());
    }

    #[test]
    fn bad_config_is_refused() {
        assert_eq!(
            Auth::new(Some("alice:root:00"), None, 0).err(),
            Some(AuthConfigError::BadEntry(1))
        );
        let h = sha256_hex("x");
        assert_eq!(
            Auth::new(Some(&format!("a:viewer:{h},a:operator:{h}")), None, 0).err(),
            Some(AuthConfigError::Duplicate("a".into()))
        );
        // The same secret for a viewer and an operator used to make it the operator's.
        assert_eq!(
            Auth::new(Some(&format!("dash:viewer:{h},ops:operator:{h}")), None, 0).err(),
            Some(AuthConfigError::SameToken("dash".into(), "ops".into()))
        );
        let upper = h.to_ascii_uppercase();
        assert_eq!(
            Auth::new(
                Some(&format!("dash:viewer:{h},ops:operator:{upper}")),
                None,
                0
            )
            .err(),
            Some(AuthConfigError::SameToken("dash".into(), "ops".into()))
        );
    }

    #[test]
    fn trigger_rate_limit_per_caller() {
        let a = auth();
        assert!(a.allow_trigger("alice").is_ok());
        assert!(a.allow_trigger("alice").is_ok());
        assert_eq!(
            a.allow_trigger("alice").unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert!(a.allow_trigger("bob").is_ok());
    }
}

/// Any configuration text and any credentials get an answer, never a panic; a
/// configured token is recognised whatever its name, and nothing else is.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use tonic::metadata::MetadataValue;

    fn with_auth(value: &str) -> Option<MetadataMap> {
        let v: MetadataValue<_> = value.parse().ok()?;
        let mut m = MetadataMap::new();
        m.insert("authorization", v);
        Some(m)
    }

    fn config_text() -> impl Strategy<Value = String> {
        let entry = prop_oneof![
            (
                "\\PC{0,12}",
                "viewer|operator|root|\\PC{0,8}",
                "[0-9a-fA-F]{64}"
            )
                .prop_map(|(n, r, h)| format!("{n}:{r}:{h}")),
            "[a-z]{1,8}:(viewer|operator):[0-9a-f]{0,70}",
            ".{0,80}",
            "[:,\n ]{0,10}",
        ];
        prop::collection::vec(entry, 0..6).prop_map(|v| v.join(","))
    }

    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,80}",
            "(Bearer|bearer|BEARER|Basic|) {0,3}[ -~]{0,80}",
            Just("Bearer".to_string()),
            Just("Bearer ".to_string()),
            Just("Bearer op-secret".to_string()),
            Just("Bearer view-secret".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_configuration_never_panics(
            cfg in config_text(),
            exec in proptest::option::of("\\PC{0,40}"),
            rate in any::<u32>(),
            value in header(),
        ) {
            if let Ok(a) = Auth::new(Some(&cfg), exec, rate) {
                let md = with_auth(&value).unwrap_or_default();
                for need in [Role::Viewer, Role::Operator] {
                    match a.require(&md, need, "Method") {
                        Ok(Some(p)) => prop_assert!(p.role >= need),
                        Ok(None) => prop_assert!(!a.api_tokens_configured()),
                        Err(s) => prop_assert!(matches!(
                            s.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        )),
                    }
                }
                let _ = a.require_executor(&md);
                let _ = a.allow_trigger(&value);
                let _ = a.allow_trigger(&value);
            }
        }

        #[test]
        fn arbitrary_credentials_are_refused_and_never_echoed(value in header()) {
            let cfg = format!(
                "alice:operator:{},dash:viewer:{}",
                sha256_hex("op-secret"),
                sha256_hex("view-secret")
            );
            let a = Auth::new(Some(&cfg), Some("ex-secret".into()), 3).unwrap();
            let Some(md) = with_auth(&value) else { return Ok(()) };
            let token = bearer(&md);
            match a.require(&md, Role::Operator, "TriggerJob") {
                Ok(p) => prop_assert_eq!(token, Some("op-secret"), "{:?}", p),
                Err(s) => {
                    prop_assert!(token != Some("op-secret"));
                    if let Some(t) = token.filter(|t| t.len() >= 4) {
                        prop_assert!(!s.message().contains(t), "{} echoes {t}", s.message());
                    }
                }
            }
            prop_assert_eq!(a.require_executor(&md).is_ok(), token == Some("ex-secret"));
        }

        #[test]
        fn a_configured_token_is_recognised_whatever_its_name(
            name in "[^:,\n\\s][^:,\n]{0,30}[^:,\n\\s]|[^:,\n\\s]",
            secret in "[!-~]{1,60}",
            other in "[!-~]{1,60}",
            operator in any::<bool>(),
        ) {
            let role = if operator { "operator" } else { "viewer" };
            let a = Auth::new(Some(&format!("{name}:{role}:{}", sha256_hex(&secret))), None, 0)
                .map_err(|e| TestCaseError::fail(format!("{name:?}: {e}")))?;
            let md = with_auth(&format!("Bearer {secret}")).unwrap();
            let who = a.require(&md, Role::Viewer, "GetRun").unwrap().unwrap();
            prop_assert_eq!(&who.name, name.trim());
            prop_assert_eq!(a.require(&md, Role::Operator, "TriggerJob").is_ok(), operator);
            if other != secret {
                let md = with_auth(&format!("Bearer {other}")).unwrap();
                prop_assert_eq!(
                    a.require(&md, Role::Viewer, "GetRun").unwrap_err().code(),
                    tonic::Code::Unauthenticated
                );
            }
        }
    }
}
