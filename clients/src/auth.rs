//! Authentication: [`BearerAuth`], the interceptor that sends the API token as
//! `authorization: Bearer <token>` on every call, checks the token before anything is sent, and
//! never shows it in `Debug` output.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{Error, Result};

/// Interceptor that adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Default)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    /// No token: calls go out unchanged.
    pub fn none() -> Self {
        Self::default()
    }

    /// Fails when the token is empty or not visible ASCII.
    pub fn new(token: &str) -> Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::InvalidToken("the token is empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidToken(
                "a token may only contain visible ASCII characters".into(),
            ));
        }
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::InvalidToken("not a valid header value".into()))?;
        Ok(Self {
            header: Some(header),
        })
    }
}

impl std::fmt::Debug for BearerAuth {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_validated_and_redacted() {
        assert!(BearerAuth::new("").is_err());
        assert!(BearerAuth::new("has space").is_err());
        assert!(BearerAuth::new("tökén").is_err());
        let auth = BearerAuth::new("abc.DEF-123").unwrap();
        assert!(!format!("{auth:?}").contains("abc"));
        let mut auth = auth;
        let req = auth.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer abc.DEF-123"
        );
        let req = BearerAuth::none().call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }
}
