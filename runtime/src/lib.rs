//! What both binaries (control plane and executor) need at run time and that is not part of
//! their gRPC contract (that is `ticketmax-proto`): logging and trace propagation with secrets
//! redacted, connection limits on listening sockets, certificate-name pinning, TLS material
//! (`tls`), and the shutdown signal. The two binaries never depend on each other; they share this.
pub mod credentials;
pub mod net;
pub mod peer_names;
pub mod redact;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
