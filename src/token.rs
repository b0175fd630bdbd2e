//! Per-agent gateway keys and the gateway token derived from them.
//!
//! The token is the first 48 characters of the lowercase hex SHA-256 of the agent's OpenSSH
//! public-key line followed by one newline: `ssh-ed25519 <base64 of the SSH wire blob>\n`.
//! That is byte-for-byte what `ssh-keygen -y` prints for a key without a comment, and what
//! Terraform's `tls_private_key.public_key_openssh` holds, so anyone can recompute it with
//! `ssh-keygen -y -f key | sha256sum | cut -c1-48`.

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

/// Number of hex characters in a gateway token.
pub const TOKEN_LEN: usize = 48;

/// HKDF salt of derived gateway keys (domain separation from any other use of the seed).
const DERIVE_SALT: &[u8] = b"agent-army gateway key v1";
/// Prefix of the key id hash.
const KEY_ID_DOMAIN: &[u8] = b"agent-army key id v1\n";
/// Bytes of a fresh gateway seed.
pub const SEED_LEN: usize = 32;

/// A fresh gateway seed, hex-encoded (what `secrets set gateway_seed --generate` stores).
pub fn generate_seed_hex() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; SEED_LEN];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The seed bytes of a stored gateway seed: 64 hex characters (32 bytes) or more.
pub fn parse_seed(s: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = hex::decode(s.trim()).map_err(|_| KeyError::BadGatewaySeed)?;
    if bytes.len() < SEED_LEN {
        return Err(KeyError::BadGatewaySeed);
    }
    Ok(bytes)
}

/// An agent's gateway key. `Debug` never shows the secret part.
#[derive(Clone)]
pub struct GatewayKey(SigningKey);

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GatewayKey({})", self.public_openssh())
    }
}

/// Errors reading a stored key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("stored gateway key is not a 32-byte Ed25519 seed in hex")]
    BadSeed,
    #[error(
        "the gateway seed must be at least 32 bytes in hex (64 characters); make one with `agent-army secrets set gateway_seed --generate`"
    )]
    BadGatewaySeed,
    #[error("not an OpenSSH Ed25519 private key: {0}")]
    BadOpenSsh(String),
}

impl GatewayKey {
    /// A fresh key from the OS random number generator.
    pub fn generate() -> Self {
        GatewayKey(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key from its 32-byte seed in hex (our storage form, always encrypted at rest).
    pub fn from_seed_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s.trim()).map_err(|_| KeyError::BadSeed)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadSeed)?;
        Ok(GatewayKey(SigningKey::from_bytes(&seed)))
    }

    /// The key of `agent` derived from the stack's gateway seed: HKDF-SHA256 (RFC 5869) with
    /// the seed as input key material, a fixed salt naming the purpose, and the project,
    /// stack, agent and generation as `info`, each length-prefixed so no two tuples share an
    /// encoding. Any machine with the seed gets the same key; bumping `generation` gives the
    /// agent a new, unrelated one.
    pub fn derive(seed: &[u8], project: &str, stack: &str, agent: &str, generation: u32) -> Self {
        let mut info = Vec::new();
        for part in [project.as_bytes(), stack.as_bytes(), agent.as_bytes()] {
            info.extend_from_slice(&(part.len() as u32).to_be_bytes());
            info.extend_from_slice(part);
        }
        info.extend_from_slice(&generation.to_be_bytes());
        let hk = hkdf::Hkdf::<Sha256>::new(Some(DERIVE_SALT), seed);
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: expand cannot fail.
        hk.expand(&info, &mut okm)
            .unwrap_or_else(|_| unreachable!("32-byte HKDF output"));
        GatewayKey(SigningKey::from_bytes(&okm))
    }

    /// A public identifier of the key for tags and labels: 16 hex of SHA-256 over a domain
    /// prefix and the public-key line. A different hash input from the token's, so it reveals
    /// nothing about the token.
    pub fn key_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(KEY_ID_DOMAIN);
        h.update(self.public_openssh().as_bytes());
        hex::encode(h.finalize())[..16].to_string()
    }

    /// The 32-byte seed in hex. Secret: only ever passed to the encryptor.
    pub fn seed_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Read an unencrypted OpenSSH private key file (as written by `ssh-keygen -t ed25519`).
    pub fn from_openssh(pem: &str) -> Result<Self, KeyError> {
        let key = ssh_key::PrivateKey::from_openssh(pem)
            .map_err(|e| KeyError::BadOpenSsh(e.to_string()))?;
        let pair = key
            .key_data()
            .ed25519()
            .ok_or_else(|| KeyError::BadOpenSsh("not an ed25519 key".into()))?;
        Ok(GatewayKey(SigningKey::from_bytes(&pair.private.to_bytes())))
    }

    /// The key as an OpenSSH private key file (used for break-glass SSH keys).
    pub fn to_openssh(&self) -> Result<String, KeyError> {
        let pair = ssh_key::private::Ed25519Keypair::from_seed(&self.0.to_bytes());
        let key = ssh_key::PrivateKey::from(pair);
        key.to_openssh(ssh_key::LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| KeyError::BadOpenSsh(e.to_string()))
    }

    /// The OpenSSH public-key line without the trailing newline: `ssh-ed25519 AAAA...`.
    pub fn public_openssh(&self) -> String {
        public_line(self.0.verifying_key().as_bytes())
    }

    /// The gateway token.
    pub fn token(&self) -> String {
        token_from_public_line(&self.public_openssh())
    }
}

/// `ssh-ed25519 <base64(string "ssh-ed25519" || string pubkey)>` per RFC 4253 / RFC 8709.
pub fn public_line(public: &[u8; 32]) -> String {
    const ALG: &[u8] = b"ssh-ed25519";
    let mut blob = Vec::with_capacity(4 + ALG.len() + 4 + 32);
    blob.extend_from_slice(&(ALG.len() as u32).to_be_bytes());
    blob.extend_from_slice(ALG);
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(public);
    format!(
        "ssh-ed25519 {}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// First 48 hex characters of SHA-256(`line` + "\n").
pub fn token_from_public_line(line: &str) -> String {
    let mut h = Sha256::new();
    h.update(line.trim_end_matches('\n').as_bytes());
    h.update(b"\n");
    let mut hexed = hex::encode(h.finalize());
    hexed.truncate(TOKEN_LEN);
    hexed
}

/// A token shown to humans: first 4 characters, the rest masked.
pub fn mask(token: &str) -> String {
    let head: String = token.chars().take(4).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_48_lower_hex_and_stable_across_reload() {
        let k = GatewayKey::generate();
        let t = k.token();
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        let again = GatewayKey::from_seed_hex(&k.seed_hex()).unwrap();
        assert_eq!(again.token(), t);
    }

    #[test]
    fn known_vector() {
        // RFC 8032 test 1 secret key; public key d75a98...511a.
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let k = GatewayKey::from_seed_hex(seed).unwrap();
        assert_eq!(
            k.public_openssh(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
        );
        // Computed independently: printf 'ssh-ed25519 AAAA...1Ea\n' | sha256sum | cut -c1-48
        let expected = {
            let mut h = Sha256::new();
            h.update(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea\n");
            hex::encode(h.finalize())[..48].to_string()
        };
        assert_eq!(k.token(), expected);
    }

    #[test]
    fn openssh_roundtrip() {
        let k = GatewayKey::generate();
        let pem = k.to_openssh().unwrap();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(GatewayKey::from_openssh(&pem).unwrap().token(), k.token());
    }

    #[test]
    fn debug_hides_secret() {
        let k = GatewayKey::generate();
        assert!(!format!("{k:?}").contains(&k.seed_hex()));
    }

    #[test]
    fn mask_keeps_four_chars() {
        assert_eq!(mask("abcdef0123"), "abcd…");
    }

    #[test]
    fn derived_keys_are_stable_separated_and_rotate_with_the_generation() {
        let seed = [7u8; 32];
        let a = GatewayKey::derive(&seed, "p", "dev", "agent-pm", 0);
        assert_eq!(
            a.token(),
            GatewayKey::derive(&seed, "p", "dev", "agent-pm", 0).token()
        );
        // Each part of the tuple matters, and moving a boundary gives another key.
        let others = [
            GatewayKey::derive(&seed, "p", "dev", "agent-pm", 1),
            GatewayKey::derive(&seed, "p", "prod", "agent-pm", 0),
            GatewayKey::derive(&seed, "q", "dev", "agent-pm", 0),
            GatewayKey::derive(&seed, "p", "dev", "agent-eng", 0),
            GatewayKey::derive(&seed, "p", "deva", "gent-pm", 0),
            GatewayKey::derive(&[8u8; 32], "p", "dev", "agent-pm", 0),
        ];
        for o in &others {
            assert_ne!(o.token(), a.token());
        }
        // Pinned vector, computed independently with Python (RFC 5869 HKDF over hmac, Ed25519
        // from `cryptography`): the derivation must never change silently (every token would).
        assert_eq!(
            a.token(),
            "087c39d4e987a80d19582f04f67f245689c5be73fb235f6a"
        );
        assert_eq!(a.key_id(), "5e8f7b07ef674df3");
        assert_eq!(a.token().len(), TOKEN_LEN);
        assert_eq!(a.key_id().len(), 16);
        assert!(!a.token().contains(&a.key_id()));
    }

    #[test]
    fn seeds_are_hex_of_at_least_32_bytes() {
        assert_eq!(parse_seed(&generate_seed_hex()).unwrap().len(), SEED_LEN);
        assert!(parse_seed("abcd").is_err());
        assert!(parse_seed(&"zz".repeat(32)).is_err());
    }
}
