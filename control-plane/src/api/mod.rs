//! The gRPC API: `JobService` (public) and `ExecutorRegistry` (executors). Requests are
//! validated on construction (`requests`) before anything changes; bad input gets
//! `INVALID_ARGUMENT`, unknown names `NOT_FOUND`, impossible transitions
//! `FAILED_PRECONDITION`, an unreachable database `UNAVAILABLE`.
pub mod convert;
pub mod decode_errors;
pub mod job_service;
pub mod registry;
pub mod requests;
pub mod watch;

pub use job_service::JobApi;
pub use registry::RegistryApi;

use tonic::Status;

use crate::store::StoreError;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "request failed on the database");
        match e {
            StoreError::Db { .. } => Status::unavailable(e.to_string()),
            StoreError::Corrupt(_) => Status::internal(e.to_string()),
        }
    }
}
