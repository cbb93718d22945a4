//! A request the protobuf decoder refuses (a `Struct` nested past its recursion limit, a
//! malformed field) is the caller's mistake: tonic reports it as `INTERNAL`, which clients
//! treat as a server fault. This layer says `INVALID_ARGUMENT` instead.
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};

#[derive(Clone, Default)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

#[derive(Clone)]
pub struct DecodeErrors<S> {
    inner: S,
}

/// tonic's message for a body that does not decode (percent-encoded in `grpc-message`).
fn is_decode_error(message: &[u8]) -> bool {
    message.starts_with(b"failed to decode") || message.starts_with(b"failed%20to%20decode")
}

fn rewrite(headers: &mut http::HeaderMap) {
    let internal = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"13");
    let decode = headers
        .get("grpc-message")
        .is_some_and(|m| is_decode_error(m.as_bytes()));
    if internal && decode {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for DecodeErrors<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            rewrite(res.headers_mut());
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decode_failures_become_invalid_argument() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(
                "failed%20to%20decode%20Protobuf%20message:%20recursion%20limit%20reached",
            ),
        );
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "3");
        let mut other = http::HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("13"));
        other.insert(
            "grpc-message",
            HeaderValue::from_static("database%20corrupt"),
        );
        rewrite(&mut other);
        assert_eq!(other["grpc-status"], "13");
    }
}
