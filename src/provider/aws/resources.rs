//! The stack's resources on EC2: tags and filters, the AMI, the VPC, the security group's
//! SSH permissions, and the lookups that find instances again.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, InstanceStateName, IpPermission, IpRange, Ipv6Range, Tag};

use super::errors::err;
use super::{AwsProvider, CANONICAL_OWNER, tag_key};
use crate::provider::governor::Governed;
use crate::provider::{ProviderError, ServerSpec, ServerState, tags};

impl AwsProvider {
    pub(super) fn stack_filters(&self) -> Vec<Filter> {
        vec![
            Filter::builder()
                .name(format!("tag:{}", tag_key(tags::PROJECT)))
                .values(&self.stack.project)
                .build(),
            Filter::builder()
                .name(format!("tag:{}", tag_key(tags::STACK)))
                .values(&self.stack.stack)
                .build(),
        ]
    }

    pub(super) fn tags(
        &self,
        role: &str,
        agent: Option<&str>,
        name: &str,
        fp: Option<(&str, &str)>,
    ) -> Vec<Tag> {
        let t = |k: String, v: &str| Tag::builder().key(k).value(v).build();
        let mut v = vec![
            t(tag_key(tags::PROJECT), &self.stack.project),
            t(tag_key(tags::STACK), &self.stack.stack),
            t(tag_key(tags::ROLE), role),
            t("Name".into(), name),
        ];
        if let Some(a) = agent {
            v.push(t(tag_key(tags::AGENT), a));
        }
        if let Some((f, key_id)) = fp {
            v.push(t(tag_key(tags::FINGERPRINT), f));
            if !key_id.is_empty() {
                v.push(t(tag_key(tags::KEY_ID), key_id));
            }
        }
        v
    }

    /// The AMI id and its root device name: the configured image, or the newest Ubuntu noble
    /// of the instance type's architecture (an AMI is one architecture; EC2 refuses to launch
    /// an amd64 image on a Graviton type).
    pub(super) async fn image(
        &self,
        configured: Option<&str>,
        instance_type: &str,
    ) -> Result<(String, String), ProviderError> {
        if let Some(id) = configured {
            let out = self
                .client
                .describe_images()
                .image_ids(id)
                .send()
                .governed(&self.gov)
                .await
                .map_err(err)?;
            let img = out.images().first().ok_or_else(|| {
                ProviderError::new("InvalidAMIID.NotFound", format!("image {id} not found"))
            })?;
            return Ok((
                id.to_string(),
                img.root_device_name().unwrap_or("/dev/sda1").to_string(),
            ));
        }
        let arch = crate::provider::profile::ec2_arch(instance_type);
        let (_, lookup) = crate::provider::profile::AWS
            .default_image
            .for_arch(Some(arch));
        let (cell, ec2_arch) = if arch == "arm64" {
            (&self.ami[1], "arm64")
        } else {
            (&self.ami[0], "x86_64")
        };
        cell.get_or_try_init(|| async {
                let out = self
                    .client
                    .describe_images()
                    .owners(CANONICAL_OWNER)
                    .filters(
                        Filter::builder()
                            .name("name")
                            .values(lookup.as_str())
                            .build(),
                    )
                    .filters(Filter::builder().name("architecture").values(ec2_arch).build())
                    .filters(Filter::builder().name("state").values("available").build())
                    .send()
                    .governed(&self.gov)
                    .await
                    .map_err(err)?;
                let newest = out
                    .images()
                    .iter()
                    .filter(|i| i.image_id().is_some())
                    .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
                    .ok_or_else(|| {
                        ProviderError::new(
                            "NoImage",
                            format!(
                                "no Ubuntu 24.04 {arch} image from owner {CANONICAL_OWNER} in this region"
                            ),
                        )
                        .with_advice("set `image = \"ami-...\"` in the stack file")
                    })?;
                Ok((
                    newest.image_id().unwrap_or_default().to_string(),
                    newest.root_device_name().unwrap_or("/dev/sda1").to_string(),
                ))
            })
            .await
            .cloned()
    }

    /// The VPC of the configured subnet, or the region's default VPC (looked up once).
    pub(super) async fn vpc_id(&self) -> Result<String, ProviderError> {
        self.vpc
            .get_or_try_init(|| async {
                if let Some(subnet) = &self.subnet_id {
                    let out = self
                        .client
                        .describe_subnets()
                        .subnet_ids(subnet)
                        .send()
                        .governed(&self.gov)
                        .await
                        .map_err(err)?;
                    return out
                        .subnets()
                        .first()
                        .and_then(|s| s.vpc_id())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            ProviderError::new(
                                "InvalidSubnetID.NotFound",
                                format!("subnet {subnet} not found"),
                            )
                        });
                }
                let out = self
                    .client
                    .describe_vpcs()
                    .filters(Filter::builder().name("is-default").values("true").build())
                    .send()
                    .governed(&self.gov)
                    .await
                    .map_err(err)?;
                out.vpcs()
                    .first()
                    .and_then(|v| v.vpc_id())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ProviderError::new("NoDefaultVpc", "the region has no default VPC")
                            .with_advice("set `[aws] subnet_id = \"subnet-...\"` in the stack file")
                    })
            })
            .await
            .cloned()
    }

    fn ssh_permissions(cidrs: &[String]) -> Vec<IpPermission> {
        if cidrs.is_empty() {
            return Vec::new();
        }
        let mut p = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22);
        for c in cidrs {
            if c.contains(':') {
                p = p.ipv6_ranges(
                    Ipv6Range::builder()
                        .cidr_ipv6(c)
                        .description("agent-army allowed_ssh_cidrs")
                        .build(),
                );
            } else {
                p = p.ip_ranges(
                    IpRange::builder()
                        .cidr_ip(c)
                        .description("agent-army allowed_ssh_cidrs")
                        .build(),
                );
            }
        }
        vec![p.build()]
    }

    /// Allow port 22 from `cidrs` (nothing when empty).
    pub(super) async fn authorize(&self, id: &str, cidrs: &[String]) -> Result<(), ProviderError> {
        let perms = Self::ssh_permissions(cidrs);
        if perms.is_empty() {
            return Ok(());
        }
        match self
            .client
            .authorize_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(perms))
            .send()
            .governed(&self.gov)
            .await
        {
            Ok(_) => Ok(()),
            // Already there: an attempt whose answer was lost added it.
            Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// A pending or running instance tagged for `spec`'s agent with its fingerprint: launched
    /// by an attempt whose answer was lost.
    pub(super) async fn launched(
        &self,
        spec: &ServerSpec,
    ) -> Result<Option<String>, ProviderError> {
        let mut filters = self.stack_filters();
        filters.push(
            Filter::builder()
                .name(format!("tag:{}", tag_key(tags::AGENT)))
                .values(&spec.agent)
                .build(),
        );
        filters.push(
            Filter::builder()
                .name(format!("tag:{}", tag_key(tags::FINGERPRINT)))
                .values(&spec.fingerprint)
                .build(),
        );
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        );
        let out = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .send()
            .governed(&self.gov)
            .await
            .map_err(err)?;
        let mut found: Vec<(String, i64)> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                let id = i.instance_id()?.to_string();
                Some((id, i.launch_time().map(|t| t.secs()).unwrap_or(0)))
            })
            .collect();
        // Should two have been launched after all, keep the oldest; the next plan removes
        // the other as a duplicate.
        found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        Ok(found.into_iter().next().map(|(id, _)| id))
    }
}

pub(super) fn map_state(s: Option<&InstanceStateName>) -> ServerState {
    match s {
        Some(InstanceStateName::Pending) => ServerState::Pending,
        Some(InstanceStateName::Running) => ServerState::Running,
        Some(InstanceStateName::Stopping) => ServerState::Stopping,
        Some(InstanceStateName::Stopped) => ServerState::Stopped,
        Some(InstanceStateName::ShuttingDown) => ServerState::Deleting,
        Some(InstanceStateName::Terminated) => ServerState::Gone,
        Some(other) => ServerState::Other(other.as_str().to_string()),
        None => ServerState::Other("unknown".into()),
    }
}

pub(super) fn tag_value(tags: &[Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}
