//! What an agent runs: OpenClaw's version, its model and model providers, optional coding-agent
//! CLIs, and the pass-through table merged into `openclaw.json`. Pure rules only: the validator
//! in `load.rs` turns their errors into diagnostics with file, line and field.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

/// The `openclaw` npm version agent-army is tested with (the version `scripts/test` runs).
/// `latest` or any other version is an explicit opt-in (`defaults.openclaw_version`).
pub const PINNED_OPENCLAW_VERSION: &str = "2026.9.6";

/// The Node.js release installed on the VMs: satisfies the pinned openclaw's
/// `engines.node` (`>=24.16.0 <25 || >=26.1.0`), which the test suite checks against the
/// installed package rather than against a copy of that range.
pub const NODE_VERSION: &str = "24.22.3";

/// `[models.providers.<name>]`: a self-hosted or OpenAI-compatible model server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelProvider {
    /// Base URL of the OpenAI-compatible API, ending in `/v1`.
    pub base_url: Spanned<String>,
    /// `openai-completions` (default) or `openai-responses`.
    pub api: Option<Spanned<String>>,
    /// Name of the secret that holds the server's API key (an environment-variable name).
    pub api_key: Option<Spanned<String>>,
    /// Model ids the server offers.
    pub models: Vec<Spanned<String>>,
}

/// `[models]` in the project or stack file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    #[serde(default)]
    pub providers: BTreeMap<Spanned<String>, Spanned<RawModelProvider>>,
}

/// A validated custom model provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelProvider {
    pub base_url: String,
    pub api: String,
    /// Secret name; exported to the gateway's environment and referenced from the config.
    pub api_key: Option<String>,
    pub models: Vec<String>,
}

/// APIs a custom provider may speak.
pub const PROVIDER_APIS: &[&str] = &["openai-completions", "openai-responses"];

/// OpenClaw's built-in providers agent-army knows the key variable of. OpenClaw reads these
/// variables from the gateway's environment, where stack secrets of the same name go.
pub const KNOWN_PROVIDERS: &[(&str, &str)] = &[
    ("anthropic", "ANTHROPIC_API_KEY"),
    ("openai", "OPENAI_API_KEY"),
    ("google", "GEMINI_API_KEY"),
    ("openrouter", "OPENROUTER_API_KEY"),
    ("mistral", "MISTRAL_API_KEY"),
    ("xai", "XAI_API_KEY"),
    ("groq", "GROQ_API_KEY"),
    ("deepseek", "DEEPSEEK_API_KEY"),
    ("cerebras", "CEREBRAS_API_KEY"),
    ("moonshot", "MOONSHOT_API_KEY"),
    ("together", "TOGETHER_API_KEY"),
    ("fireworks", "FIREWORKS_API_KEY"),
];

/// Coding-agent CLIs that can be installed for an agent's user: name → npm package.
pub const CODING_AGENTS: &[(&str, &str)] = &[
    ("claude-code", "@anthropic-ai/claude-code"),
    ("codex", "@openai/codex"),
];

/// Keys of `openclaw.json` that agent-army owns: the pass-through table may not set them.
pub const OWNED_KEYS: &[(&str, &str)] = &[
    ("gateway.mode", "the gateway always runs in local mode"),
    (
        "gateway.bind",
        "the gateway listens on loopback only, behind `tailscale serve`",
    ),
    (
        "gateway.port",
        "the gateway port is fixed (18789) for `tailscale serve`",
    ),
    (
        "gateway.auth",
        "token auth is derived from the agent's gateway key",
    ),
    (
        "gateway.trustedProxies",
        "only the local `tailscale serve` proxy is trusted",
    ),
    (
        "agents.defaults.workspace",
        "the workspace is where agent-army installs the agent's files",
    ),
    (
        "agents.defaults.model",
        "set `model` in agent-army.toml or the stack file instead",
    ),
];

/// A rule broken by a model, provider or pass-through value: `(field suffix, message, help)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    fn new(message: String, help: Option<String>) -> Self {
        Problem { message, help }
    }
}

/// Check a `provider/model` reference's shape.
pub fn split_model(model: &str) -> Result<(&str, &str), Problem> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._:/@".contains(c);
    match model.split_once('/') {
        Some((p, m)) if !p.is_empty() && !m.is_empty() && model.chars().all(ok_char) => {
            Ok((p, m))
        }
        _ => Err(Problem::new(
            format!("`{model}` is not a `provider/model` reference"),
            Some("write e.g. `anthropic/claude-sonnet-5`, or `<name>/<model id>` for a provider under `[models.providers]`".into()),
        )),
    }
}

/// The secret a model needs, given the custom providers: `Ok(None)` when it needs none.
pub fn required_secret(
    model: &str,
    providers: &BTreeMap<String, ModelProvider>,
) -> Result<Option<String>, Problem> {
    let (provider, id) = split_model(model)?;
    if let Some(p) = providers.get(provider) {
        if !p.models.iter().any(|m| m == id) {
            return Err(Problem::new(
                format!("provider `{provider}` offers no model `{id}`"),
                Some(format!(
                    "its models are: {}; add `{id}` to `[models.providers.{provider}].models`",
                    p.models.join(", ")
                )),
            ));
        }
        return Ok(p.api_key.clone());
    }
    match KNOWN_PROVIDERS.iter().find(|(n, _)| *n == provider) {
        Some((_, var)) => Ok(Some(var.to_string())),
        None => Err(Problem::new(
            format!("unknown model provider `{provider}`"),
            Some(format!(
                "define `[models.providers.{provider}]` with `base_url` and `models` for a self-hosted or OpenAI-compatible server, or use one of: {}",
                KNOWN_PROVIDERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )),
    }
}

/// Validate one custom provider.
pub fn provider(name: &str, raw: &RawModelProvider) -> Result<ModelProvider, Problem> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(Problem::new(
            format!("`{name}` is not a provider name"),
            Some("use lowercase letters, digits, '-' and '_', e.g. `local`".into()),
        ));
    }
    if KNOWN_PROVIDERS.iter().any(|(n, _)| *n == name) {
        return Err(Problem::new(
            format!("`{name}` is one of OpenClaw's built-in providers"),
            Some("give your server another name, e.g. `local`".into()),
        ));
    }
    let url = raw.base_url.get_ref();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::new(
            format!("`{url}` is not an http(s) URL"),
            Some("write e.g. `http://10.0.0.5:8000/v1`".into()),
        ));
    }
    let api = raw
        .api
        .as_ref()
        .map(|a| a.get_ref().clone())
        .unwrap_or_else(|| PROVIDER_APIS[0].to_string());
    if !PROVIDER_APIS.contains(&api.as_str()) {
        return Err(Problem::new(
            format!("`{api}` is not a supported API"),
            Some(format!("use one of: {}", PROVIDER_APIS.join(", "))),
        ));
    }
    if raw.models.is_empty() {
        return Err(Problem::new(
            "lists no models".into(),
            Some("add `models = [\"<model id>\"]`".into()),
        ));
    }
    Ok(ModelProvider {
        base_url: url.clone(),
        api,
        api_key: raw.api_key.as_ref().map(|k| k.get_ref().clone()),
        models: raw.models.iter().map(|m| m.get_ref().clone()).collect(),
    })
}

/// The npm package spec of a coding agent: `claude-code` or `claude-code@1.2.3`.
pub fn coding_agent(spec: &str) -> Result<String, Problem> {
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let Some((_, package)) = CODING_AGENTS.iter().find(|(n, _)| *n == name) else {
        return Err(Problem::new(
            format!("`{name}` is not a coding agent agent-army can install"),
            Some(format!(
                "use one of: {}",
                CODING_AGENTS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ));
    };
    match version {
        None => Ok(package.to_string()),
        Some(v)
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c)) =>
        {
            Ok(format!("{package}@{v}"))
        }
        Some(v) => Err(Problem::new(
            format!("`{v}` is not an npm version or tag"),
            Some(format!("write e.g. `{name}@latest`")),
        )),
    }
}

/// A pass-through table as JSON, refusing keys agent-army owns. Returns the dotted path of
/// the first owned key found.
pub fn passthrough(table: &toml::Table) -> Result<Map<String, Value>, (String, Problem)> {
    let value = serde_json::to_value(table).unwrap_or(Value::Object(Map::new()));
    let Value::Object(map) = value else {
        return Ok(Map::new());
    };
    for (owned, why) in OWNED_KEYS {
        if lookup(&map, owned) {
            return Err((
                owned.to_string(),
                Problem::new(
                    format!("`{owned}` is set by agent-army"),
                    Some(format!("{why}; remove it from the pass-through table")),
                ),
            ));
        }
    }
    Ok(map)
}

fn lookup(map: &Map<String, Value>, dotted: &str) -> bool {
    let mut cur = map;
    let mut parts = dotted.split('.').peekable();
    while let Some(p) = parts.next() {
        match cur.get(p) {
            None => return false,
            Some(_) if parts.peek().is_none() => return true,
            Some(Value::Object(m)) => cur = m,
            Some(_) => return false,
        }
    }
    false
}

/// Deep-merge `over` into `base`: tables merge key by key, anything else is replaced.
pub fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> BTreeMap<String, ModelProvider> {
        let mut m = BTreeMap::new();
        m.insert(
            "local".to_string(),
            ModelProvider {
                base_url: "http://10.0.0.5:8000/v1".into(),
                api: "openai-completions".into(),
                api_key: Some("LOCAL_LLM_KEY".into()),
                models: vec!["qwen3".into()],
            },
        );
        m
    }

    #[test]
    fn model_keys() {
        let p = providers();
        assert_eq!(
            required_secret("anthropic/claude-sonnet-5", &p).unwrap(),
            Some("ANTHROPIC_API_KEY".into())
        );
        assert_eq!(
            required_secret("local/qwen3", &p).unwrap(),
            Some("LOCAL_LLM_KEY".into())
        );
        assert!(
            required_secret("local/other", &p)
                .unwrap_err()
                .message
                .contains("no model `other`")
        );
        let e = required_secret("acme/x", &p).unwrap_err();
        assert!(e.message.contains("unknown model provider `acme`"));
        assert!(e.help.unwrap().contains("[models.providers.acme]"));
        assert!(split_model("claude").is_err());
        assert!(split_model("a/b c").is_err());
    }

    #[test]
    fn coding_agents() {
        assert_eq!(coding_agent("codex").unwrap(), "@openai/codex");
        assert_eq!(
            coding_agent("claude-code@1.2.3").unwrap(),
            "@anthropic-ai/claude-code@1.2.3"
        );
        assert!(coding_agent("cursor").is_err());
        assert!(coding_agent("codex@$(id)").is_err());
    }

    #[test]
    fn passthrough_refuses_owned_keys_and_merges_deeply() {
        let t: toml::Table = toml::from_str("[gateway.auth]\nmode = \"none\"\n").unwrap();
        let (key, p) = passthrough(&t).unwrap_err();
        assert_eq!(key, "gateway.auth");
        assert!(p.message.contains("set by agent-army"));
        let t: toml::Table =
            toml::from_str("[gateway.http.endpoints.responses]\nenabled = true\n").unwrap();
        let over = passthrough(&t).unwrap();
        let mut base = serde_json::json!({"gateway": {"port": 1, "http": {"endpoints": {"chatCompletions": {"enabled": true}}}}})
            .as_object()
            .unwrap()
            .clone();
        merge(&mut base, &over);
        assert_eq!(
            Value::Object(base),
            serde_json::json!({"gateway": {"port": 1, "http": {"endpoints": {"chatCompletions": {"enabled": true}, "responses": {"enabled": true}}}}})
        );
    }
}
