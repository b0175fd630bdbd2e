//! Building the EC2 client: the default credential chain, the SDK's standard retry mode with
//! more attempts, and a deadline on every attempt.

use std::time::Duration;

use aws_sdk_ec2::Client;
use tokio::sync::OnceCell;

use super::AwsProvider;
use crate::provider::StackId;

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
        AwsProvider {
            client: Client::new(&conf),
            stack,
            subnet_id,
            hop_limit: hop_limit as i32,
            poll,
            ami: [OnceCell::new(), OnceCell::new()],
        }
    }
}
