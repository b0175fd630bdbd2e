//! Connecting to the stack's cloud, and what it costs.

use std::collections::BTreeMap;

use super::Session;
use crate::env::vars;
use crate::error::{Error, Result};
use serde::Serialize;

use crate::provider::{Cloud, ProviderError, StackId};
use crate::secrets::Secret;
use crate::stack::model::HCLOUD_TOKEN_SECRET;
use crate::stack::{Config, ProviderSettings};

pub fn stack_id(config: &Config) -> StackId {
    StackId {
        project: config.project.clone(),
        stack: config.stack.clone(),
    }
}

/// A provider error, named after the stack's cloud.
pub fn provider_error(config: &Config, e: ProviderError) -> Error {
    Error::Provider {
        provider: config.provider.kind().to_string(),
        source: e,
    }
}

/// Why the cloud cannot be asked from here, when it visibly cannot: no credentials in any
/// place the provider's client looks. `None` does not promise the credentials work.
pub fn no_credentials(session: &Session) -> Option<String> {
    let (config, env) = (&session.config, &session.env);
    match &config.provider {
        ProviderSettings::Hetzner { .. } => {
            let found = env.get(vars::HCLOUD_TOKEN).is_some()
                || config.secrets.contains_key(HCLOUD_TOKEN_SECRET);
            (!found).then(|| {
                format!(
                    "no Hetzner API token ({} or the `{HCLOUD_TOKEN_SECRET}` secret)",
                    vars::HCLOUD_TOKEN
                )
            })
        }
        ProviderSettings::Aws { .. } => {
            let in_env = vars::AWS_CREDENTIAL_HINTS
                .iter()
                .any(|v| env.get(v).is_some());
            let in_files = env.home().is_some_and(|h| {
                h.join(".aws/credentials").exists() || h.join(".aws/config").exists()
            });
            (!in_env && !in_files).then(|| {
                "no AWS credentials (environment, profile, web identity or ~/.aws)".to_string()
            })
        }
        ProviderSettings::Kubernetes(_) => {
            Some("agent-army does not talk to Kubernetes API servers yet".to_string())
        }
        ProviderSettings::Docker(_) => Some("a Docker stack has no cloud".to_string()),
    }
}

/// Connect to the stack's cloud.
pub async fn connect(session: &Session) -> Result<Cloud> {
    let (config, env) = (&session.config, &session.env);
    let poll = env.poll_interval();
    match &config.provider {
        ProviderSettings::Aws {
            region,
            subnet_id,
            metadata_hop_limit,
        } => Ok(Cloud::Aws(Box::new(
            crate::provider::aws::AwsProvider::new(
                region,
                stack_id(config),
                subnet_id.clone(),
                *metadata_hop_limit,
                poll,
                env.request_timeout(),
            )
            .await,
        ))),
        ProviderSettings::Hetzner { location } => {
            let token = match env.get(vars::HCLOUD_TOKEN) {
                Some(t) => Secret::new(t),
                None => match config.secrets.get(HCLOUD_TOKEN_SECRET) {
                    Some(r) => session
                        .keyring
                        .resolve(r, env)
                        .map_err(|e| Error::secret(HCLOUD_TOKEN_SECRET, e))?,
                    None => {
                        return Err(Error::Input(format!(
                            "no Hetzner API token: set {} or the `{HCLOUD_TOKEN_SECRET}` secret (`agent-army secrets set {HCLOUD_TOKEN_SECRET}`)",
                            vars::HCLOUD_TOKEN
                        )));
                    }
                },
            };
            let endpoint = env
                .get(vars::HCLOUD_ENDPOINT)
                .unwrap_or(crate::provider::hetzner::DEFAULT_ENDPOINT)
                .to_string();
            Ok(Cloud::Hetzner(
                crate::provider::hetzner::HetznerProvider::new(
                    &endpoint,
                    token,
                    stack_id(config),
                    location.clone(),
                    poll,
                    env.request_timeout(),
                )
                .map_err(|e| provider_error(config, e))?,
            ))
        }
        ProviderSettings::Kubernetes(_) => Err(crate::error::Error::NotOnKubernetes {
            command: "deploy".into(),
            stack: config.stack.clone(),
        }),
        ProviderSettings::Docker(_) => Err(crate::error::Error::Usage(
            "a Docker stack has no cloud to connect to".into(),
        )),
    }
}

/// The fleet's monthly cost at the provider's list prices, as far as it can be known here.
/// Never fails the plan: what cannot be known is said.
pub async fn cost(session: &Session) -> Cost {
    let config = &session.config;
    let unavailable = |reason: String| Cost::Unavailable { reason };
    let profile = crate::provider::profile(config.provider.kind());
    if let Some(reason) = profile.no_prices {
        return unavailable(reason.into());
    }
    let cloud = match connect(session).await {
        Ok(c) => c,
        Err(_) => {
            return unavailable(format!(
                "no {} API token to read the list prices",
                profile.name
            ));
        }
    };
    let mut prices = BTreeMap::new();
    for a in &config.agents {
        if prices.contains_key(&a.instance_type) {
            continue;
        }
        // A plan must not hang on prices: a short budget, then "n/a".
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            cloud.monthly_price(&a.instance_type),
        );
        match lookup
            .await
            .unwrap_or_else(|_| Err(ProviderError::new("timeout", "no answer within 15 s")))
        {
            Ok(Some(p)) => {
                prices.insert(a.instance_type.clone(), p);
            }
            Ok(None) => {
                return unavailable(format!(
                    "{} `{}` has no price in `{}`",
                    profile.size_noun,
                    a.instance_type,
                    config.provider.place()
                ));
            }
            Err(e) => {
                return unavailable(format!(
                    "cannot read {}'s prices: {}",
                    profile.name, e.message
                ));
            }
        }
    }
    Cost::estimate(config, &prices)
}

/// A plan's monthly cost estimate, or why there is none.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Cost {
    Estimate {
        currency: &'static str,
        location: String,
        monthly_net: f64,
        monthly_gross: f64,
        /// Server type → list price per month.
        prices: std::collections::BTreeMap<String, crate::provider::hetzner::MonthlyPrice>,
        servers: usize,
    },
    Unavailable {
        reason: String,
    },
}

impl Cost {
    /// Every declared agent at its server type's price.
    pub fn estimate(
        config: &Config,
        prices: &std::collections::BTreeMap<String, crate::provider::hetzner::MonthlyPrice>,
    ) -> Cost {
        let (mut net, mut gross) = (0.0, 0.0);
        for a in &config.agents {
            if let Some(p) = prices.get(&a.instance_type) {
                net += p.net;
                gross += p.gross;
            }
        }
        let round = |v: f64| (v * 100.0).round() / 100.0;
        Cost::Estimate {
            currency: "EUR",
            location: config.provider.place().to_string(),
            monthly_net: round(net),
            monthly_gross: round(gross),
            prices: prices.clone(),
            servers: config.agents.len(),
        }
    }
}
