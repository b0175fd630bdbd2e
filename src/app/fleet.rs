//! The fleet as agent-army sees it: each agent's inputs and fingerprint, gateway keys, and
//! resolved secrets. Shared by plan, deploy, destroy, render, validate and outputs.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::env::Env;
use crate::error::{Error, Result};
use crate::plan::DesiredAgent;
use crate::render::{self, Values};
use crate::secrets::{EncryptTo, Keyring, Secret, SecretError};
use crate::stack::model::{BOOT_ONLY_SECRETS, GATEWAY_SEED, TAILSCALE_AUTH_KEY};
use crate::stack::{Agent, Config};
use crate::state::{Inputs, State};
use crate::token::GatewayKey;

/// The default image of an agent whose stack sets none, as shown and fingerprinted: per
/// CPU architecture where the cloud's images are (an arm64 EC2 type gets an arm64 AMI).
pub fn default_image(config: &Config, agent: &Agent) -> String {
    let p = crate::provider::profile(config.provider.kind());
    let arch = p.image_arch.map(|f| f(&agent.instance_type));
    p.default_image.for_arch(arch).0
}

/// An agent's inputs (machine and configuration; see [`Inputs`]). Computed without any secret
/// plaintext: the boot document is hashed in its masked form, secrets by their stored form.
pub fn inputs(config: &Config, agent: &Agent) -> Result<Inputs> {
    let machine = render::machine_document(config, agent)?;
    Ok(Inputs {
        instance_type: agent.instance_type.clone(),
        image: agent
            .image
            .clone()
            .unwrap_or_else(|| default_image(config, agent)),
        // Where disks come with the server type, the setting does not apply.
        disk_gb: if crate::provider::profile(config.provider.kind()).disk_configurable {
            agent.disk_gb
        } else {
            0
        },
        place: config.provider.place().to_string(),
        user_data: hex::encode(Sha256::digest(machine.as_bytes()))[..16].to_string(),
        token_generation: agent.token_generation,
        config: config_items(config, agent)?,
    })
}

/// The agent's configuration item by item, as the plan names them (see [`Inputs::config`]).
pub fn config_items(config: &Config, agent: &Agent) -> Result<BTreeMap<String, String>> {
    let mut items = BTreeMap::new();
    items.insert(
        "openclaw.json".to_string(),
        Inputs::hash(render::openclaw_json(config, agent).as_bytes()),
    );
    for (k, v) in render::plain_env(config, agent) {
        items.insert(format!("env.{k}"), Inputs::hash(v.as_bytes()));
    }
    for (k, v) in &agent.secrets {
        if !BOOT_ONLY_SECRETS.contains(&k.as_str()) {
            items.insert(format!("secret.{k}"), v.fingerprint());
        }
    }
    for (rel, bytes) in render::workspace_files(agent) {
        items.insert(format!("workspace/{rel}"), Inputs::hash(&bytes));
    }
    items.insert(
        "openclaw version".to_string(),
        config.openclaw_version.clone(),
    );
    if !agent.coding_agents.is_empty() {
        items.insert("coding agents".to_string(), agent.coding_agents.join(" "));
    }
    // The unit and the `openclaw-agent` wrapper come with agent-army itself.
    let files = render::agent_files(config, agent, &Values::Masked)?;
    let unit: Vec<u8> = files
        .iter()
        .filter(|f| f.path == "openclaw-gateway.service" || f.path == "openclaw-agent")
        .flat_map(|f| f.bytes.clone())
        .collect();
    items.insert("gateway unit".to_string(), Inputs::hash(&unit));
    Ok(items)
}

/// The desired agents; `keys`, when known, sets each agent's expected key id.
pub fn desired(
    config: &Config,
    keys: Option<&BTreeMap<String, GatewayKey>>,
) -> Result<Vec<DesiredAgent>> {
    let one = |a: &Agent| -> Result<DesiredAgent> {
        let inputs = inputs(config, a)?;
        Ok(DesiredAgent {
            name: a.name.clone(),
            fingerprint: inputs.fingerprint(),
            label: inputs.label(),
            inputs,
            key_id: keys.and_then(|k| k.get(&a.name)).map(GatewayKey::key_id),
        })
    };
    // Each agent's documents are rendered and hashed on their own: a large fleet is split over
    // the machine's cores (in order; the first error in agent order wins).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if cores < 2 || config.agents.len() < 64 {
        return config.agents.iter().map(one).collect();
    }
    let chunk = config.agents.len().div_ceil(cores);
    std::thread::scope(|s| {
        let parts: Vec<_> = config
            .agents
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(one).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(config.agents.len());
        for part in parts {
            match part.join() {
                Ok(r) => out.extend(r?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// An agent's server id (from state) and the one word for its cloud state: `not deployed`
/// (nothing recorded), the server's state as the cloud reports it, `missing` (recorded, but
/// the cloud has no live server by that id) or `recorded` (the cloud was not asked).
pub fn server_word(
    state: &State,
    observed: Option<&crate::provider::Observed>,
    agent: &str,
) -> (Option<String>, String) {
    let id = state.agents.get(agent).and_then(|a| a.server_id.clone());
    let word = match (&id, observed) {
        (None, _) => "not deployed".to_string(),
        (Some(id), Some(obs)) => obs
            .servers
            .iter()
            .find(|s| &s.id == id)
            .filter(|s| s.state != crate::provider::ServerState::Gone)
            .map(|s| s.state.to_string())
            .unwrap_or_else(|| "missing".into()),
        (Some(_), None) => "recorded".into(),
    };
    (id, word)
}

/// The stack's gateway seed, when it has one.
pub fn gateway_seed(config: &Config, keyring: &Keyring, env: &Env) -> Result<Option<Vec<u8>>> {
    let Some(r) = config.secrets.get(GATEWAY_SEED) else {
        return Ok(None);
    };
    let seed = keyring
        .resolve(r, env)
        .map_err(|e| Error::secret(GATEWAY_SEED, e))?;
    crate::token::parse_seed(seed.expose())
        .map(Some)
        .map_err(|e| Error::secret(GATEWAY_SEED, SecretError::Corrupt(e.to_string())))
}

/// Where an agent's gateway key comes from: a key state holds (made before the stack had a
/// gateway seed, or without one) stays the agent's key while its generation is 0; otherwise
/// the key is derived from the seed. `None`: neither (a random key is made at deploy).
fn known_key(
    state: &State,
    config: &Config,
    agent: &Agent,
    seed: Option<&[u8]>,
    keyring: &Keyring,
) -> Result<Option<GatewayKey>> {
    if agent.token_generation == 0
        && let Some(armored) = state.gateway_keys.get(&agent.name)
    {
        let label = format!("gateway key of {}", agent.name);
        let seed_hex = keyring
            .decrypt(armored)
            .map_err(|e| Error::secret(&label, e))?;
        let key = GatewayKey::from_seed_hex(seed_hex.expose())
            .map_err(|e| Error::secret(&label, SecretError::Corrupt(e.to_string())))?;
        return Ok(Some(key));
    }
    Ok(seed.map(|seed| {
        GatewayKey::derive(
            seed,
            &config.project,
            &config.stack,
            &agent.name,
            agent.token_generation,
        )
    }))
}

/// The gateway keys of `names` that this machine can know: held in state or derived from the
/// stack's seed.
pub fn load_keys(
    state: &State,
    config: &Config,
    keyring: &Keyring,
    env: &Env,
    names: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, GatewayKey>> {
    let seed = gateway_seed(config, keyring, env)?;
    let mut out = BTreeMap::new();
    for name in names {
        let Some(agent) = config.agent(&name) else {
            continue;
        };
        if let Some(key) = known_key(state, config, agent, seed.as_deref(), keyring)? {
            out.insert(name, key);
        }
    }
    Ok(out)
}

/// Every agent's gateway key: known ones (see [`load_keys`]), and for the rest a random key
/// encrypted into `state` (stacks without a gateway seed). Returns whether `state` changed.
pub fn ensure_keys(
    state: &mut State,
    config: &Config,
    keyring: &Keyring,
    env: &Env,
    allow_foreign_recipients: bool,
) -> Result<(BTreeMap<String, GatewayKey>, bool)> {
    let names: Vec<String> = config.agents.iter().map(|a| a.name.clone()).collect();
    let mut keys = load_keys(state, config, keyring, env, names.clone())?;
    let mut changed = false;
    let missing: Vec<&String> = names.iter().filter(|n| !keys.contains_key(*n)).collect();
    if !missing.is_empty() {
        let to = EncryptTo::for_stack(&config.recipients, env)
            .map_err(|e| Error::secret("gateway keys", e))?;
        require_readable(&to, keyring, "gateway keys", allow_foreign_recipients)?;
        for name in missing {
            let key = GatewayKey::generate();
            let armored = to
                .encrypt(key.seed_hex().as_bytes())
                .map_err(|e| Error::secret("gateway keys", e))?;
            state.gateway_keys.insert(name.clone(), armored);
            keys.insert(name.clone(), key);
            changed = true;
        }
        eprintln!(
            "note: stack `{}` has no `{GATEWAY_SEED}`: new gateway keys are random and kept only in its state, so a machine without this state cannot know the tokens. Make them reproducible: `agent-army -s {} secrets set {GATEWAY_SEED} --generate`",
            config.stack, config.stack
        );
    }
    Ok((keys, changed))
}

/// Refuse to encrypt for recipients none of whose identities this machine holds (the value
/// would be unrecoverable here), unless `allow` says the user means it.
pub fn require_readable(to: &EncryptTo, keyring: &Keyring, what: &str, allow: bool) -> Result<()> {
    if allow {
        return Ok(());
    }
    let probe = to
        .encrypt(b"agent-army recipient probe")
        .map_err(|e| Error::secret(what, e))?;
    match keyring.decrypt(&probe) {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::secret(what, SecretError::Unrecoverable)),
    }
}

/// Plaintext secrets of one agent.
pub struct AgentSecrets {
    /// The stack's reusable Tailscale auth key; `None` when deploy mints one per agent.
    pub auth_key: Option<Secret>,
    pub env: BTreeMap<String, Secret>,
}

/// Resolve every secret an agent needs.
pub fn resolve_secrets(
    config: &Config,
    agent: &Agent,
    keyring: &Keyring,
    env: &Env,
) -> Result<AgentSecrets> {
    let auth_key = match config.secrets.get(TAILSCALE_AUTH_KEY) {
        Some(r) => Some(
            keyring
                .resolve(r, env)
                .map_err(|e| Error::secret(TAILSCALE_AUTH_KEY, e))?,
        ),
        None => None,
    };
    let mut vals = BTreeMap::new();
    for (name, r) in &agent.secrets {
        let v = keyring
            .resolve(r, env)
            .map_err(|e| Error::secret(name, e))?;
        vals.insert(name.clone(), v);
    }
    Ok(AgentSecrets {
        auth_key,
        env: vals,
    })
}

/// `https://<fqdn>/#token=...`, masked unless a token is given. The token is in the fragment,
/// as OpenClaw recommends: browsers never send a fragment, so it stays out of proxy and server
/// logs and `Referer` headers.
pub fn gateway_url(fqdn: &str, token: Option<&str>) -> String {
    format!(
        "https://{fqdn}/#token={}",
        token.unwrap_or(crate::secrets::MASK)
    )
}

/// Placeholder auth key used by `validate` and `render` when deploy will mint one per agent
/// (same length as a real key, so size checks hold).
pub fn minted_placeholder() -> Secret {
    Secret::new(format!("tskey-auth-{}", "0".repeat(52)))
}

/// Render the real user data of an agent. `auth_key` overrides the stack's key (minted keys).
/// The agent's configuration with real values, for an in-place update.
pub fn real_agent_files(
    config: &Config,
    agent: &Agent,
    secrets: &AgentSecrets,
    key: &GatewayKey,
) -> Result<Vec<render::StagedFile>> {
    let token = key.token();
    let placeholder = minted_placeholder();
    let values = Values::Real {
        tailscale_auth_key: &placeholder,
        env: secrets.env.clone(),
        gateway_token: &token,
    };
    Ok(render::agent_files(config, agent, &values)?)
}

/// Whether the user data [`real_user_data`] makes would fit the cloud's limit (cheaper).
pub fn check_real_user_data(
    config: &Config,
    agent: &Agent,
    secrets: &AgentSecrets,
    key: &GatewayKey,
) -> Result<()> {
    let token = key.token();
    let placeholder = minted_placeholder();
    let values = Values::Real {
        tailscale_auth_key: secrets.auth_key.as_ref().unwrap_or(&placeholder),
        env: secrets.env.clone(),
        gateway_token: &token,
    };
    Ok(render::check_user_data(config, agent, &values)?)
}

pub fn real_user_data(
    config: &Config,
    agent: &Agent,
    secrets: &AgentSecrets,
    key: &GatewayKey,
    auth_key: Option<&Secret>,
) -> Result<Vec<u8>> {
    let token = key.token();
    let placeholder = minted_placeholder();
    let auth = auth_key
        .or(secrets.auth_key.as_ref())
        .unwrap_or(&placeholder);
    let values = Values::Real {
        tailscale_auth_key: auth,
        env: secrets.env.clone(),
        gateway_token: &token,
    };
    Ok(render::user_data(config, agent, &values)?)
}
