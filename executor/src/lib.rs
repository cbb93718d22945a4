//! TicketMax Jobs executor: the ticketing tasks, the `Executor` gRPC service that runs them, the
//! e-mail outbox and its sender. The binary (`main.rs`) wires these together.
pub mod api;
pub mod config;
pub mod db;
pub mod jobs;
pub mod mail;
pub mod outbox;
pub mod registration;
pub mod schema;
pub mod seed;
pub mod tasks;
pub mod tls;
