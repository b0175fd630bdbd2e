//! Validation: the pure half of loading. It parses the project and stack files' texts and
//! checks them into a [`Config`], one function per section of the files, given the agents'
//! workspace folders as discovery (`discover.rs`) read them. Nothing here touches the
//! filesystem, so every diagnostic depends only on its inputs.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::diag::{Diagnostic, Source, suggest};
use super::discover::{Project, Workspace, WorkspaceProblem, Workspaces};
use super::model::*;
use super::openclaw::{self as oc, ModelProvider, RawModels};
use super::{PROJECT_FILE, StackError};
use crate::naming;
use crate::secrets::SecretRef;

/// Default root disk size in GB.
pub const DEFAULT_DISK_GB: u32 = 30;
/// Default IMDS hop limit (containers on the VM cannot reach instance metadata).
pub const DEFAULT_HOP_LIMIT: u32 = 1;

/// The two files, parsed but not yet checked.
pub struct Parsed {
    project: RawProject,
    stack: RawStack,
}

impl Parsed {
    /// The agents' `workspace` folders, as written: what discovery must read.
    pub fn workspaces(&self) -> impl Iterator<Item = &str> {
        self.project
            .agents
            .iter()
            .filter_map(|a| a.workspace.as_ref().map(|w| w.get_ref().as_str()))
    }
}

/// Parse both files; a syntax or schema error in either is reported for both.
pub fn parse(psrc: &Source, ssrc: &Source) -> Result<Parsed, StackError> {
    let mut diags = Vec::new();
    let raw_project = toml::from_str::<RawProject>(psrc.text).map_err(|e| psrc.from_toml(&e));
    let raw_stack = toml::from_str::<RawStack>(ssrc.text).map_err(|e| ssrc.from_toml(&e));
    match (raw_project, raw_stack) {
        (Ok(project), Ok(stack)) => Ok(Parsed { project, stack }),
        (p, s) => {
            diags.extend(p.err());
            diags.extend(s.err());
            Err(StackError::Invalid(diags))
        }
    }
}

/// Check the parsed files into a configuration. `workspaces` must hold every folder
/// [`Parsed::workspaces`] names (one it lacks counts as missing). Nothing is decrypted here.
pub fn validate(
    project: &Project,
    psrc: &Source,
    ssrc: &Source,
    parsed: &Parsed,
    workspaces: &Workspaces,
) -> Result<Config, StackError> {
    let mut v = Validator {
        psrc,
        ssrc,
        workspaces,
        diags: Vec::new(),
    };
    let config = v.build(project, &parsed.project, &parsed.stack);
    if v.diags.is_empty() {
        Ok(config)
    } else {
        Err(StackError::Invalid(v.diags))
    }
}

struct Validator<'a> {
    psrc: &'a Source<'a>,
    ssrc: &'a Source<'a>,
    workspaces: &'a Workspaces,
    diags: Vec<Diagnostic>,
}

/// Where an agent's model was set: its span, and whether in the project file.
type ModelSource = Option<(Range<usize>, bool)>;

/// The provider section, as agents need it.
struct Provider {
    settings: ProviderSettings,
    /// The key naming the server type for this provider (`instance_type`, `server_type`).
    type_key: &'static str,
    /// The stack's server type, if it sets one.
    default_type: Option<String>,
}

/// What every agent starts from: `[defaults]`, `[models]` and the stack's overrides.
struct Defaults {
    disk_gb: u32,
    stack_disk_gb: Option<u32>,
    env: BTreeMap<String, String>,
    openclaw_version: String,
    model_providers: BTreeMap<String, ModelProvider>,
    model: Option<String>,
    stack_model: Option<String>,
    coding_agents: Vec<String>,
    openclaw: serde_json::Map<String, serde_json::Value>,
}

/// Everything checked before `[[agents]]` that each agent draws on.
struct AgentContext<'a> {
    p: &'a RawProject,
    s: &'a RawStack,
    stack: &'a str,
    tailnet: &'a str,
    provider: &'a Provider,
    defaults: &'a Defaults,
    secrets: &'a BTreeMap<String, SecretRef>,
}

impl Validator<'_> {
    fn perr<T>(&mut self, s: &Spanned<T>, field: &str, msg: String, help: Option<String>) {
        let mut d = self.psrc.at(s.span(), field, msg);
        d.help = help;
        self.diags.push(d);
    }
    fn serr<T>(&mut self, s: &Spanned<T>, field: &str, msg: String, help: Option<String>) {
        let mut d = self.ssrc.at(s.span(), field, msg);
        d.help = help;
        self.diags.push(d);
    }

    /// The sections in the order their diagnostics are reported.
    fn build(&mut self, project: &Project, p: &RawProject, s: &RawStack) -> Config {
        let stack = project.stack.clone();
        let mut warnings = Vec::new();
        let name = self.names(project, p);
        let provider = self.provider(s);
        let tailnet = self.tailnet(s);
        let allowed_ssh_cidrs = self.ssh_cidrs(s, &stack, &mut warnings);
        let recipients = self.recipients(s);
        let defaults = self.defaults(p, s);
        let secrets = self.secrets(s);
        let tailscale_tags = self.tailscale_tags(s);
        // A Docker stack without an auth key runs its gateways on 127.0.0.1, off any tailnet.
        if *s.provider.get_ref() != ProviderKind::Docker {
            self.tailscale_auth_key(
                &secrets,
                &stack,
                matches!(provider.settings, ProviderSettings::Kubernetes(_)),
            );
        } else {
            self.docker_tailnet(s, &secrets, &stack);
        }
        let (mut agents, model_sources) = self.agents(&AgentContext {
            p,
            s,
            stack: &stack,
            tailnet: &tailnet,
            provider: &provider,
            defaults: &defaults,
            secrets: &secrets,
        });
        if p.agents.is_empty() {
            warnings.push(
                "agent-army.toml declares no agents: `deploy` creates nothing (and removes the servers of agents that are gone); `destroy` removes the stack".into(),
            );
        }
        self.agent_secrets(s, &mut agents);
        self.token_generations(s, &secrets, &stack, &mut agents);
        self.reserved_agent_secrets(s);
        self.model_keys(
            &agents,
            &model_sources,
            &defaults.model_providers,
            &mut warnings,
        );
        let state = self.state_settings(p.state.as_ref(), s.state.as_ref(), &provider.settings);
        Config {
            project: name,
            stack,
            root: project.root.clone(),
            stack_file: project.stack_file_display(),
            provider: provider.settings,
            tailnet,
            allowed_ssh_cidrs,
            recipients,
            openclaw_version: defaults.openclaw_version,
            model_providers: defaults.model_providers,
            tailscale_tags,
            secrets,
            state,
            agents,
            warnings,
        }
    }

    /// `[project] name` and the stack's name (from its file name): both end up in tags,
    /// labels and hostnames.
    fn names(&mut self, project: &Project, p: &RawProject) -> String {
        let stack = &project.stack;
        let name = p.project.name.get_ref().clone();
        if let Err(e) = naming::check_dns_label(&name) {
            self.perr(
                &p.project.name,
                "project.name",
                format!("project name `{name}` {e}"),
                None,
            );
        }
        if let Err(e) = naming::check_dns_label(stack) {
            self.diags.push(Diagnostic {
                file: project.stack_file_display(),
                line: 1,
                col: 1,
                field: "stack".into(),
                message: format!("stack name `{stack}` (from the file name) {e}"),
                help: Some("rename the stack file to a lowercase DNS label such as `dev`".into()),
                snippet: None,
            });
        }
        name
    }

    /// `provider` and its settings: where servers go, their default type, `[aws]`.
    fn provider(&mut self, s: &RawStack) -> Provider {
        let kind = *s.provider.get_ref();
        if kind == ProviderKind::Kubernetes {
            return self.kubernetes(s);
        }
        if kind == ProviderKind::Docker {
            return self.docker(s);
        }
        if let Some(d) = &s.docker {
            self.serr(
                d,
                "docker",
                "`[docker]` settings are only valid when `provider = \"docker\"`".into(),
                None,
            );
        }
        if let Some(k) = &s.kubernetes {
            self.serr(
                k,
                "kubernetes",
                "`[kubernetes]` settings are only valid when `provider = \"kubernetes\"`".into(),
                None,
            );
        }
        let (place_key, type_key, wrong_place, wrong_type) = match kind {
            ProviderKind::Aws => ("region", "instance_type", &s.location, &s.server_type),
            _ => ("location", "server_type", &s.region, &s.instance_type),
        };
        let (right_place, right_type) = match kind {
            ProviderKind::Aws => (&s.region, &s.instance_type),
            _ => (&s.location, &s.server_type),
        };
        let provider_name = crate::provider::profile(kind).name;
        if let Some(w) = wrong_place {
            let other = if place_key == "region" {
                "location"
            } else {
                "region"
            };
            self.serr(
                w,
                other,
                format!("`{other}` is not a setting of {provider_name} stacks"),
                Some(format!("use `{place_key}`")),
            );
        }
        if let Some(w) = wrong_type {
            let other = if type_key == "instance_type" {
                "server_type"
            } else {
                "instance_type"
            };
            self.serr(
                w,
                other,
                format!("`{other}` is not a setting of {provider_name} stacks"),
                Some(format!("use `{type_key}`")),
            );
        }
        let place = match right_place {
            Some(p) if !p.get_ref().trim().is_empty() => {
                // The spelling only; whether the place exists is the cloud's to say (asked
                // before anything is created).
                if let Err(e) = (crate::provider::profile(kind).check_place)(p.get_ref()) {
                    self.serr(p, place_key, format!("`{}` {e}", p.get_ref()), None);
                }
                p.get_ref().clone()
            }
            Some(p) => {
                self.serr(p, place_key, "must not be empty".into(), None);
                String::new()
            }
            None => {
                self.serr(
                    &s.provider,
                    place_key,
                    format!("missing required key `{place_key}` for provider `{kind}`"),
                    Some(format!("add `{place_key} = ...`")),
                );
                String::new()
            }
        };
        let default_type = right_type.as_ref().map(|t| t.get_ref().clone());
        if let Some(t) = right_type
            && let Err(e) = size_name(t.get_ref())
        {
            self.serr(t, type_key, e, None);
        }
        if let Some(aws) = &s.aws
            && kind != ProviderKind::Aws
        {
            self.serr(
                aws,
                "aws",
                "`[aws]` settings are only valid when `provider = \"aws\"`".into(),
                None,
            );
        }
        let provider = match kind {
            ProviderKind::Aws => {
                let aws = s.aws.as_ref().map(|a| a.get_ref());
                let hop = match aws.and_then(|a| a.metadata_hop_limit.as_ref()) {
                    Some(h) if !(1..=64).contains(h.get_ref()) => {
                        self.serr(
                            h,
                            "aws.metadata_hop_limit",
                            format!("{} is out of range; AWS accepts 1 to 64", h.get_ref()),
                            Some(
                                "use 1 (default) unless containers must reach instance metadata"
                                    .into(),
                            ),
                        );
                        DEFAULT_HOP_LIMIT
                    }
                    Some(h) => *h.get_ref(),
                    None => DEFAULT_HOP_LIMIT,
                };
                let subnet_id = aws.and_then(|a| a.subnet_id.as_ref()).map(|sub| {
                    if !sub.get_ref().starts_with("subnet-") {
                        self.serr(
                            sub,
                            "aws.subnet_id",
                            format!("`{}` is not a subnet id", sub.get_ref()),
                            Some("subnet ids look like `subnet-0123456789abcdef0`".into()),
                        );
                    }
                    sub.get_ref().clone()
                });
                ProviderSettings::Aws {
                    region: place,
                    subnet_id,
                    metadata_hop_limit: hop,
                }
            }
            _ => ProviderSettings::Hetzner { location: place },
        };
        Provider {
            settings: provider,
            type_key,
            default_type,
        }
    }

    /// The VM settings (place, server type, image, `[aws]`, the ssh port) on a stack whose
    /// agents are containers: refused rather than ignored. `place` has `{key}` for the key.
    fn refuse_vm_settings(
        &mut self,
        s: &RawStack,
        what: &str,
        place: &str,
        size: &str,
        image: &str,
        no_ssh: &str,
    ) {
        let vm_only: [(&Option<Spanned<String>>, &str, String); 5] = [
            (&s.region, "region", place.replace("{key}", "region")),
            (&s.location, "location", place.replace("{key}", "location")),
            (&s.instance_type, "instance_type", size.into()),
            (&s.server_type, "server_type", size.into()),
            (&s.image, "image", image.into()),
        ];
        for (value, key, help) in vm_only {
            if let Some(v) = value {
                self.serr(
                    v,
                    key,
                    format!("`{key}` is not a setting of {what} stacks"),
                    Some(help),
                );
            }
        }
        if let Some(aws) = &s.aws {
            self.serr(
                aws,
                "aws",
                "`[aws]` settings are only valid when `provider = \"aws\"`".into(),
                None,
            );
        }
        if let Some(c) = s.allowed_ssh_cidrs.first() {
            self.serr(
                c,
                "allowed_ssh_cidrs",
                format!("{no_ssh}: `allowed_ssh_cidrs` is not a setting of {what} stacks"),
                Some("remove it; agents are reached over Tailscale SSH".into()),
            );
        }
    }

    /// An image reference from the stack file, into `target`.
    fn image_ref(&mut self, value: &Option<Spanned<String>>, key: &str, target: &mut String) {
        if let Some(i) = value {
            let image = i.get_ref();
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.serr(
                    i,
                    key,
                    format!("`{image}` is not an image reference"),
                    Some("write it as `registry/repository:tag` or `...@sha256:...`".into()),
                );
            }
            *target = image.clone();
        }
    }

    /// `provider = "docker"` and its optional `[docker]` table.
    fn docker(&mut self, s: &RawStack) -> Provider {
        self.refuse_vm_settings(
            s,
            "Docker",
            "containers run on this machine's Docker engine; remove `{key}`",
            "containers are not sized here; remove it",
            "set `[docker] openclaw_image` for the OpenClaw container's image",
            "containers publish no ssh port (`agent-army ssh` runs `docker exec`)",
        );
        if let Some(k) = &s.kubernetes {
            self.serr(
                k,
                "kubernetes",
                "`[kubernetes]` settings are only valid when `provider = \"kubernetes\"`".into(),
                None,
            );
        }
        let mut settings = DockerSettings {
            host: None,
            openclaw_image: default_docker_openclaw_image(),
            tailscale_image: DEFAULT_TAILSCALE_IMAGE.to_string(),
        };
        if let Some(d) = &s.docker {
            let raw = d.get_ref();
            if let Some(h) = &raw.host {
                if !h.get_ref().starts_with("unix:///") {
                    self.serr(
                        h,
                        "docker.host",
                        format!("`{}` is not a unix socket address", h.get_ref()),
                        Some("write it as `unix:///var/run/docker.sock`; agent-army talks to a local engine only".into()),
                    );
                }
                settings.host = Some(h.get_ref().clone());
            }
            self.image_ref(
                &raw.openclaw_image,
                "docker.openclaw_image",
                &mut settings.openclaw_image,
            );
            self.image_ref(
                &raw.tailscale_image,
                "docker.tailscale_image",
                &mut settings.tailscale_image,
            );
        }
        Provider {
            settings: ProviderSettings::Docker(settings),
            type_key: "instance_type",
            default_type: Some(String::new()),
        }
    }

    /// `provider = "kubernetes"` and its `[kubernetes]` table. The VM settings (place, server
    /// type, image, ssh port) mean nothing for pods and are refused rather than ignored.
    fn kubernetes(&mut self, s: &RawStack) -> Provider {
        self.refuse_vm_settings(
            s,
            "Kubernetes",
            "a cluster has no {key} setting here; pick the cluster with `[kubernetes] context`",
            "pods are sized by the cluster; remove it",
            "set `[kubernetes] node_image` for the OpenClaw container's image",
            "pods have no ssh port to open",
        );
        if let Some(d) = &s.docker {
            self.serr(
                d,
                "docker",
                "`[docker]` settings are only valid when `provider = \"docker\"`".into(),
                None,
            );
        }
        let mut settings = KubernetesSettings {
            namespace: String::new(),
            context: None,
            storage_class: None,
            tailscale_mode: TailscaleMode::Userspace,
            tailscale_state_gb: DEFAULT_TAILSCALE_STATE_GB,
            tailscale_ssh: true,
            node_image: default_node_image(),
            tailscale_image: DEFAULT_TAILSCALE_IMAGE.to_string(),
        };
        let Some(k) = &s.kubernetes else {
            self.serr(
                &s.provider,
                "kubernetes",
                "missing required table `[kubernetes]` for provider `kubernetes`".into(),
                Some("add `[kubernetes]` with `namespace = \"...\"`".into()),
            );
            return kubernetes_provider(settings);
        };
        let raw = k.get_ref();
        match &raw.namespace {
            Some(n) => {
                if let Err(e) = naming::check_dns_label(n.get_ref()) {
                    self.serr(
                        n,
                        "kubernetes.namespace",
                        format!("namespace `{}` {e}", n.get_ref()),
                        Some(
                            "Kubernetes namespaces are lowercase DNS labels, such as `agents-dev`"
                                .into(),
                        ),
                    );
                }
                settings.namespace = n.get_ref().clone();
            }
            None => self.serr(
                k,
                "kubernetes.namespace",
                "missing required key `namespace`".into(),
                Some("add `namespace = \"...\"` to `[kubernetes]` (agent-army creates it)".into()),
            ),
        }
        if let Some(c) = &raw.context {
            if c.get_ref().trim().is_empty() {
                self.serr(
                    c,
                    "kubernetes.context",
                    "must not be empty".into(),
                    Some("remove it to use the kubeconfig's current context".into()),
                );
            }
            settings.context = Some(c.get_ref().clone());
        }
        if let Some(sc) = &raw.storage_class {
            if let Err(e) = dns_subdomain(sc.get_ref()) {
                self.serr(
                    sc,
                    "kubernetes.storage_class",
                    format!("storage class `{}` {e}", sc.get_ref()),
                    Some("`kubectl get storageclass` lists the cluster's classes; remove the key for the default one".into()),
                );
            }
            settings.storage_class = Some(sc.get_ref().clone());
        }
        if let Some(m) = &raw.tailscale_mode {
            settings.tailscale_mode = match m.get_ref().as_str() {
                "userspace" => TailscaleMode::Userspace,
                "kernel" => TailscaleMode::Kernel,
                other => {
                    let hint = suggest(other, &["userspace".into(), "kernel".into()])
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    self.serr(
                        m,
                        "kubernetes.tailscale_mode",
                        format!("`{other}` is not a Tailscale mode"),
                        Some(format!("{hint}use `userspace` (no capability, the default) or `kernel` (NET_ADMIN and /dev/net/tun)")),
                    );
                    TailscaleMode::Userspace
                }
            };
        }
        if let Some(g) = &raw.tailscale_state_gb {
            if !(1..=1024).contains(g.get_ref()) {
                self.serr(
                    g,
                    "kubernetes.tailscale_state_gb",
                    format!("{} GiB is out of range; use 1 to 1024", g.get_ref()),
                    None,
                );
            }
            settings.tailscale_state_gb = *g.get_ref();
        }
        if let Some(ssh) = &raw.tailscale_ssh {
            settings.tailscale_ssh = *ssh.get_ref();
        }
        self.image_ref(
            &raw.node_image,
            "kubernetes.node_image",
            &mut settings.node_image,
        );
        self.image_ref(
            &raw.tailscale_image,
            "kubernetes.tailscale_image",
            &mut settings.tailscale_image,
        );
        kubernetes_provider(settings)
    }

    /// `tailnet`: the MagicDNS suffix, normalised.
    /// A Docker stack without one gets `local` (its agents are not on a tailnet).
    fn tailnet(&mut self, s: &RawStack) -> String {
        let Some(raw) = &s.tailnet else {
            if *s.provider.get_ref() != ProviderKind::Docker {
                self.serr(
                    &s.provider,
                    "tailnet",
                    "missing required key `tailnet`".into(),
                    Some("add `tailnet = \"tail12345.ts.net\"`: your tailnet's MagicDNS suffix (admin console → DNS)".into()),
                );
            }
            return "local".into();
        };
        let tailnet = raw.get_ref().trim().trim_end_matches('.').to_lowercase();
        let tailnet_ok = tailnet.contains('.')
            && tailnet
                .split('.')
                .all(|l| naming::check_dns_label(l).is_ok());
        if !tailnet_ok {
            self.serr(raw, "tailnet", format!("`{}` is not a tailnet DNS name", raw.get_ref()), Some("use your tailnet's MagicDNS suffix, e.g. `tail12345.ts.net` (admin console → DNS)".into()));
        }
        tailnet
    }

    /// `allowed_ssh_cidrs`, with a warning when any are open.
    fn ssh_cidrs(
        &mut self,
        s: &RawStack,
        stack: &str,
        warnings: &mut Vec<String>,
    ) -> Vec<ipnet::IpNet> {
        let mut cidrs = Vec::new();
        for c in &s.allowed_ssh_cidrs {
            match c.get_ref().parse::<ipnet::IpNet>() {
                Ok(n) => cidrs.push(n),
                Err(_) => self.serr(
                    c,
                    "allowed_ssh_cidrs",
                    format!("`{}` is not a CIDR block", c.get_ref()),
                    Some("write an address and prefix length, e.g. `203.0.113.7/32`".into()),
                ),
            }
        }
        if !cidrs.is_empty() {
            warnings.push(format!(
                "stacks/{stack}.toml: `allowed_ssh_cidrs` opens port 22 to {}; agents are reachable over Tailscale SSH without it",
                cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        cidrs
    }

    /// `age_recipients`.
    fn recipients(&mut self, s: &RawStack) -> Vec<String> {
        let mut recipients = Vec::new();
        for r in &s.age_recipients {
            if r.get_ref().parse::<age::x25519::Recipient>().is_err() {
                self.serr(
                    r,
                    "age_recipients",
                    format!("`{}` is not an age X25519 recipient", r.get_ref()),
                    Some("recipients look like `age1...`; `agent-army init` prints yours".into()),
                );
            } else {
                recipients.push(r.get_ref().clone());
            }
        }
        recipients
    }

    /// `[defaults]`, `[models]` and the stack's `disk_gb`, `model` and `[openclaw]`.
    fn defaults(&mut self, p: &RawProject, s: &RawStack) -> Defaults {
        let default_disk = self
            .disk(&p.defaults.disk_gb, "defaults.disk_gb", true)
            .unwrap_or(DEFAULT_DISK_GB);
        let stack_disk = self.disk(&s.disk_gb, "disk_gb", false);
        let default_env = self.env_table(&p.defaults.env, "defaults.env");
        let openclaw_version = p
            .defaults
            .openclaw_version
            .as_ref()
            .map(|v| {
                let ok = !v.get_ref().is_empty()
                    && v.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c));
                if !ok {
                    self.perr(
                        v,
                        "defaults.openclaw_version",
                        format!("`{}` is not an npm version or tag", v.get_ref()),
                        Some("use e.g. `latest` or `2026.1.5`".into()),
                    );
                }
                v.get_ref().clone()
            })
            .unwrap_or_else(|| oc::PINNED_OPENCLAW_VERSION.into());
        let mut model_providers = BTreeMap::new();
        self.model_providers(&p.models, true, &mut model_providers);
        self.model_providers(&s.models, false, &mut model_providers);
        let default_model = self.model_ref(&p.defaults.model, "defaults.model", true);
        let stack_model = self.model_ref(&s.model, "model", false);
        let default_coding =
            self.coding_agents(&p.defaults.coding_agents, "defaults.coding_agents");
        let mut base_openclaw = self.passthrough(&p.defaults.openclaw, "defaults.openclaw", true);
        oc::merge(
            &mut base_openclaw,
            &self.passthrough(&s.openclaw, "openclaw", false),
        );
        Defaults {
            disk_gb: default_disk,
            stack_disk_gb: stack_disk,
            env: default_env,
            openclaw_version,
            model_providers,
            model: default_model,
            stack_model,
            coding_agents: default_coding,
            openclaw: base_openclaw,
        }
    }

    /// `[secrets]`: the stack-wide secrets (an OAuth client is both halves or neither).
    fn secrets(&mut self, s: &RawStack) -> BTreeMap<String, SecretRef> {
        let secrets = self.secret_table(&s.secrets, "secrets");
        if secrets.contains_key(TAILSCALE_OAUTH_ID) != secrets.contains_key(TAILSCALE_OAUTH_SECRET)
        {
            self.diags.push(Diagnostic {
                file: self.ssrc.path.to_path_buf(),
                line: 1,
                col: 1,
                field: "secrets".into(),
                message: format!(
                    "`{TAILSCALE_OAUTH_ID}` and `{TAILSCALE_OAUTH_SECRET}` go together"
                ),
                help: Some("set both, or neither".into()),
                snippet: None,
            });
        }
        secrets
    }

    /// `[tailscale] tags`, or the default tag.
    fn tailscale_tags(&mut self, s: &RawStack) -> Vec<String> {
        let mut tailscale_tags = Vec::new();
        for t in s.tailscale.iter().flat_map(|t| &t.tags) {
            let name = t.get_ref().strip_prefix("tag:").unwrap_or_default();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                self.serr(
                    t,
                    "tailscale.tags",
                    format!("`{}` is not a Tailscale tag", t.get_ref()),
                    Some("tags look like `tag:agent-army`".into()),
                );
            } else {
                tailscale_tags.push(t.get_ref().clone());
            }
        }
        if tailscale_tags.is_empty() {
            tailscale_tags.push(DEFAULT_TAILSCALE_TAG.to_string());
        }
        tailscale_tags
    }

    /// Agents join the tailnet with `tailscale_auth_key` or keys minted by an OAuth client.
    /// A Kubernetes stack needs the key itself: its Secrets are applied as rendered, and no
    /// key is minted for them.
    /// A Docker stack is on a tailnet exactly when it names an auth key; then it needs the
    /// tailnet's name, and an OAuth client alone (which mints keys for VMs) does not do.
    fn docker_tailnet(&mut self, s: &RawStack, secrets: &BTreeMap<String, SecretRef>, stack: &str) {
        let key = secrets.contains_key(TAILSCALE_AUTH_KEY);
        if key && s.tailnet.is_none() {
            self.serr(
                &s.provider,
                "tailnet",
                "missing key `tailnet`: this Docker stack has `tailscale_auth_key`, so its agents join a tailnet and their URLs are `https://<stack>-<agent>.<tailnet>/`".into(),
                Some("add `tailnet = \"tail12345.ts.net\"` (admin console → DNS), or remove `tailscale_auth_key` to keep the gateways on 127.0.0.1".into()),
            );
        }
        if !key
            && (secrets.contains_key(TAILSCALE_OAUTH_ID)
                || secrets.contains_key(TAILSCALE_OAUTH_SECRET))
        {
            self.auth_key_diag(
                "an OAuth client without `tailscale_auth_key`: a Docker stack's sidecars log in with an auth key (keys minted by an OAuth client are not supported on Docker), so this stack would run off the tailnet".into(),
                format!("set `{TAILSCALE_AUTH_KEY}` (`agent-army secrets set {TAILSCALE_AUTH_KEY} --stack {stack}`, or `env:TS_AUTHKEY`), or remove the OAuth client to run the gateways on 127.0.0.1"),
            );
        }
    }

    /// A problem with the stack's `tailscale_auth_key` (no line to point at: it may be absent).
    fn auth_key_diag(&mut self, message: String, help: String) {
        self.diags.push(Diagnostic {
            file: self.ssrc.path.to_path_buf(),
            line: 1,
            col: 1,
            field: format!("secrets.{TAILSCALE_AUTH_KEY}"),
            message,
            help: Some(help),
            snippet: None,
        });
    }

    fn tailscale_auth_key(
        &mut self,
        secrets: &BTreeMap<String, SecretRef>,
        stack: &str,
        kubernetes: bool,
    ) {
        if kubernetes && !secrets.contains_key(TAILSCALE_AUTH_KEY) {
            self.auth_key_diag(
                "missing required secret `tailscale_auth_key`: a Kubernetes stack's sidecars log in with it (keys minted by an OAuth client are not supported on Kubernetes)".into(),
                format!("create a reusable, pre-authorized key in the Tailscale admin console and run `agent-army secrets set {TAILSCALE_AUTH_KEY} --stack {stack}` (reads it from stdin), or set it to `env:TS_AUTHKEY`"),
            );
            return;
        }
        let oauth = secrets.contains_key(TAILSCALE_OAUTH_ID)
            && secrets.contains_key(TAILSCALE_OAUTH_SECRET);
        if !secrets.contains_key(TAILSCALE_AUTH_KEY) && !oauth {
            self.auth_key_diag(
                "missing required secret `tailscale_auth_key`".into(),
                format!("run `agent-army secrets set {TAILSCALE_AUTH_KEY} --stack {stack}` (reads the key from stdin), set it to `env:TS_AUTHKEY`, or give an OAuth client (`{TAILSCALE_OAUTH_ID}` and `{TAILSCALE_OAUTH_SECRET}`) so deploy mints one key per agent"),
            );
        }
    }

    /// `[[agents]]`: each agent, from the defaults and the stack's settings. Agents with a
    /// bad or duplicate name are left out (after one diagnostic).
    fn agents(&mut self, cx: &AgentContext) -> (Vec<Agent>, Vec<ModelSource>) {
        let mut agents = Vec::new();
        let mut model_sources = Vec::new();
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for a in &cx.p.agents {
            if let Some((agent, source)) = self.agent(cx, a, &mut seen) {
                agents.push(agent);
                model_sources.push(source);
            }
        }
        (agents, model_sources)
    }

    /// One `[[agents]]` entry; `seen` maps the names so far to their positions.
    fn agent(
        &mut self,
        cx: &AgentContext,
        a: &RawAgent,
        seen: &mut BTreeMap<String, (usize, usize)>,
    ) -> Option<(Agent, ModelSource)> {
        let aname = a.name.get_ref().clone();
        let field = "agents.name";
        if let Some((l, _)) = seen.get(&aname) {
            let line = *l;
            self.perr(
                &a.name,
                field,
                format!("duplicate agent name `{aname}` (first defined on line {line})"),
                Some("agent names must be unique".into()),
            );
            return None;
        }
        seen.insert(aname.clone(), self.psrc.position(a.name.span().start));
        if let Err(e) = naming::check_dns_label(&aname) {
            self.perr(
                &a.name,
                field,
                format!("agent name `{aname}` {e}"),
                Some("use lowercase letters, digits and '-', e.g. `agent-pm`".into()),
            );
            return None;
        }
        let host = naming::hostname(cx.stack, &aname);
        // A StatefulSet's pods carry `controller-revision-hash=<name>-<10 characters>`, a
        // label value of at most 63: a longer name makes a StatefulSet that never gets a pod.
        if matches!(cx.provider.settings, ProviderSettings::Kubernetes(_))
            && host.len() > KUBERNETES_MAX_HOSTNAME
        {
            self.perr(
                &a.name,
                field,
                format!(
                    "hostname `{host}` is {} characters; on Kubernetes it names a StatefulSet, whose pods need it to be at most {KUBERNETES_MAX_HOSTNAME}",
                    host.len()
                ),
                Some(format!(
                    "shorten the agent name to at most {} characters",
                    KUBERNETES_MAX_HOSTNAME.saturating_sub(cx.stack.len() + 1)
                )),
            );
            return None;
        }
        if let Err(e) = naming::check_dns_label(&host) {
            self.perr(
                &a.name,
                field,
                format!("hostname `{host}` {e}"),
                Some(format!(
                    "shorten the agent name to at most {} characters",
                    63usize.saturating_sub(cx.stack.len() + 1)
                )),
            );
            return None;
        }
        if a.role.get_ref().trim().is_empty() {
            self.perr(
                &a.role,
                "agents.role",
                "must not be empty".into(),
                Some("describe what the agent does, e.g. `Product manager`".into()),
            );
        } else if a.role.get_ref().contains('\0') {
            self.perr(
                &a.role,
                "agents.role",
                "contains a NUL character, which the agent's files cannot carry".into(),
                Some("remove the `\\u0000` escape".into()),
            );
        }
        let instance_type = match (&a.instance_type, &cx.provider.default_type) {
            (Some(t), _) => {
                if let Err(e) = size_name(t.get_ref()) {
                    self.perr(t, "agents.instance_type", e, None);
                }
                t.get_ref().clone()
            }
            (None, Some(t)) => t.clone(),
            (None, None) => {
                self.perr(
                    &a.name,
                    "agents.instance_type",
                    format!(
                        "agent `{aname}` has no instance type and the stack sets no `{}`",
                        cx.provider.type_key
                    ),
                    Some(format!(
                        "add `{} = ...` to {}",
                        cx.provider.type_key,
                        self.ssrc.path.display()
                    )),
                );
                String::new()
            }
        };
        let disk_gb = self
            .disk(&a.disk_gb, "agents.disk_gb", true)
            .or(cx.defaults.stack_disk_gb)
            .unwrap_or(cx.defaults.disk_gb);
        let mut env = cx.defaults.env.clone();
        env.extend(self.env_table(&a.env, "agents.env"));
        let workspace_files = match &a.workspace {
            Some(w) => self.workspace(w),
            None => BTreeMap::new(),
        };
        // The model and where it was set: (span, set in the project file).
        let at =
            |m: &Option<Spanned<String>>, in_project| m.as_ref().map(|m| (m.span(), in_project));
        let model = self
            .model_ref(&a.model, "agents.model", true)
            .map(|m| (m, at(&a.model, true)))
            .or_else(|| {
                cx.defaults
                    .stack_model
                    .clone()
                    .map(|m| (m, at(&cx.s.model, false)))
            })
            .or_else(|| {
                cx.defaults
                    .model
                    .clone()
                    .map(|m| (m, at(&cx.p.defaults.model, true)))
            });
        let coding_agents = match &a.coding_agents {
            Some(_) => self.coding_agents(&a.coding_agents, "agents.coding_agents"),
            None => cx.defaults.coding_agents.clone(),
        };
        let mut openclaw = cx.defaults.openclaw.clone();
        oc::merge(
            &mut openclaw,
            &self.passthrough(&a.openclaw, "agents.openclaw", true),
        );
        let agent = Agent {
            name: aname.clone(),
            role: a.role.get_ref().clone(),
            hostname: host,
            fqdn: naming::fqdn(cx.stack, &aname, cx.tailnet),
            instance_type,
            image: cx.s.image.as_ref().map(|i| i.get_ref().clone()),
            disk_gb,
            env,
            workspace_files,
            secrets: cx
                .secrets
                .iter()
                .filter(|(k, _)| naming::is_env_name(k) && !RESERVED_SECRETS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            model: model.as_ref().map(|(m, _)| m.clone()),
            coding_agents,
            openclaw,
            token_generation: 0,
        };
        Some((agent, model.and_then(|(_, src)| src)))
    }

    /// `[agent_secrets.<agent>]`: secrets for one agent only.
    fn agent_secrets(&mut self, s: &RawStack, agents: &mut [Agent]) {
        for (agent, table) in &s.agent_secrets {
            let field = format!("agent_secrets.{}", agent.get_ref());
            let parsed = self.secret_table(table, &field);
            match agents.iter_mut().find(|a| &a.name == agent.get_ref()) {
                Some(a) => {
                    for (k, v) in parsed {
                        if RESERVED_SECRETS.contains(&k.as_str()) {
                            continue;
                        }
                        a.secrets.insert(k, v);
                    }
                }
                None => self.unknown_agent(agent, &field, agents),
            }
        }
    }

    /// `[token_generations]`: known agents, and only with a seed to derive from.
    fn token_generations(
        &mut self,
        s: &RawStack,
        secrets: &BTreeMap<String, SecretRef>,
        stack: &str,
        agents: &mut [Agent],
    ) {
        for (agent, generation) in &s.token_generations {
            let field = format!("token_generations.{}", agent.get_ref());
            if !secrets.contains_key(GATEWAY_SEED) {
                self.serr(
                    generation,
                    &field,
                    format!("token generations need the stack's `{GATEWAY_SEED}` secret"),
                    Some(format!(
                        "run `agent-army secrets set {GATEWAY_SEED} --generate --stack {stack}`"
                    )),
                );
            }
            match agents.iter_mut().find(|a| &a.name == agent.get_ref()) {
                Some(a) => a.token_generation = *generation.get_ref(),
                None => self.unknown_agent(agent, &field, agents),
            }
        }
    }

    /// Reserved secret names are stack-level only: not in `[agent_secrets.<agent>]`.
    fn reserved_agent_secrets(&mut self, s: &RawStack) {
        for (agent, table) in &s.agent_secrets {
            for k in table.keys() {
                if RESERVED_SECRETS.contains(&k.get_ref().as_str()) {
                    self.serr(
                        k,
                        &format!("agent_secrets.{}.{}", agent.get_ref(), k.get_ref()),
                        format!("`{}` is a stack-wide secret", k.get_ref()),
                        Some("move it to `[secrets]`".into()),
                    );
                }
            }
        }
    }

    /// A stack-file table names an agent the project does not have.
    fn unknown_agent(&mut self, agent: &Spanned<String>, field: &str, agents: &[Agent]) {
        let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
        let help = suggest(agent.get_ref(), &names)
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| Some(format!("agents are: {}", names.join(", "))));
        self.serr(
            agent,
            field,
            format!("no agent named `{}` in {PROJECT_FILE}", agent.get_ref()),
            help,
        );
    }

    fn err_at<T>(&mut self, in_project: bool, s: &Spanned<T>, field: &str, msg: String) {
        if in_project {
            self.perr(s, field, msg, None);
        } else {
            self.serr(s, field, msg, None);
        }
    }

    /// `[state]`: the stack file's, else the project file's, else local.
    fn state_settings(
        &mut self,
        project: Option<&RawState>,
        stack: Option<&RawState>,
        provider: &ProviderSettings,
    ) -> StateSettings {
        let (raw, in_project) = match (stack, project) {
            (Some(s), _) => (s, false),
            (None, Some(p)) => (p, true),
            (None, None) => return StateSettings::Local,
        };
        match raw.backend.get_ref().as_str() {
            "local" => {
                if let Some(b) = &raw.bucket {
                    self.err_at(
                        in_project,
                        b,
                        "state.bucket",
                        "a bucket only applies to `backend = \"s3\"`".into(),
                    );
                }
                StateSettings::Local
            }
            "s3" => {
                let Some(bucket) = &raw.bucket else {
                    self.err_at(
                        in_project,
                        &raw.backend,
                        "state.bucket",
                        "`backend = \"s3\"` needs `bucket = \"...\"`".into(),
                    );
                    return StateSettings::Local;
                };
                if let Err(e) = check_bucket(bucket.get_ref()) {
                    self.err_at(in_project, bucket, "state.bucket", e);
                }
                let prefix = match &raw.prefix {
                    Some(p) => {
                        if let Err(e) = check_prefix(p.get_ref()) {
                            self.err_at(in_project, p, "state.prefix", e);
                        }
                        p.get_ref().trim_matches('/').to_string()
                    }
                    None => DEFAULT_STATE_PREFIX.to_string(),
                };
                let region = match (&raw.region, provider) {
                    (Some(r), _) => r.get_ref().clone(),
                    (None, ProviderSettings::Aws { region, .. }) => region.clone(),
                    (None, _) => "us-east-1".to_string(),
                };
                StateSettings::S3(S3Location {
                    bucket: bucket.get_ref().clone(),
                    prefix,
                    region,
                    path_style: raw.path_style.as_ref().is_some_and(|p| *p.get_ref()),
                })
            }
            other => {
                self.err_at(
                    in_project,
                    &raw.backend,
                    "state.backend",
                    format!("unknown state backend `{other}`; use `local` or `s3`"),
                );
                StateSettings::Local
            }
        }
    }

    /// Report a problem in the project file (`in_project`) or the stack file.
    fn err_in<T>(&mut self, in_project: bool, s: &Spanned<T>, field: &str, p: oc::Problem) {
        if in_project {
            self.perr(s, field, p.message, p.help);
        } else {
            self.serr(s, field, p.message, p.help);
        }
    }

    fn model_ref(
        &mut self,
        m: &Option<Spanned<String>>,
        field: &str,
        in_project: bool,
    ) -> Option<String> {
        let m = m.as_ref()?;
        match oc::split_model(m.get_ref()) {
            Ok(_) => Some(m.get_ref().clone()),
            Err(p) => {
                self.err_in(in_project, m, field, p);
                None
            }
        }
    }

    fn model_providers(
        &mut self,
        raw: &Option<Spanned<RawModels>>,
        in_project: bool,
        out: &mut BTreeMap<String, ModelProvider>,
    ) {
        let Some(raw) = raw else { return };
        for (name, p) in &raw.get_ref().providers {
            let field = format!("models.providers.{}", name.get_ref());
            match oc::provider(name.get_ref(), p.get_ref()) {
                Ok(v) => {
                    if let Some(k) = &p.get_ref().api_key
                        && !naming::is_env_name(k.get_ref())
                    {
                        self.err_in(
                            in_project,
                            k,
                            &format!("{field}.api_key"),
                            oc::Problem {
                                message: format!("`{}` is not a secret name", k.get_ref()),
                                help: Some("name a stack secret, e.g. `LOCAL_LLM_KEY`, and set it with `agent-army secrets set`".into()),
                            },
                        );
                        continue;
                    }
                    out.insert(name.get_ref().clone(), v);
                }
                Err(e) => self.err_in(in_project, p, &field, e),
            }
        }
    }

    fn coding_agents(&mut self, list: &Option<Vec<Spanned<String>>>, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        for spec in list.iter().flatten() {
            match oc::coding_agent(spec.get_ref()) {
                Ok(pkg) => out.push(pkg),
                Err(p) => self.err_in(true, spec, field, p),
            }
        }
        out
    }

    fn passthrough(
        &mut self,
        t: &Option<Spanned<toml::Table>>,
        field: &str,
        in_project: bool,
    ) -> serde_json::Map<String, serde_json::Value> {
        let Some(t) = t else {
            return serde_json::Map::new();
        };
        match oc::passthrough(t.get_ref()) {
            Ok(m) => m,
            Err((key, p)) => {
                self.err_in(in_project, t, &format!("{field}.{key}"), p);
                serde_json::Map::new()
            }
        }
    }

    /// Every agent's model must have its provider's key among the agent's secrets.
    fn model_keys(
        &mut self,
        agents: &[Agent],
        sources: &[Option<(std::ops::Range<usize>, bool)>],
        providers: &BTreeMap<String, ModelProvider>,
        warnings: &mut Vec<String>,
    ) {
        let mut unset = Vec::new();
        for (a, span) in agents.iter().zip(sources) {
            let Some(model) = &a.model else {
                unset.push(a.name.clone());
                continue;
            };
            let problem = match oc::required_secret(model, providers) {
                Ok(Some(secret)) if !a.secrets.contains_key(&secret) => Some(oc::Problem {
                    message: format!(
                        "agent `{}` uses model `{model}`, but no secret `{secret}` reaches it",
                        a.name
                    ),
                    help: Some(format!(
                        "add `{secret}` to `[secrets]` in {} (e.g. `{secret} = \"env:{secret}\"`, or `agent-army secrets set {secret}`)",
                        self.ssrc.path.display()
                    )),
                }),
                Ok(_) => None,
                Err(p) => Some(p),
            };
            if let Some(p) = problem {
                let (span, in_project) = span.clone().unwrap_or((0..0, true));
                let src = if in_project { self.psrc } else { self.ssrc };
                let mut d = src.at(span, "model", p.message);
                d.help = p.help;
                self.diags.push(d);
            }
        }
        if !unset.is_empty() {
            warnings.push(format!(
                "no model is set for {}: agent turns fail until you set `model` (e.g. `model = \"anthropic/claude-sonnet-5\"` under `[defaults]` in {PROJECT_FILE})",
                unset.join(", ")
            ));
        }
    }

    fn disk(&mut self, d: &Option<Spanned<u32>>, field: &str, in_project: bool) -> Option<u32> {
        let d = d.as_ref()?;
        let v = *d.get_ref();
        if !(8..=16384).contains(&v) {
            let msg = format!("{v} GB is out of range; use 8 to 16384");
            if in_project {
                self.perr(d, field, msg, None);
            } else {
                self.serr(d, field, msg, None);
            }
            return None;
        }
        Some(v)
    }

    fn env_table(
        &mut self,
        t: &BTreeMap<Spanned<String>, Spanned<String>>,
        field: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in t {
            if !naming::is_env_name(k.get_ref()) {
                self.perr(
                    k,
                    &format!("{field}.{}", k.get_ref()),
                    format!("`{}` is not a valid environment variable name", k.get_ref()),
                    Some("use letters, digits and '_', not starting with a digit".into()),
                );
                continue;
            }
            if v.get_ref().contains('\0') {
                self.perr(
                    v,
                    &format!("{field}.{}", k.get_ref()),
                    "value contains a NUL character".into(),
                    None,
                );
                continue;
            }
            out.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        out
    }

    fn secret_table(
        &mut self,
        t: &BTreeMap<Spanned<String>, Spanned<String>>,
        field: &str,
    ) -> BTreeMap<String, SecretRef> {
        let mut out = BTreeMap::new();
        let reserved: Vec<String> = RESERVED_SECRETS.iter().map(|s| s.to_string()).collect();
        for (k, v) in t {
            let name = k.get_ref();
            let f = format!("{field}.{name}");
            if !RESERVED_SECRETS.contains(&name.as_str()) && !naming::is_env_name(name) {
                self.serr(
                    k,
                    &f,
                    format!("`{name}` is not a known secret or an environment variable name"),
                    suggest(name, &reserved).map(|s| format!("did you mean `{s}`?")),
                );
                continue;
            }
            if !RESERVED_SECRETS.contains(&name.as_str())
                && name.chars().any(|c| c.is_ascii_lowercase())
            {
                let help = suggest(name, &reserved).map(|s| format!("did you mean `{s}`?")).unwrap_or_else(|| format!("agent environment secrets are upper-case (e.g. `{}`); agent-army's own are: {}", name.to_uppercase(), reserved.join(", ")));
                self.serr(k, &f, format!("`{name}` is not a known secret"), Some(help));
                continue;
            }
            match SecretRef::parse(v.get_ref()) {
                Ok(r) => {
                    out.insert(name.clone(), r);
                }
                Err(e) => {
                    let help = e.help();
                    self.serr(v, &f, e.to_string(), help);
                }
            }
        }
        out
    }

    /// An agent's `workspace` folder, as discovery read it; its problems become diagnostics.
    fn workspace(&mut self, w: &Spanned<String>) -> BTreeMap<String, Vec<u8>> {
        let workspaces = self.workspaces;
        match workspaces.get(w.get_ref()).unwrap_or(&Workspace::Missing) {
            Workspace::Outside => {
                self.perr(
                    w,
                    "agents.workspace",
                    format!("`{}` must be a folder inside the project", w.get_ref()),
                    None,
                );
                BTreeMap::new()
            }
            Workspace::Escapes { target } => {
                self.perr(
                    w,
                    "agents.workspace",
                    format!(
                        "`{}` leads outside the project (through a symlink, to {})",
                        w.get_ref(),
                        target.display()
                    ),
                    Some("a workspace is copied to the VM: use a folder inside the project, not a link to one elsewhere".into()),
                );
                BTreeMap::new()
            }
            Workspace::Missing => {
                self.perr(
                    w,
                    "agents.workspace",
                    format!("folder `{}` does not exist", w.get_ref()),
                    Some("create it, or remove `workspace`".into()),
                );
                BTreeMap::new()
            }
            Workspace::Read { files, problems } => {
                for problem in problems {
                    let msg = match problem {
                        WorkspaceProblem::Unreadable { path, error } => {
                            format!("cannot read {}: {error}", path.display())
                        }
                        WorkspaceProblem::ControlChars(relp) => {
                            format!("file name {relp:?} contains control characters")
                        }
                        WorkspaceProblem::NotRegular { path, what } => {
                            format!("`{path}` {what}; only regular files are copied to the VM")
                        }
                        WorkspaceProblem::LinkOutside { path, target } => format!(
                            "`{path}` is a symlink to {}, outside the project; it is not copied to the VM (remove the link, or copy the file into the workspace)",
                            target.display()
                        ),
                    };
                    self.perr(w, "agents.workspace", msg, None);
                }
                files.clone()
            }
        }
    }
}

/// A server size as the clouds spell them (`t3.medium`, `m7i-flex.large`, `cx22`): lowercase
/// letters, digits, `.` and `-`. Whitespace around it would reach the cloud as part of the
/// name.
/// The longest `<stack>-<agent>` on Kubernetes: 63 less the StatefulSet controller's
/// `-<hash>` of 11 characters in its pods' `controller-revision-hash` label.
const KUBERNETES_MAX_HOSTNAME: usize = 52;

/// A Kubernetes stack's provider: pods have no server type, so agents get an empty one.
fn kubernetes_provider(settings: KubernetesSettings) -> Provider {
    Provider {
        settings: ProviderSettings::Kubernetes(settings),
        type_key: "instance_type",
        default_type: Some(String::new()),
    }
}

/// A DNS subdomain as Kubernetes names most objects (RFC 1123): at most 253 characters,
/// dot-separated lowercase labels.
fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!("is {} characters long; the limit is 253", s.len()));
    }
    for label in s.split('.') {
        naming::check_dns_label(label).map_err(|e| format!("has a part `{label}` that {e}"))?;
    }
    Ok(())
}

fn size_name(t: &str) -> Result<(), String> {
    if t.trim() != t {
        return Err(format!("`{t}` has leading or trailing whitespace"));
    }
    match t
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        _ if t.is_empty() => Err("must not be empty".into()),
        Some(c) => Err(format!(
            "`{t}` contains {c:?}; server sizes are lowercase letters, digits, '.' and '-'"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::load_from_strs;

    const PROJECT: &str =
        "[project]\nname = \"demo\"\n\n[[agents]]\nname = \"agent-pm\"\nrole = \"PM\"\n";
    const STACK: &str = "provider = \"hetzner\"\nlocation = \"fsn1\"\nserver_type = \"cx22\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n";

    fn errs(project: &str, stack: &str) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        match load_from_strs(d.path(), "dev", project, stack) {
            Err(StackError::Invalid(ds)) => ds.iter().map(|d| d.to_string()).collect(),
            Err(e) => vec![format!("other: {e}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn good_config_loads() {
        let d = tempfile::tempdir().unwrap();
        let c = load_from_strs(d.path(), "dev", PROJECT, STACK).unwrap();
        assert_eq!(c.agents[0].hostname, "dev-agent-pm");
        assert_eq!(c.agents[0].fqdn, "dev-agent-pm.tail1.ts.net");
        assert_eq!(c.agents[0].instance_type, "cx22");
        assert_eq!(c.agents[0].disk_gb, DEFAULT_DISK_GB);
        assert_eq!(c.openclaw_version, super::oc::PINNED_OPENCLAW_VERSION);
        // No model anywhere: loadable, with a warning naming the agents.
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("no model is set for agent-pm"));
    }

    #[test]
    fn models_need_their_provider_key() {
        let with = |defaults: &str, stack_extra: &str| {
            let project = PROJECT.replacen(
                "[project]",
                &format!("[defaults]\n{defaults}\n\n[project]"),
                1,
            );
            let top = if stack_extra.is_empty() {
                ""
            } else {
                "model = \"local/qwen3\"\n"
            };
            errs(&project, &format!("{top}{STACK}{stack_extra}"))
        };
        // Built-in provider without its key.
        let e = with("model = \"openai/gpt-5\"", "");
        assert!(
            e.iter().any(|e| e.contains("agent-army.toml")
                && e.contains("`model`")
                && e.contains("no secret `OPENAI_API_KEY` reaches it")),
            "{e:?}"
        );
        // Unknown provider.
        let e = with("model = \"acme/x\"", "");
        assert!(
            e.iter()
                .any(|e| e.contains("unknown model provider `acme`")),
            "{e:?}"
        );
        // Owned pass-through key.
        let e = with("[defaults.openclaw.gateway]\nport = 1", "");
        assert!(
            e.iter()
                .any(|e| e.contains("defaults.openclaw.gateway.port")
                    && e.contains("set by agent-army")),
            "{e:?}"
        );
        // Unknown coding agent.
        let e = with("coding_agents = [\"cursor\"]", "");
        assert!(
            e.iter()
                .any(|e| e.contains("`cursor` is not a coding agent")),
            "{e:?}"
        );
        // A stack-level custom provider whose key the stack has.
        let e = with(
            "",
            "\n[models.providers.local]\nbase_url = \"http://10.0.0.5:8000/v1\"\napi_key = \"LOCAL_LLM_KEY\"\nmodels = [\"qwen3\"]\n",
        );
        assert!(
            e.iter()
                .any(|e| e.contains("stacks/dev.toml") && e.contains("no secret `LOCAL_LLM_KEY`")),
            "{e:?}"
        );
    }

    const K8S: &str = "provider = \"kubernetes\"\ntailnet = \"tail1.ts.net\"\n\n[kubernetes]\nnamespace = \"agents\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n";

    #[test]
    fn kubernetes_stack_and_its_defaults() {
        let c = load_from_strs(std::path::Path::new("/p"), "dev", PROJECT, K8S).unwrap();
        let ProviderSettings::Kubernetes(k) = &c.provider else {
            panic!("{:?}", c.provider)
        };
        assert_eq!(k.namespace, "agents");
        assert_eq!(k.tailscale_mode, TailscaleMode::Userspace);
        assert_eq!(k.context, None);
        assert_eq!(k.storage_class, None);
        assert_eq!(k.tailscale_state_gb, DEFAULT_TAILSCALE_STATE_GB);
        assert_eq!(k.node_image, default_node_image());
        assert_eq!(c.provider.place(), "agents");
        assert_eq!(c.agents[0].hostname, "dev-agent-pm");
        assert_eq!(c.agents[0].disk_gb, DEFAULT_DISK_GB);
        let with = K8S.replace(
            "namespace = \"agents\"",
            "namespace = \"agents\"\ncontext = \"kind-dev\"\nstorage_class = \"fast.ssd\"\ntailscale_mode = \"kernel\"",
        );
        let c = load_from_strs(std::path::Path::new("/p"), "dev", PROJECT, &with).unwrap();
        let ProviderSettings::Kubernetes(k) = &c.provider else {
            panic!("{:?}", c.provider)
        };
        assert_eq!(k.context.as_deref(), Some("kind-dev"));
        assert_eq!(k.storage_class.as_deref(), Some("fast.ssd"));
        assert_eq!(k.tailscale_mode, TailscaleMode::Kernel);
    }

    #[test]
    fn kubernetes_errors_name_file_line_and_field() {
        let e = errs(
            PROJECT,
            &K8S.replace("namespace = \"agents\"", "namespace = \"Agents\""),
        );
        assert_eq!(
            e,
            vec!["stacks/dev.toml:5:13: `kubernetes.namespace`: namespace `Agents` contains 'A'; only lowercase letters a-z, digits 0-9 and '-' are allowed\n  help: Kubernetes namespaces are lowercase DNS labels, such as `agents-dev`".to_string()]
        );
        let e = errs(
            PROJECT,
            &K8S.replace("namespace = \"agents\"", "tailscale_mode = \"kernal\""),
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(
                "stacks/dev.toml:4:1: `kubernetes.namespace`: missing required key `namespace`"
            ),
            "{e:?}"
        );
        assert_eq!(
            e[1],
            "stacks/dev.toml:5:18: `kubernetes.tailscale_mode`: `kernal` is not a Tailscale mode\n  help: did you mean `kernel`? use `userspace` (no capability, the default) or `kernel` (NET_ADMIN and /dev/net/tun)"
        );
        let e = errs(
            PROJECT,
            &K8S.replace("[kubernetes]\nnamespace = \"agents\"\n", ""),
        );
        assert_eq!(
            e,
            vec!["stacks/dev.toml:1:12: `kubernetes`: missing required table `[kubernetes]` for provider `kubernetes`\n  help: add `[kubernetes]` with `namespace = \"...\"`".to_string()]
        );
        // VM settings are refused, not ignored.
        let e = errs(
            PROJECT,
            &format!("server_type = \"cx22\"\nallowed_ssh_cidrs = [\"10.0.0.0/8\"]\n{K8S}"),
        );
        assert!(e[0].starts_with("stacks/dev.toml:1:15: `server_type`: `server_type` is not a setting of Kubernetes stacks"), "{e:?}");
        assert!(
            e[1].starts_with(
                "stacks/dev.toml:2:22: `allowed_ssh_cidrs`: pods have no ssh port to open"
            ),
            "{e:?}"
        );
        // And `[kubernetes]` on a cloud stack.
        let e = errs(
            PROJECT,
            &format!("{STACK}\n[kubernetes]\nnamespace = \"x\"\n"),
        );
        assert!(
            e[0].contains(
                "`[kubernetes]` settings are only valid when `provider = \"kubernetes\"`"
            ),
            "{e:?}"
        );
        let e = errs(
            PROJECT,
            &K8S.replace(
                "namespace = \"agents\"",
                "namespace = \"agents\"\nstorage_class = \"Fast\"",
            ),
        );
        assert!(e[0].contains("`kubernetes.storage_class`: storage class `Fast` has a part `Fast` that contains 'F'"), "{e:?}");
        // The sidecars need the key itself: an OAuth client mints none for them.
        let e = errs(
            PROJECT,
            &K8S.replace(
                "tailscale_auth_key = \"env:TS_AUTHKEY\"",
                "tailscale_oauth_client_id = \"env:ID\"\ntailscale_oauth_client_secret = \"env:S\"",
            ),
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("stacks/dev.toml:1:1: `secrets.tailscale_auth_key`: missing required secret `tailscale_auth_key`: a Kubernetes stack's sidecars log in with it"),
            "{e:?}"
        );
        // `<stack>-<agent>` of 52 characters at most: 53 is refused on Kubernetes only.
        let long = |n: usize| {
            PROJECT.replace(
                "agent-pm",
                &format!("agent-{}", "p".repeat(n - "dev-agent-".len())),
            )
        };
        assert_eq!(errs(&long(52), K8S), Vec::<String>::new());
        let e = errs(&long(53), K8S);
        assert!(
            e[0].contains("characters; on Kubernetes it names a StatefulSet, whose pods need it to be at most 52")
                && e[0].contains("shorten the agent name to at most 48 characters"),
            "{e:?}"
        );
        assert_eq!(errs(&long(53), STACK), Vec::<String>::new());
    }

    #[test]
    fn unknown_key_suggests() {
        let e = errs(PROJECT, &STACK.replace("location", "locaton"));
        assert_eq!(
            e[0],
            "stacks/dev.toml:2:1: `locaton`: unknown key `locaton`\n  help: did you mean `location`?"
        );
    }

    #[test]
    fn duplicate_agents() {
        let p = format!("{PROJECT}\n[[agents]]\nname = \"agent-pm\"\nrole = \"again\"\n");
        let e = errs(&p, STACK);
        assert_eq!(e, vec!["agent-army.toml:9:8: `agents.name`: duplicate agent name `agent-pm` (first defined on line 5)\n  help: agent names must be unique".to_string()]);
    }

    #[test]
    fn hostname_too_long() {
        let long = "a".repeat(60);
        let e = errs(&PROJECT.replace("agent-pm", &long), STACK);
        assert!(
            e[0].contains(&format!(
                "hostname `dev-{long}` is 64 characters long; the limit is 63"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn bad_cidr_and_warning() {
        let e = errs(
            PROJECT,
            &format!("allowed_ssh_cidrs = [\"10.0.0.0/33\"]\n{STACK}"),
        );
        assert_eq!(
            e[0],
            "stacks/dev.toml:1:22: `allowed_ssh_cidrs`: `10.0.0.0/33` is not a CIDR block\n  help: write an address and prefix length, e.g. `203.0.113.7/32`"
        );
        let d = tempfile::tempdir().unwrap();
        let stack = format!("allowed_ssh_cidrs = [\"203.0.113.7/32\"]\n{STACK}");
        let c = load_from_strs(d.path(), "dev", PROJECT, &stack).unwrap();
        assert!(c.warnings[0].contains("opens port 22 to 203.0.113.7/32"));
    }

    #[test]
    fn missing_required() {
        let e = errs(PROJECT, &STACK.replace("tailnet = \"tail1.ts.net\"\n", ""));
        assert!(
            e[0].contains("`tailnet`: missing required key `tailnet`"),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_provider_key() {
        let e = errs(PROJECT, &STACK.replace("location", "region"));
        assert!(
            e.iter()
                .any(|x| x.contains("`region` is not a setting of Hetzner stacks")),
            "{e:?}"
        );
    }
}
