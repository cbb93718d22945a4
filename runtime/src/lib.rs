//! What both binaries (control plane and executor) need at run time and that is not part of
//! their gRPC contract (that is `ticketmax-proto`). The two binaries never depend on each
//! other; they share this.
pub mod net;
