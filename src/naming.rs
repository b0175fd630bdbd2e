//! Naming rules: tailnet hostnames, DNS labels, environment-variable names.

/// The tailnet hostname of an agent: `<stack>-<agent>`.
pub fn hostname(stack: &str, agent: &str) -> String {
    format!("{stack}-{agent}")
}

/// The fully-qualified MagicDNS name: `<stack>-<agent>.<tailnet>`.
pub fn fqdn(stack: &str, agent: &str, tailnet: &str) -> String {
    format!("{}.{}", hostname(stack, agent), tailnet)
}

/// Why a string is not a valid DNS label.
#[derive(Debug, PartialEq, Eq)]
pub enum LabelError {
    Empty,
    TooLong(usize),
    BadChar(char),
    EdgeHyphen,
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelError::Empty => write!(f, "is empty"),
            LabelError::TooLong(n) => write!(f, "is {n} characters long; the limit is 63"),
            LabelError::BadChar(c) => write!(
                f,
                "contains {c:?}; only lowercase letters a-z, digits 0-9 and '-' are allowed"
            ),
            LabelError::EdgeHyphen => write!(f, "starts or ends with '-'"),
        }
    }
}

/// Check that `s` is a DNS label as Tailscale and both clouds accept it.
pub fn check_dns_label(s: &str) -> Result<(), LabelError> {
    if s.is_empty() {
        return Err(LabelError::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(LabelError::BadChar(c));
    }
    if s.len() > 63 {
        return Err(LabelError::TooLong(s.len()));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(LabelError::EdgeHyphen);
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name usable as a shell / systemd environment variable.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_joins_stack_and_agent() {
        assert_eq!(hostname("dev", "agent-pm"), "dev-agent-pm");
        assert_eq!(
            fqdn("dev", "agent-pm", "tail12345.ts.net"),
            "dev-agent-pm.tail12345.ts.net"
        );
    }

    #[test]
    fn dns_label_rules() {
        assert_eq!(check_dns_label("dev-agent-pm"), Ok(()));
        assert_eq!(check_dns_label(&"a".repeat(63)), Ok(()));
        assert_eq!(
            check_dns_label(&"a".repeat(64)),
            Err(LabelError::TooLong(64))
        );
        assert_eq!(check_dns_label("Dev"), Err(LabelError::BadChar('D')));
        assert_eq!(check_dns_label("a_b"), Err(LabelError::BadChar('_')));
        assert_eq!(check_dns_label("-ab"), Err(LabelError::EdgeHyphen));
        assert_eq!(check_dns_label("ab-"), Err(LabelError::EdgeHyphen));
        assert_eq!(check_dns_label(""), Err(LabelError::Empty));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("ANTHROPIC_API_KEY"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name("A B"));
        assert!(!is_env_name(""));
    }
}
