//! Errors: [`Error`], what every [`Client`](crate::Client) call fails with, its one-line
//! `Display` (the failed call, the server's message, the gRPC code name) and the questions a
//! caller asks of it ([`Error::code`], [`Error::is_not_found`], [`Error::is_unavailable`]).

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`Client`](crate::Client) call can fail with. `Display` is one line that names the
/// failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not `http://host:port` or `https://host:port`.
    #[error("invalid control plane URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The control plane could not be reached (refused, DNS, TLS handshake, timeout).
    #[error("cannot connect to the control plane at {url}: {}", chain(.source))]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {}: {source}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings were rejected.
    #[error("invalid TLS configuration: {}", chain(.0))]
    Tls(#[source] tonic::transport::Error),
    /// The bearer token cannot be sent as a header.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A call was refused or failed on the server side; `method` is the gRPC method name.
    #[error("{method}: {} ({})", status_message(.status), code_name(.status.code()))]
    Rpc {
        method: &'static str,
        #[source]
        status: Status,
    },
    /// Input rejected before anything was sent.
    #[error("{0}")]
    InvalidInput(String),
    /// [`Client::wait`](crate::Client::wait) /
    /// [`Client::trigger_and_wait`](crate::Client::trigger_and_wait) gave up; the run goes on.
    #[error("run {run_id} did not end within {timeout:?} (last state: {last_state})")]
    Timeout {
        run_id: String,
        timeout: Duration,
        last_state: String,
    },
}

impl Error {
    /// The gRPC status code, for errors that carry one (a connection failure counts as
    /// `UNAVAILABLE`).
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            Error::Connect { .. } => Some(Code::Unavailable),
            _ => None,
        }
    }

    /// The status returned by the server, if this is an RPC error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The job, run or report does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// The control plane could not be reached, or the connection failed during the call
    /// (tonic reports some of those as `UNKNOWN` or `INTERNAL` with a transport or HTTP/2 error
    /// inside, e.g. plaintext to a TLS port); retrying later may help.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Rpc { status, .. } => {
                status.code() == Code::Unavailable
                    || (matches!(status.code(), Code::Unknown | Code::Internal)
                        && is_transport_failure(status))
            }
            _ => false,
        }
    }

    pub(crate) fn rpc(
        method: &'static str,
    ) -> impl Fn(Status) -> Error + Copy + Send + Sync + 'static {
        move |status| Error::Rpc { method, status }
    }
}

/// The canonical upper-case name of a gRPC code, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_message(status: &Status) -> String {
    let msg = status.message().trim();
    let mut out = if msg.is_empty() {
        "no message".to_string()
    } else {
        msg.replace('\n', " ")
    };
    // Transport failures put the useful part ("Connection refused") in the source chain.
    if let Some(source) = std::error::Error::source(status) {
        let detail = chain(source);
        if detail.starts_with(&out) {
            out = detail;
        } else if !detail.is_empty() && !out.contains(&detail) {
            out.push_str(": ");
            out.push_str(&detail);
        }
    }
    out
}

/// Whether a status came from the transport (connection refused or broken) rather than from
/// the server.
fn is_transport_failure(status: &Status) -> bool {
    // tonic turns HTTP/2 connection errors into INTERNAL "h2 protocol error: ...".
    if status.message().starts_with("h2 protocol error") {
        return true;
    }
    let mut cur = std::error::Error::source(status);
    while let Some(err) = cur {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An error and its sources on one line: "transport error: tcp connect error: refused".
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string().replace('\n', " ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_name_the_method_and_code() {
        let err = Error::Rpc {
            method: "GetJob",
            status: Status::not_found("no job named 'x'"),
        };
        assert_eq!(err.to_string(), "GetJob: no job named 'x' (NOT_FOUND)");
        assert!(err.is_not_found());
        assert!(!err.is_unavailable());
    }

    #[test]
    fn connection_failures_inside_a_call_count_as_unavailable() {
        let rpc = |status| Error::Rpc {
            method: "GetStatus",
            status,
        };
        assert!(rpc(Status::unavailable("connection refused")).is_unavailable());
        assert!(
            rpc(Status::internal(
                "h2 protocol error: frame with invalid size"
            ))
            .is_unavailable()
        );
        assert!(!rpc(Status::internal("database exploded")).is_unavailable());
        assert!(!rpc(Status::unknown("handler failed")).is_unavailable());
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let status = Status::from_error(Box::new(io));
        assert!(rpc(status).is_unavailable());
    }
}
