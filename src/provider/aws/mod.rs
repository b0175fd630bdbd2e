//! AWS EC2: a security group with no ingress, one instance per agent, tags on everything.
//!
//! Credentials come from the standard aws-config chain (env, profile, SSO, instance role);
//! `AWS_ENDPOINT_URL` is honoured by the SDK itself. Throttling (`RequestLimitExceeded`) and
//! 5xx responses are retried by the SDK's standard retry mode with jittered exponential
//! backoff, which is exactly the policy AWS documents for EC2; we only raise the attempt count.
//! Every call takes a slot of the provider's [`Governor`] first, and every throttled attempt
//! (seen by an SDK interceptor) halves the slots, at most once per round trip; waits share one
//! poll loop (`waiter`).
//!
//! The module is split along its seams: `client` (SDK configuration), `resources` (tags,
//! image, VPC, security group permissions, instance lookups) and `errors` (error codes,
//! advice, retryability); this module holds the provider itself.

mod client;
mod errors;
mod resources;
mod waiter;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, IpPermission, ResourceType, TagSpecification, VolumeType,
};
use base64::Engine as _;
use tokio::sync::OnceCell;

use super::governor::{Governed, Governor};
use super::{
    NetworkSpec, Observed, ObservedNetwork, ObservedServer, Provider, ProviderError, ServerSpec,
    ServerState, Shape, StackId, tags,
};
use crate::backoff;
use crate::stack::ProviderKind;
use errors::{err, outcome_unknown, retryable};
use resources::{map_state, tag_value};
use waiter::{Poller, Waiters, Want};

/// Canonical's AWS account.
pub const CANONICAL_OWNER: &str = "099720109477";

/// Attempts of `RunInstances`, as the SDK's standard retry mode makes of every other call.
const RUN_INSTANCES_ATTEMPTS: u32 = 8;

/// Tag key with agent-army's prefix.
pub fn tag_key(k: &str) -> String {
    format!("agent-army:{k}")
}

pub struct AwsProvider {
    client: Client,
    /// How many calls may be in flight: halved on throttles, grown on successes.
    gov: Arc<Governor>,
    stack: StackId,
    subnet_id: Option<String>,
    hop_limit: i32,
    poll: Duration,
    /// The default AMI per architecture (amd64, arm64), looked up once each.
    ami: [OnceCell<(String, String)>; 2],
    /// The VPC the security group goes in, looked up once.
    vpc: OnceCell<String>,
    /// Instances somebody waits for, served by one poll loop.
    waiters: Arc<Mutex<Waiters>>,
}

/// Largest page of `DescribeInstances` (EC2's maximum).
const MAX_RESULTS: i32 = 1000;

/// Full-jitter exponential backoff before attempt `attempt + 1`: like the SDK's standard
/// mode (0.5 s doubling, at most 20 s), with at least half of it waited.
fn run_backoff(attempt: u32) -> Duration {
    let base = backoff::exponential(Duration::from_millis(500), attempt, Duration::from_secs(20));
    base.mul_f64(0.5 + backoff::jitter_frac() / 2.0)
}

impl Provider for AwsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }

    async fn preflight(&self, shapes: &[Shape]) -> Result<(), ProviderError> {
        if shapes.is_empty() {
            return Ok(());
        }
        let mut sizes: Vec<String> = shapes.iter().map(|s| s.size.clone()).collect();
        sizes.sort();
        sizes.dedup();
        // The lookups the first create needs go out in the same round: the VPC and each
        // image (by architecture) are kept for the creates.
        let images = futures_util::future::try_join_all(
            shapes
                .iter()
                .map(|s| self.image(s.image.as_deref(), &s.size)),
        );
        let types = self.gov.run(
            self.client
                .describe_instance_types()
                .set_instance_types(Some(sizes.iter().map(|s| s.as_str().into()).collect()))
                .send(),
        );
        let (types, vpc, images) = tokio::join!(types, self.vpc_id(), images);
        let checked = match types {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("InvalidInstanceType") => Err(ProviderError::new(
                "InvalidInstanceType",
                format!(
                    "{} (asked for {})",
                    e.message().unwrap_or("unknown instance type"),
                    sizes.join(", ")
                ),
            )
            .with_advice(
                "set `instance_type` to a type this region offers (`aws ec2 describe-instance-type-offerings`)",
            )),
            Err(e) => Err(err(e)),
        };
        checked?;
        vpc?;
        images?;
        Ok(())
    }

    async fn observe(&self) -> Result<Observed, ProviderError> {
        let (servers, groups) = tokio::join!(
            self.observe_servers(),
            self.gov.run(
                self.client
                    .describe_security_groups()
                    .set_filters(Some(self.stack_filters()))
                    .send()
            )
        );
        let mut obs = Observed {
            servers: servers?,
            networks: Vec::new(),
        };
        let sgs = groups.map_err(err)?;
        for g in sgs.security_groups() {
            let mut cidrs = Vec::new();
            for p in g.ip_permissions() {
                cidrs.extend(
                    p.ip_ranges()
                        .iter()
                        .filter_map(|r| r.cidr_ip().map(str::to_string)),
                );
                cidrs.extend(
                    p.ipv6_ranges()
                        .iter()
                        .filter_map(|r| r.cidr_ipv6().map(str::to_string)),
                );
                // Any rule that is not a port-22 CIDR rule counts as drift.
                let ssh = p.ip_protocol() == Some("tcp")
                    && p.from_port() == Some(22)
                    && p.to_port() == Some(22);
                if !ssh || !p.user_id_group_pairs().is_empty() || !p.prefix_list_ids().is_empty() {
                    cidrs.push(format!(
                        "(rule {:?} {:?}-{:?})",
                        p.ip_protocol(),
                        p.from_port(),
                        p.to_port()
                    ));
                }
            }
            obs.networks.push(ObservedNetwork {
                id: g.group_id().unwrap_or_default().to_string(),
                ssh_cidrs: cidrs,
                ssh_key_id: None,
            });
        }
        obs.servers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(obs)
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<ObservedNetwork, ProviderError> {
        let vpc = self.vpc_id().await?;
        let name = format!("agent-army-{}-{}", self.stack.project, self.stack.stack);
        let created = self
            .client
            .create_security_group()
            .group_name(&name)
            .description(format!(
                "agent-army {}/{}: no inbound access; agents are reached over Tailscale",
                self.stack.project, self.stack.stack
            ))
            .vpc_id(&vpc)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(self.tags(tags::ROLE_NETWORK, None, &name, None)))
                    .build(),
            )
            .send()
            .governed(&self.gov)
            .await;
        let id = match created {
            Ok(out) => out.group_id().unwrap_or_default().to_string(),
            // A retried create whose first answer was lost (the SDK retries 5xx and dropped
            // connections): the group of that name is ours when it carries the stack's tags.
            Err(e) if e.code() == Some("InvalidGroup.Duplicate") => {
                let mut filters = self.stack_filters();
                filters.push(Filter::builder().name("group-name").values(&name).build());
                filters.push(Filter::builder().name("vpc-id").values(&vpc).build());
                let found = self
                    .client
                    .describe_security_groups()
                    .set_filters(Some(filters))
                    .send()
                    .governed(&self.gov)
                    .await
                    .map_err(err)?;
                let Some(id) = found
                    .security_groups()
                    .first()
                    .and_then(|g| g.group_id())
                    .map(str::to_string)
                else {
                    return Err(err(e));
                };
                self.update_network(&id, spec).await?;
                return Ok(ObservedNetwork {
                    id,
                    ssh_cidrs: spec.ssh_cidrs.clone(),
                    ssh_key_id: None,
                });
            }
            Err(e) => return Err(err(e)),
        };
        self.authorize(&id, &spec.ssh_cidrs).await?;
        Ok(ObservedNetwork {
            id,
            ssh_cidrs: spec.ssh_cidrs.clone(),
            ssh_key_id: None,
        })
    }

    async fn update_network(&self, id: &str, spec: &NetworkSpec) -> Result<(), ProviderError> {
        let out = self
            .client
            .describe_security_groups()
            .group_ids(id)
            .send()
            .governed(&self.gov)
            .await
            .map_err(err)?;
        let existing: Vec<IpPermission> = out
            .security_groups()
            .first()
            .map(|g| g.ip_permissions().to_vec())
            .unwrap_or_default();
        if !existing.is_empty() {
            match self
                .client
                .revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(existing))
                .send()
                .governed(&self.gov)
                .await
            {
                Ok(_) => {}
                // Already revoked by an attempt whose answer was lost.
                Err(e) if e.code() == Some("InvalidPermission.NotFound") => {}
                Err(e) => return Err(err(e)),
            }
        }
        self.authorize(id, &spec.ssh_cidrs).await
    }

    async fn delete_network(&self, network: &ObservedNetwork) -> Result<(), ProviderError> {
        // Real EC2 refuses while terminated instances' interfaces still reference the group
        // (DependencyViolation); that clears within minutes, so retry for a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            match self
                .client
                .delete_security_group()
                .group_id(&network.id)
                .send()
                .governed(&self.gov)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("InvalidGroup.NotFound") => return Ok(()),
                Err(e)
                    if e.code() == Some("DependencyViolation")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.poll.max(Duration::from_millis(100)) * 2).await;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<String, ProviderError> {
        let (ami, root_device) = self
            .image(spec.image.as_deref(), &spec.instance_type)
            .await?;
        let volume_tags = self.tags(tags::ROLE_SERVER, Some(&spec.agent), &spec.hostname, None);
        let instance_tags = self.tags(
            tags::ROLE_SERVER,
            Some(&spec.agent),
            &spec.hostname,
            Some((&spec.fingerprint, &spec.key_id)),
        );
        let mut req = self
            .client
            .run_instances()
            .image_id(ami)
            .instance_type(spec.instance_type.as_str().into())
            .min_count(1)
            .max_count(1)
            .client_token(&spec.client_token)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&spec.user_data))
            .security_group_ids(&spec.network_id)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(self.hop_limit)
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(root_device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(spec.disk_gb as i32)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .encrypted(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(instance_tags))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(volume_tags))
                    .build(),
            );
        if let Some(subnet) = &self.subnet_id {
            req = req.subnet_id(subnet);
        }
        // Retried here rather than by the SDK: after an attempt whose outcome is unknown (its
        // answer lost, a timeout, a 5xx), the instance it may have launched is looked up by
        // its tags before launching again. On EC2 the ClientToken alone makes the retry
        // return that instance; an endpoint that ignores it (moto, some emulators) would
        // otherwise get a second one.
        let no_sdk_retry = aws_sdk_ec2::config::Builder::default()
            .retry_config(aws_config::retry::RetryConfig::disabled());
        let mut attempt = 1;
        loop {
            let e = match req
                .clone()
                .customize()
                .config_override(no_sdk_retry.clone())
                .send()
                .governed(&self.gov)
                .await
            {
                Ok(out) => {
                    return out
                        .instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            ProviderError::new("EmptyResponse", "RunInstances returned no instance")
                        });
                }
                Err(e) => e,
            };
            let unknown = outcome_unknown(&e);
            if !retryable(&e) || attempt >= RUN_INSTANCES_ATTEMPTS {
                return Err(err(e));
            }
            tracing::info!(
                "RunInstances for {}: {}; retry {attempt}",
                spec.agent,
                aws_sdk_ec2::error::DisplayErrorContext(&e)
            );
            tokio::time::sleep(run_backoff(attempt)).await;
            attempt += 1;
            if unknown && let Some(id) = self.launched(spec).await? {
                return Ok(id);
            }
        }
    }

    async fn wait_running(&self, id: &str) -> Result<(), ProviderError> {
        self.poller()
            .wait(
                &[id.to_string()],
                Want::Running,
                &format!("instance {id} to run"),
            )
            .await
    }

    async fn delete_server(&self, id: &str) -> Result<(), ProviderError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .governed(&self.gov)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn wait_deleted(&self, ids: &[String]) -> Result<(), ProviderError> {
        self.poller()
            .wait(ids, Want::Gone, "instances to terminate")
            .await
    }
}

impl AwsProvider {
    fn poller(&self) -> Poller {
        Poller {
            client: self.client.clone(),
            gov: self.gov.clone(),
            poll: self.poll,
            waiters: self.waiters.clone(),
        }
    }

    /// The stack's instances (terminated ones left out), in pages of [`MAX_RESULTS`].
    async fn observe_servers(&self) -> Result<Vec<ObservedServer>, ProviderError> {
        let mut servers = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(self.stack_filters()))
            .max_results(MAX_RESULTS)
            .into_paginator()
            .send();
        while let Some(page) = self.gov.run(pages.next()).await {
            let page = page.map_err(err)?;
            for r in page.reservations() {
                for i in r.instances() {
                    let state = map_state(i.state().and_then(|s| s.name()));
                    if state == ServerState::Gone {
                        continue;
                    }
                    let t = i.tags();
                    servers.push(ObservedServer {
                        id: i.instance_id().unwrap_or_default().to_string(),
                        agent: tag_value(t, &tag_key(tags::AGENT)).unwrap_or_default(),
                        fingerprint: tag_value(t, &tag_key(tags::FINGERPRINT)),
                        key_id: tag_value(t, &tag_key(tags::KEY_ID)),
                        state,
                        name: tag_value(t, "Name").unwrap_or_default(),
                        created: i
                            .launch_time()
                            .map(|d| d.secs().to_string())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(servers)
    }
}
