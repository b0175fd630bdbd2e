//! EC2's errors as [`ProviderError`]s with advice, and which failures leave the outcome
//! unknown or are worth another attempt.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::provider::ProviderError;

/// AWS's error code and message, or the transport failure.
pub(super) fn err<E>(e: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // Whether the call may have been carried out although it failed: nothing reached EC2,
    // or EC2's answer was lost or was a 5xx (then the outcome is unknown).
    let transient = outcome_unknown(&e);
    let code = e.code().map(str::to_string);
    let message = e.message().map(str::to_string);
    match (code, message) {
        (Some(code), message) => {
            let advice = match code.as_str() {
                "AuthFailure" | "UnauthorizedOperation" => Some(
                    "check your AWS credentials (AWS_PROFILE, `aws sso login`) and IAM permissions for EC2",
                ),
                "InsufficientInstanceCapacity" => {
                    Some("try another instance type or region, or retry later")
                }
                "InvalidParameterValue" | "Unsupported" => {
                    Some("check instance_type, image and region in the stack file")
                }
                _ => None,
            };
            ProviderError {
                code,
                message: message.unwrap_or_default(),
                advice: advice.map(str::to_string),
                transient,
            }
        }
        (None, _) => ProviderError {
            code: "RequestFailed".into(),
            message: aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
            advice: Some(
                "check network access to EC2 (or AWS_ENDPOINT_URL) and your credentials".into(),
            ),
            transient,
        },
    }
}

/// The call failed in a way that says nothing about whether EC2 carried it out: a timeout, a
/// dropped connection, an unreadable answer or a 5xx. (A 4xx, throttling included, is a
/// definite refusal.)
pub(super) fn outcome_unknown<E>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(s) => s.raw().status().is_server_error(),
        _ => false,
    }
}

/// Worth another attempt: throttled, or the outcome is unknown.
pub(super) fn retryable<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    outcome_unknown(e)
        || e.code().is_some_and(|c| {
            matches!(
                c,
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "RequestThrottledException"
                    | "EC2ThrottledException"
                    | "RequestTimeout"
                    | "RequestTimeoutException"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "Unavailable"
            )
        })
}
