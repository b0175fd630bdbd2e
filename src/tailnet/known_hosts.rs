//! The per-stack known_hosts file agent-army uses when it connects with OpenSSH, and
//! [`forget_host`], which drops an agent's entry when its server is replaced.

use std::path::{Path, PathBuf};

/// The known_hosts file agent-army uses for a stack's agents when it connects with OpenSSH.
pub fn known_hosts_path(base_dir: &Path, stack: &str) -> PathBuf {
    base_dir.join("known_hosts").join(stack)
}

/// Drop the known_hosts entries of `host` from the stack's file, so the next connection
/// accepts the key of a replaced server instead of refusing it as changed.
///
/// `host` is the agent's MagicDNS name, or its hostname `<stack>-<agent>` (which then matches
/// the name in any tailnet). Returns how many entries were removed; a missing file is fine.
pub fn forget_host(base_dir: &Path, stack: &str, host: &str) -> std::io::Result<usize> {
    let path = known_hosts_path(base_dir, stack);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let (kept, removed) = without_host(&text, host);
    if removed > 0 {
        crate::fsutil::write_private_atomic(&path, kept.as_bytes())?;
    }
    Ok(removed)
}

/// Whether one known_hosts host pattern names `host`.
fn pattern_matches(pattern: &str, host: &str) -> bool {
    // `[name]:port` for non-standard ports.
    let name = match pattern.strip_prefix('[').and_then(|p| p.split_once("]:")) {
        Some((n, _)) => n,
        None => pattern,
    };
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    // A bare hostname also matches its MagicDNS names.
    !host.contains('.')
        && name.len() > host.len() + 1
        && name[..host.len()].eq_ignore_ascii_case(host)
        && name.as_bytes()[host.len()] == b'.'
}

/// `text` without the lines whose host patterns name `host`, and how many were dropped.
pub fn without_host(text: &str, host: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for line in text.split_inclusive('\n') {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        let hosts = if first.starts_with('@') {
            fields.next().unwrap_or("")
        } else {
            first
        };
        let hit = !first.starts_with('#')
            && hosts
                .split(',')
                .any(|p| !p.starts_with('!') && pattern_matches(p, host));
        if hit {
            removed += 1;
        } else {
            out.push_str(line);
        }
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lines_are_dropped_by_name() {
        let text = "\
prod-agent-pm.tail12345.ts.net ssh-ed25519 AAAA1
prod-agent-eng.tail12345.ts.net ssh-ed25519 AAAA2
[prod-agent-pm.tail12345.ts.net]:2222 ssh-ed25519 AAAA3
other,prod-agent-pm.tail12345.ts.net ecdsa-sha2-nistp256 AAAA4
@cert-authority prod-agent-pm.tail12345.ts.net ssh-ed25519 AAAA5
prod-agent-pm-1.tail12345.ts.net ssh-ed25519 AAAA6
# prod-agent-pm.tail12345.ts.net comment
";
        let (kept, n) = without_host(text, "prod-agent-pm.tail12345.ts.net");
        assert_eq!(n, 4);
        assert_eq!(
            kept,
            "prod-agent-eng.tail12345.ts.net ssh-ed25519 AAAA2\nprod-agent-pm-1.tail12345.ts.net ssh-ed25519 AAAA6\n# prod-agent-pm.tail12345.ts.net comment\n"
        );
        // The bare hostname matches the agent in any tailnet, not `-1` devices.
        let (_, n) = without_host(text, "prod-agent-pm");
        assert_eq!(n, 4);
        let (_, n) = without_host(text, "prod-agent");
        assert_eq!(n, 0);
    }

    #[test]
    fn forget_host_rewrites_the_stack_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(forget_host(d.path(), "prod", "x").unwrap(), 0);
        let p = known_hosts_path(d.path(), "prod");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "a.ts.net ssh-ed25519 K1\nb.ts.net ssh-ed25519 K2\n").unwrap();
        assert_eq!(forget_host(d.path(), "prod", "a.ts.net").unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "b.ts.net ssh-ed25519 K2\n"
        );
        assert_eq!(forget_host(d.path(), "prod", "a.ts.net").unwrap(), 0);
    }
}
