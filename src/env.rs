//! The one seam through which agent-army reads its environment.
//!
//! Every environment variable the tool reads is declared in [`vars`]; code never calls
//! `std::env::var` directly, so tests can hand the program an exact environment and nothing
//! leaks in from the developer's shell. (The AWS SDK reads its own standard variables, such as
//! `AWS_ENDPOINT_URL`, through its own provider chain.)

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Names of every environment variable agent-army reads.
pub mod vars {
    /// Stack to operate on when `--stack` is not given.
    pub const STACK: &str = "AGENT_ARMY_STACK";
    /// Path of the age identity file used to decrypt secrets.
    pub const IDENTITY: &str = "AGENT_ARMY_IDENTITY";
    /// Passphrase for passphrase-encrypted stacks (CI).
    pub const PASSPHRASE: &str = "AGENT_ARMY_PASSPHRASE";
    /// Directory that holds state, locks and known_hosts (default `<project>/.agent-army`).
    pub const STATE_DIR: &str = "AGENT_ARMY_STATE_DIR";
    /// Log filter for `tracing` (same syntax as `RUST_LOG`).
    pub const LOG: &str = "AGENT_ARMY_LOG";
    /// Set by CI systems; makes agent-army non-interactive with plain log lines.
    pub const CI: &str = "CI";
    /// Hetzner Cloud API token (as the `hcloud` CLI).
    pub const HCLOUD_TOKEN: &str = "HCLOUD_TOKEN";
    /// Hetzner Cloud API base URL (as the `hcloud` CLI).
    pub const HCLOUD_ENDPOINT: &str = "HCLOUD_ENDPOINT";
    /// Disables colour.
    pub const NO_COLOR: &str = "NO_COLOR";
    /// Colour even when stdout is not a terminal (any value but `0`), unless `--color never`.
    pub const CLICOLOR_FORCE: &str = "CLICOLOR_FORCE";
    /// Home directory, for the default identity path.
    pub const HOME: &str = "HOME";
    /// Base URL of the Tailscale API (tests point it at a fake).
    pub const TAILSCALE_API: &str = "AGENT_ARMY_TAILSCALE_API";
    /// Seconds between provider polls (tests shorten it).
    pub const POLL_INTERVAL_MS: &str = "AGENT_ARMY_POLL_INTERVAL_MS";
    /// Where `tailscale` and `ssh` are looked up.
    pub const PATH: &str = "PATH";
    /// `ssh` with OpenSSH: connect to this address instead of the agent's MagicDNS name (the
    /// host key is still checked under the MagicDNS name). For tests and unusual networks.
    pub const SSH_HOST_OVERRIDE: &str = "AGENT_ARMY_SSH_HOST_OVERRIDE";
    /// `ssh` with OpenSSH: port to connect to (default 22).
    pub const SSH_PORT: &str = "AGENT_ARMY_SSH_PORT";
    /// `ssh` with OpenSSH: private key file to use (`ssh -i`).
    pub const SSH_IDENTITY: &str = "AGENT_ARMY_SSH_IDENTITY";
    /// `status`: URL probed for each agent's gateway; `{host}` is replaced by its MagicDNS
    /// name (default `https://{host}/control-ui-config.json`).
    pub const GATEWAY_PROBE_URL: &str = "AGENT_ARMY_GATEWAY_PROBE_URL";
    /// Longest wait, in milliseconds, for one attempt of one cloud API call before it is
    /// retried (default: 60 s on AWS, 90 s on Hetzner). Tests shorten it.
    pub const REQUEST_TIMEOUT_MS: &str = "AGENT_ARMY_REQUEST_TIMEOUT_MS";
    /// `open --browser`: the program that opens a URL (the usual convention; default
    /// `xdg-open`, or `open` on macOS).
    pub const BROWSER: &str = "BROWSER";
    /// Where state lives, overriding the files' `[state]`: `local`, or
    /// `s3://BUCKET[/PREFIX][?region=R&path_style=true]`.
    pub const STATE: &str = "AGENT_ARMY_STATE";
    /// Kubernetes stacks: the kubeconfig files (a `:`-separated list, merged as kubectl does),
    /// else `~/.kube/config`.
    pub const KUBECONFIG: &str = "KUBECONFIG";
    /// Set for an exec credential plugin (never read): the `ExecCredential` request.
    pub const KUBERNETES_EXEC_INFO: &str = "KUBERNETES_EXEC_INFO";
    /// Docker stacks: the engine's socket (`unix:///path`) when the stack names none.
    pub const DOCKER_HOST: &str = "DOCKER_HOST";
    /// Set in every pod: the in-cluster API server, used when there is no kubeconfig.
    pub const KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
    pub const KUBERNETES_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
    /// The S3 endpoint of a remote state backend (the AWS SDK's standard variables; unset:
    /// AWS itself).
    pub const AWS_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
    pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
    /// The AWS SDK's own credential sources, looked at (never read for values) only to decide
    /// whether an offline `plan` may ask the cloud: static keys, a profile, web identity, and
    /// container credentials.
    pub const AWS_CREDENTIAL_HINTS: &[&str] = &[
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ];
}

/// A snapshot of the process environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// Snapshot the real process environment (only called from `main`).
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment made of exactly these pairs (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`, if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether we run under CI (`CI` set to anything but `false`/`0`).
    pub fn is_ci(&self) -> bool {
        matches!(self.get(vars::CI), Some(v) if v != "false" && v != "0")
    }

    /// The user's home directory.
    pub fn home(&self) -> Option<PathBuf> {
        self.get(vars::HOME).map(PathBuf::from)
    }

    /// Default location of the age identity file.
    pub fn identity_path(&self) -> Option<PathBuf> {
        if let Some(p) = self.get(vars::IDENTITY) {
            return Some(PathBuf::from(p));
        }
        self.home()
            .map(|h| h.join(".config").join("agent-army").join("identity.txt"))
    }

    /// Poll interval for waiting on cloud state.
    pub fn poll_interval(&self) -> std::time::Duration {
        let ms = self
            .get(vars::POLL_INTERVAL_MS)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(3000);
        std::time::Duration::from_millis(ms)
    }
}

impl Env {
    /// Per-attempt timeout of cloud API calls, when set ([`vars::REQUEST_TIMEOUT_MS`]).
    pub fn request_timeout(&self) -> Option<std::time::Duration> {
        self.get(vars::REQUEST_TIMEOUT_MS)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_detection() {
        assert!(Env::from_pairs([("CI", "true")]).is_ci());
        assert!(Env::from_pairs([("CI", "1")]).is_ci());
        assert!(!Env::from_pairs([("CI", "false")]).is_ci());
        assert!(!Env::from_pairs([("CI", "")]).is_ci());
        assert!(!Env::from_pairs::<[(&str, &str); 0], _, _>([]).is_ci());
    }

    #[test]
    fn identity_path_prefers_variable() {
        let env = Env::from_pairs([("HOME", "/home/u"), ("AGENT_ARMY_IDENTITY", "/k.txt")]);
        assert_eq!(env.identity_path(), Some(PathBuf::from("/k.txt")));
        let env = Env::from_pairs([("HOME", "/home/u")]);
        assert_eq!(
            env.identity_path(),
            Some(PathBuf::from("/home/u/.config/agent-army/identity.txt"))
        );
    }
}
