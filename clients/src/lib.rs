//! Rust client for the TicketMax Jobs control plane (`ticketmax.jobs.v1.JobService`).
//!
//! Two layers:
//!
//! - [`proto`]: the generated gRPC code (messages, enums and the raw
//!   [`proto::job_service_client::JobServiceClient`]), re-exported from
//!   `ticketmax-proto`, for callers that want full control.
//! - [`Client`]: an ergonomic wrapper with one method per use case, an optional bearer token,
//!   optional TLS, errors that say which call failed ([`Error`]), and helpers that the raw API
//!   does not have: paging through every run ([`Client::all_runs`]), following a run's events
//!   ([`Client::watch`]) and triggering a job and waiting for its outcome
//!   ([`Client::trigger_and_wait`]).
//!
//! The [`json`] module turns the messages into `serde_json` values (snake_case field names, enum
//! names such as `"RUN_STATE_SUCCEEDED"`, RFC 3339 times), as `ticketmaxctl --output json`
//! prints them.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ticketmax_client::{Client, proto::RunState};
//!
//! # async fn demo() -> Result<(), ticketmax_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//!
//! // Every job with its schedule, next fire time and last run.
//! for job in client.status().await?.jobs {
//!     println!("{} {} enabled={}", job.name, job.schedule, job.enabled);
//! }
//!
//! // Run one now and wait (at most a minute) for the outcome.
//! let run = client
//!     .trigger_and_wait("booking-cleanup/cancel-expired-bookings", Duration::from_secs(60))
//!     .await?;
//! assert!(run.state().is_terminal());
//! if run.state() == RunState::Succeeded {
//!     println!("summary: {}", ticketmax_client::json::summary(&run));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! With a token and TLS:
//!
//! ```no_run
//! # async fn demo() -> Result<(), ticketmax_client::Error> {
//! let client = ticketmax_client::Client::builder("https://jobs.internal:50051")
//!     .token("s3cr3t")
//!     .ca_file("/etc/ticketmax/ca.pem")
//!     .connect()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//
// Layout (one concern a file; every item below is re-exported here, so paths stay
// `ticketmax_client::Client`, `ticketmax_client::Error`, ...):
// - `error`: `Error`, `Result`, `code_name` and the one-line rendering of statuses;
// - `auth`: `BearerAuth`, the token interceptor;
// - `builder`: `ClientBuilder`, URL checks and opening the channel;
// - `tls`: the channel's TLS configuration from PEM files;
// - `options`: `TriggerOptions`, `RunFilter`, `RunsPage`, `UpdateJob`;
// - `client`: `Client` and `RawClient`, the calls;
// - `json` (public): the messages as `serde_json` values.

pub use ticketmax_proto::v1 as proto;
pub use ticketmax_proto::{from_timestamp, json_to_struct, struct_to_json, to_timestamp};

mod auth;
mod builder;
mod client;
mod error;
pub mod json;
mod options;
mod tls;

pub use auth::BearerAuth;
pub use builder::ClientBuilder;
pub use client::{Client, RawClient};
pub use error::{Error, Result, code_name};
pub use options::{RunFilter, RunsPage, TriggerOptions, UpdateJob};

/// The control plane's default address (`TICKETMAX_CONTROL_PLANE_URL`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:50051";
