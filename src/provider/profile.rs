//! What the rest of agent-army needs to know about a cloud, in one place: names, defaults,
//! limits and policies. Code outside `provider/` asks the profile instead of matching on the
//! provider kind.

use crate::stack::ProviderKind;

/// How user data over the raw limit is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// The whole document gzipped (cloud-init detects gzip): AWS.
    GzipWhole,
    /// Each file gzipped and base64-encoded inside a plain document (the API refuses raw
    /// gzip): Hetzner.
    GzipFiles,
}

/// The user-data limit: `limit` units, counted as `unit`.
#[derive(Debug, Clone, Copy)]
pub struct UserDataLimit {
    pub limit: usize,
    /// "bytes" or "characters".
    pub unit: &'static str,
    pub packing: Packing,
}

impl UserDataLimit {
    /// The size of `doc` in this limit's unit.
    pub fn measure(&self, doc: &[u8]) -> usize {
        match self.unit {
            "characters" => String::from_utf8_lossy(doc).chars().count(),
            _ => doc.len(),
        }
    }
}

/// The image agents run when the stack sets none.
#[derive(Debug, Clone, Copy)]
pub struct DefaultImage {
    /// What the plan shows and the fingerprint hashes: changing it replaces the agents that
    /// use the default.
    pub shown: &'static str,
    /// What the create call asks the cloud for: the image name (Hetzner) or the AMI name
    /// pattern, newest match wins (AWS). `{arch}` stands for the size's CPU architecture as
    /// the image names spell it ([`Profile::image_arch`]).
    pub lookup: &'static str,
}

impl DefaultImage {
    /// The shown name and the lookup for a server of architecture `arch` (`None`: the cloud
    /// picks the image by the server type itself). The shown name of x86_64 stays the name
    /// agents were fingerprinted with before architectures were told apart; others name it
    /// after the release (`ubuntu-24.04 arm64 (…)`), so moving between them replaces.
    pub fn for_arch(&self, arch: Option<&str>) -> (String, String) {
        match arch {
            Some(a) => {
                let shown = match (a, self.shown.split_once(' ')) {
                    ("amd64", _) => self.shown.to_string(),
                    (_, Some((release, rest))) => format!("{release} {a} {rest}"),
                    (_, None) => format!("{} {a}", self.shown),
                };
                (shown, self.lookup.replacen("{arch}", a, 1))
            }
            None => (self.shown.to_string(), self.lookup.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct Profile {
    pub kind: ProviderKind,
    /// "AWS", "Hetzner".
    pub name: &'static str,
    /// The stack's network resource: "security group", "firewall".
    pub network_noun: &'static str,
    /// A server: "instance", "server".
    pub server_noun: &'static str,
    /// A server size: "instance type", "server type".
    pub size_noun: &'static str,
    pub default_image: DefaultImage,
    /// Whether `disk_gb` applies (Hetzner disks come with the server type).
    pub disk_configurable: bool,
    /// Whether the stack needs a break-glass SSH key (Hetzner mails a root password for a
    /// server created without any key).
    pub break_glass_key: bool,
    pub user_data: UserDataLimit,
    /// Why list prices cannot be read, when they cannot.
    pub no_prices: Option<&'static str>,
    /// A stack file's place and size lines for `init`.
    pub scaffold: &'static str,
    /// The image architecture a server size needs, as the default image's name spells it,
    /// when the image must be chosen by it (AWS: an AMI is one architecture; Hetzner picks
    /// the image by the server type).
    pub image_arch: Option<fn(&str) -> &'static str>,
    /// Whether a place (region, location) is spelled as this cloud spells them; the error
    /// says what is wrong. Whether it exists is the cloud's to say.
    pub check_place: fn(&str) -> Result<(), String>,
    /// The default image's login user: the one `deploy` connects as to update an agent in
    /// place (through `sudo -n` unless root).
    pub login_user: &'static str,
}

/// The CPU architecture of an EC2 instance type, as Ubuntu's AMI names spell it. The type's
/// family is `<class><generation><attributes>`; the attribute `g` means AWS Graviton (arm64),
/// as in `t4g`, `m7g`, `c7gn`, `x2gd`, `im4gn`, `is4gen`; `a1` is the first Graviton.
/// Everything else is x86_64 (`amd64`).
pub fn ec2_arch(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or("");
    if family == "a1" {
        return "arm64";
    }
    let rest = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return "amd64";
    }
    let attributes = rest[digits..].split('-').next().unwrap_or("");
    if attributes.contains('g') {
        "arm64"
    } else {
        "amd64"
    }
}

/// An AWS region: `<area>-<direction or name>-<n>`, lowercase (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`, `ap-southeast-7`).
fn check_aws_region(r: &str) -> Result<(), String> {
    let parts: Vec<&str> = r.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err("is not an AWS region name (like `us-east-1` or `eu-central-1`)".into())
    }
}

/// A Hetzner location: lowercase letters, then digits (`fsn1`, `nbg1`, `hel1`, `ash`, `hil`,
/// `sin`).
fn check_hetzner_location(l: &str) -> Result<(), String> {
    let letters = l.trim_end_matches(|c: char| c.is_ascii_digit());
    if !letters.is_empty() && letters.len() <= 8 && letters.chars().all(|c| c.is_ascii_lowercase())
    {
        Ok(())
    } else {
        Err(
            "is not a Hetzner location name (like `fsn1`, `nbg1`, `hel1`, `ash`, `hil` or `sin`)"
                .into(),
        )
    }
}

pub const AWS: Profile = Profile {
    kind: ProviderKind::Aws,
    name: "AWS",
    network_noun: "security group",
    server_noun: "instance",
    size_noun: "instance type",
    default_image: DefaultImage {
        shown: "ubuntu-24.04 (newest Canonical AMI)",
        lookup: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*",
    },
    disk_configurable: true,
    break_glass_key: false,
    user_data: UserDataLimit {
        limit: 16384,
        unit: "bytes",
        packing: Packing::GzipWhole,
    },
    no_prices: Some("agent-army has no price source for AWS"),
    scaffold: "region = \"us-east-1\"\ninstance_type = \"t3.medium\"",
    image_arch: Some(ec2_arch),
    check_place: check_aws_region,
    login_user: "ubuntu",
};

pub const HETZNER: Profile = Profile {
    kind: ProviderKind::Hetzner,
    name: "Hetzner",
    network_noun: "firewall",
    server_noun: "server",
    size_noun: "server type",
    default_image: DefaultImage {
        shown: "ubuntu-24.04",
        lookup: "ubuntu-24.04",
    },
    disk_configurable: false,
    break_glass_key: true,
    user_data: UserDataLimit {
        limit: 32768,
        unit: "characters",
        packing: Packing::GzipFiles,
    },
    no_prices: None,
    scaffold: "location = \"fsn1\"\nserver_type = \"cx22\"",
    image_arch: None,
    check_place: check_hetzner_location,
    login_user: "root",
};

/// A Kubernetes namespace (checked by validation itself, as `[kubernetes] namespace`).
fn check_namespace(n: &str) -> Result<(), String> {
    crate::naming::check_dns_label(n).map_err(|e| e.to_string())
}

/// Kubernetes: agents are pods, so most of a cloud's settings do not apply. The VM-only
/// commands are refused for it before they reach these values (see `cli::vm_only`).
pub const KUBERNETES: Profile = Profile {
    kind: ProviderKind::Kubernetes,
    name: "Kubernetes",
    network_noun: "NetworkPolicy",
    server_noun: "pod",
    size_noun: "resources",
    default_image: DefaultImage {
        shown: "node (the pinned Node.js version)",
        lookup: "",
    },
    disk_configurable: true,
    break_glass_key: false,
    // No user data: manifests are applied to the API server. The limit is the API server's
    // default request body limit (3 MiB), which a stack's manifests stay far below.
    user_data: UserDataLimit {
        limit: 3 * 1024 * 1024,
        unit: "bytes",
        packing: Packing::GzipWhole,
    },
    no_prices: Some("a cluster has no list prices"),
    scaffold: "[kubernetes]\nnamespace = \"agents\"",
    image_arch: None,
    check_place: check_namespace,
    login_user: "root",
};

/// Docker: agents are containers of a local engine; like Kubernetes, most of a cloud's
/// settings do not apply.
pub const DOCKER: Profile = Profile {
    kind: ProviderKind::Docker,
    name: "Docker",
    network_noun: "network",
    server_noun: "container",
    size_noun: "resources",
    default_image: DefaultImage {
        shown: "agent-army-local/openclaw (scripts/docker-setup)",
        lookup: "",
    },
    disk_configurable: false,
    break_glass_key: false,
    // No user data: the configuration is copied into the container.
    user_data: UserDataLimit {
        limit: 64 * 1024 * 1024,
        unit: "bytes",
        packing: Packing::GzipWhole,
    },
    no_prices: Some("a local engine has no prices"),
    scaffold: "# [docker]\n# openclaw_image = \"agent-army-local/openclaw:...\"",
    image_arch: None,
    check_place: |_| Ok(()),
    login_user: "openclaw",
};

/// The profile of a cloud.
pub fn profile(kind: ProviderKind) -> &'static Profile {
    match kind {
        ProviderKind::Aws => &AWS,
        ProviderKind::Hetzner => &HETZNER,
        ProviderKind::Kubernetes => &KUBERNETES,
        ProviderKind::Docker => &DOCKER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profile_is_its_own_kind() {
        for kind in [
            ProviderKind::Aws,
            ProviderKind::Hetzner,
            ProviderKind::Kubernetes,
            ProviderKind::Docker,
        ] {
            assert_eq!(profile(kind).kind, kind);
        }
    }

    #[test]
    fn ec2_types_map_to_their_architecture() {
        for t in [
            "t4g.small",
            "m7g.large",
            "c7gn.xlarge",
            "x2gd.medium",
            "im4gn.large",
            "is4gen.large",
            "a1.medium",
            "r8g.large",
            "hpc7g.4xlarge",
            "g5g.xlarge",
            "i4g.large",
        ] {
            assert_eq!(ec2_arch(t), "arm64", "{t}");
        }
        for t in [
            "t3.medium",
            "m7i-flex.large",
            "c7a.large",
            "g5.xlarge",
            "g4ad.xlarge",
            "inf2.xlarge",
            "p5.48xlarge",
            "z1d.large",
            "u-6tb1.metal",
            "mac2.metal",
            "",
            "weird",
        ] {
            assert_eq!(ec2_arch(t), "amd64", "{t}");
        }
    }

    #[test]
    fn arm_images_are_named_apart_and_amd64_keeps_its_old_name() {
        let (shown, lookup) = AWS.default_image.for_arch(Some("arm64"));
        assert_eq!(shown, "ubuntu-24.04 arm64 (newest Canonical AMI)");
        assert_eq!(
            lookup,
            "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*"
        );
        let (shown, lookup) = AWS.default_image.for_arch(Some("amd64"));
        assert_eq!(shown, "ubuntu-24.04 (newest Canonical AMI)");
        assert_eq!(
            lookup,
            "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
        );
        assert_eq!(HETZNER.default_image.for_arch(None).1, "ubuntu-24.04");
    }

    #[test]
    fn places_are_checked_for_their_spelling() {
        for r in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-7",
        ] {
            assert!((AWS.check_place)(r).is_ok(), "{r}");
        }
        for r in [
            "us-east",
            "US-EAST-1",
            "../../x",
            "us-east-1/",
            "eu central 1",
            "us--1",
        ] {
            assert!((AWS.check_place)(r).is_err(), "{r}");
        }
        for l in ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] {
            assert!((HETZNER.check_place)(l).is_ok(), "{l}");
        }
        for l in ["FSN1", "fsn-1", "fsn1/x", "1", "", "fsn1 "] {
            assert!((HETZNER.check_place)(l).is_err(), "{l}");
        }
    }

    /// The fingerprinted name and the looked-up image must move together: a new default
    /// release that only changed the lookup would not replace anything.
    #[test]
    fn the_shown_default_image_names_the_release_the_lookup_finds() {
        for p in [&AWS, &HETZNER] {
            let (shown, lookup) = p.default_image.for_arch(Some("amd64"));
            let release = shown
                .split_whitespace()
                .next()
                .and_then(|s| s.strip_prefix("ubuntu-"))
                .expect("shown as ubuntu-<release>");
            assert!(
                lookup.contains(release),
                "{}: {:?}",
                p.name,
                p.default_image
            );
        }
    }
}
