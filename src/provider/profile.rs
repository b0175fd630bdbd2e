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
    /// pattern, newest match wins (AWS).
    pub lookup: &'static str,
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
}

pub const AWS: Profile = Profile {
    kind: ProviderKind::Aws,
    name: "AWS",
    network_noun: "security group",
    server_noun: "instance",
    size_noun: "instance type",
    default_image: DefaultImage {
        shown: "ubuntu-24.04 (newest Canonical AMI)",
        lookup: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*",
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
};

/// The profile of a cloud.
pub fn profile(kind: ProviderKind) -> &'static Profile {
    match kind {
        ProviderKind::Aws => &AWS,
        ProviderKind::Hetzner => &HETZNER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profile_is_its_own_kind() {
        for kind in [ProviderKind::Aws, ProviderKind::Hetzner] {
            assert_eq!(profile(kind).kind, kind);
        }
    }

    /// The fingerprinted name and the looked-up image must move together: a new default
    /// release that only changed the lookup would not replace anything.
    #[test]
    fn the_shown_default_image_names_the_release_the_lookup_finds() {
        for p in [&AWS, &HETZNER] {
            let release = p
                .default_image
                .shown
                .split_whitespace()
                .next()
                .and_then(|s| s.strip_prefix("ubuntu-"))
                .expect("shown as ubuntu-<release>");
            assert!(
                p.default_image.lookup.contains(release),
                "{}: {:?}",
                p.name,
                p.default_image
            );
        }
    }
}
