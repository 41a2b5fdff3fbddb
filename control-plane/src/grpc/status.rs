//! The one mapping from [`DomainError`] and [`AuthFailure`] to `tonic::Status` (SPEC §9).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{auth::AuthFailure, domain::DomainError};

impl From<AuthFailure> for Status {
    fn from(failure: AuthFailure) -> Status {
        match failure {
            AuthFailure::Backend(e) => {
                tracing::error!(error = %e, "authentication backend failed");
                Status::unavailable("authentication backend unavailable")
            }
            other => Status::unauthenticated(other.to_string()),
        }
    }
}

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Status {
        match e {
            DomainError::Unauthenticated(m) => Status::unauthenticated(m),
            DomainError::PermissionDenied(m) => Status::permission_denied(m),
            DomainError::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {reason}"),
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            DomainError::NotFound(m) => Status::not_found(m),
            DomainError::AlreadyExists { field } => {
                Status::already_exists(format!("{field} already exists"))
            }
            DomainError::FailedPrecondition(m) => Status::failed_precondition(m),
            DomainError::ResourceExhausted(m) => Status::resource_exhausted(m),
            DomainError::Unavailable(m) => Status::unavailable(m),
            DomainError::RateLimited {
                reason,
                retry_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                reason,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            DomainError::Internal(err) => {
                // The span of the call names the method; details stay in the log.
                tracing::error!(error = format!("{err:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}
