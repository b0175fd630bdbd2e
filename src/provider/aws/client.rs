//! Building the EC2 client: the default credential chain, the SDK's standard retry mode with
//! more attempts, and a deadline on every attempt.

use std::time::Duration;

use std::sync::Arc;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use tokio::sync::OnceCell;

use super::AwsProvider;
use crate::provider::StackId;
use crate::provider::governor::{Governor, MAX_IN_FLIGHT};

/// Tells the governor about every throttled attempt, the SDK's own retries included.
#[derive(Debug)]
struct ThrottleWatch(Arc<Governor>);

/// Whether an EC2 answer is a throttle: `RequestLimitExceeded` (EC2's own code, sent with
/// 503 by EC2 and with 400 by some emulators) or the generic `Throttling`.
pub(super) fn is_throttle(status: u16, body: Option<&[u8]>) -> bool {
    let Some(body) = body else {
        return false;
    };
    status >= 400
        && [
            &b"<Code>RequestLimitExceeded</Code>"[..],
            b"<Code>Throttling</Code>",
        ]
        .iter()
        .any(|code| body.windows(code.len()).any(|w| w == *code))
}

impl Intercept for ThrottleWatch {
    fn name(&self) -> &'static str {
        "agent-army throttle watch"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let r = context.response();
        if is_throttle(r.status().as_u16(), r.body().bytes()) {
            self.0.throttled_now();
        }
        Ok(())
    }
}

/// Longest wait for one attempt of one EC2 call (see [`crate::env::vars::REQUEST_TIMEOUT_MS`]).
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

impl AwsProvider {
    /// Build a client for `region` from the default credential chain.
    pub async fn new(
        region: &str,
        stack: StackId,
        subnet_id: Option<String>,
        hop_limit: u32,
        poll: Duration,
        request_timeout: Option<Duration>,
    ) -> Self {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()));
        Self::with_loader(loader, stack, subnet_id, hop_limit, poll, request_timeout).await
    }

    /// The same on a loader the caller has set up, e.g. with an endpoint and credentials
    /// that are not in the process environment (tests against an emulator).
    pub async fn with_loader(
        loader: aws_config::ConfigLoader,
        stack: StackId,
        subnet_id: Option<String>,
        hop_limit: u32,
        poll: Duration,
        request_timeout: Option<Duration>,
    ) -> Self {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(8)
            .with_initial_backoff(Duration::from_millis(500));
        // The SDK sets no read timeout by default: a connection that stalls mid-answer would
        // hang the run forever. Each attempt gets a deadline and is retried like a 5xx.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(3100))
            .operation_attempt_timeout(request_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT))
            .build();
        let conf = loader
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        let gov = Arc::new(Governor::new(MAX_IN_FLIGHT));
        let ec2 = aws_sdk_ec2::config::Builder::from(&conf)
            .interceptor(ThrottleWatch(gov.clone()))
            .build();
        AwsProvider {
            client: Client::from_conf(ec2),
            gov,
            vpc: OnceCell::new(),
            waiters: Arc::default(),
            stack,
            subnet_id,
            hop_limit: hop_limit as i32,
            poll,
            ami: [OnceCell::new(), OnceCell::new()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_throttle;

    #[test]
    fn throttles_are_known_by_their_code_whatever_the_status() {
        let body = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>";
        assert!(is_throttle(503, Some(body)), "EC2's own shape");
        assert!(is_throttle(400, Some(body)), "an emulator's");
        let other = b"<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code></Error></Errors></Response>";
        assert!(!is_throttle(400, Some(other)));
        assert!(!is_throttle(200, Some(b"<RequestLimitExceeded/>")));
        assert!(
            !is_throttle(503, None),
            "a body not read is not taken for a throttle"
        );
    }
}
