//! The gRPC contract of TicketMax Jobs (`ticketmax.jobs.v1`) and small conversions around it.
//!
//! Both processes and every client depend on this crate for the contract; what the two binaries
//! share at run time beyond it is `ticketmax-runtime`. They never depend on each other.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ticketmax.jobs.v1");
}

/// Encoded file descriptor set for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ticketmax_descriptor");

pub use prost_types;

/// The largest request either server decodes (tonic's default is 4 MiB). The biggest legitimate
/// request is a TriggerJob or RunJob with 64 KiB of params; anything far beyond is refused with
/// OUT_OF_RANGE before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

mod convert;
pub use convert::*;
