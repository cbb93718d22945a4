//! API tokens as the control plane stores them: `TICKETMAX_API_TOKENS` holds `name:role:hash`
//! entries, the hash made by the control plane's own `hash-token` command (so the tests
//! exercise the command operators use instead of re-implementing it).
use std::io::Write;
use std::process::Stdio;

use crate::{CONTROL_PLANE_BIN, binary};

/// The viewer's and the operator's secrets of [`crate::TestAppBuilder::viewer_and_operator`].
pub const VIEWER_TOKEN: &str = "viewer-token-7d3a9c";
pub const OPERATOR_TOKEN: &str = "operator-token-52b8f0";

/// `printf %s TOKEN | ticketmax-control-plane hash-token`: the hex SHA-256 of `token`.
pub fn hash_token(token: &str) -> String {
    let mut child = std::process::Command::new(binary(CONTROL_PLANE_BIN))
        .arg("hash-token")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ticketmax-control-plane hash-token");
    child
        .stdin
        .take()
        .expect("hash-token's stdin")
        .write_all(token.as_bytes())
        .expect("write the token to hash-token");
    let out = child.wait_with_output().expect("hash-token's output");
    assert!(out.status.success(), "hash-token failed: {out:?}");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(hash.len(), 64, "hash-token printed {hash:?}");
    hash
}

/// One configured token: who holds it, their role (`viewer` or `operator`) and the secret.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub name: String,
    pub role: String,
    pub secret: String,
}

impl ApiToken {
    pub fn new(name: &str, role: &str, secret: &str) -> Self {
        Self {
            name: name.into(),
            role: role.into(),
            secret: secret.into(),
        }
    }
}

/// The value of `TICKETMAX_API_TOKENS` for `tokens`.
pub fn api_tokens_env(tokens: &[ApiToken]) -> String {
    tokens
        .iter()
        .map(|t| format!("{}:{}:{}", t.name, t.role, hash_token(&t.secret)))
        .collect::<Vec<_>>()
        .join(",")
}
