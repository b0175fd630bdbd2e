//! Secrets: age encryption at rest, `env:` references, and a redacting wrapper for plaintext.
//!
//! A secret value in a stack file is either an ASCII-armored age file (what `agent-army
//! secrets set` writes, like Pulumi's `secure:` values) or `env:VAR`, read from the
//! environment at run time (for CI). Plaintext only ever lives in a [`Secret`], whose `Debug`
//! is redacted and which has no `Display`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::env::{Env, vars};

/// First line of an armored age file.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// Prefix of an environment reference.
pub const ENV_PREFIX: &str = "env:";
/// What masked secrets look like in plans and rendered files.
pub const MASK: &str = "********";

/// Plaintext of a secret. Not `Display`; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The plaintext. Call sites are few and reviewed: rendering and the cloud APIs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(********)")
    }
}

/// How a secret is stored in the stack file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:VAR`
    Env(String),
    /// An armored age file.
    Encrypted(String),
}

/// Everything that can go wrong with a secret. Messages never include plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("value is neither an age-encrypted block nor `env:VAR`")]
    Unrecognised,
    #[error("`{0}` is not a valid environment variable name")]
    BadEnvName(String),
    #[error("environment variable `{0}` is not set")]
    EnvUnset(String),
    #[error("no age identity to decrypt with: {0}")]
    NoIdentity(String),
    #[error("none of the available identities can decrypt it (wrong identity or passphrase)")]
    NoMatchingKey,
    #[error("the encrypted value is damaged: {0}")]
    Corrupt(String),
    #[error(
        "the value contains a NUL byte, which the agent's environment file cannot carry (bash drops it); set it again without one"
    )]
    Nul,
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
    #[error("`{0}` is not an age recipient (expected `age1...`)")]
    BadRecipient(String),
    #[error("the stack has no `age_recipients` and `AGENT_ARMY_PASSPHRASE` is not set")]
    NoRecipients,
    #[error("could not write identity file {path}: {source}")]
    WriteIdentity {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encryption failed: {0}")]
    Encrypt(String),
    #[error(
        "this machine holds no identity for any of the stack's `age_recipients`: what would be encrypted now could never be read back here"
    )]
    Unrecoverable,
}

impl SecretError {
    /// What the user should do about it.
    pub fn help(&self) -> Option<String> {
        match self {
            SecretError::EnvUnset(v) => Some(format!("export {v}=... before running, or store the value encrypted with `agent-army secrets set`")),
            SecretError::NoIdentity(_) => Some(format!(
                "set {} to your age identity file, or {} for a passphrase-encrypted stack; `agent-army init` creates an identity",
                vars::IDENTITY,
                vars::PASSPHRASE
            )),
            SecretError::NoMatchingKey => Some("check that your identity's public key is in the stack's `age_recipients`, then re-set the secret with `agent-army secrets set`".into()),
            SecretError::NoRecipients => Some("add your public key (from `agent-army init`) to `age_recipients` in the stack file".into()),
            SecretError::Unrecoverable => Some(format!(
                "add your public key (`agent-army init` prints it) to `age_recipients`, or set {} to an identity that is listed; with a `gateway_seed` (`agent-army secrets set gateway_seed --generate`) no gateway key is stored at all. To encrypt for the listed recipients anyway: `deploy --allow-foreign-recipients`",
                vars::IDENTITY
            )),
            SecretError::Unrecognised => Some("set it with `agent-army secrets set NAME`, or write `env:VAR`".into()),
            _ => None,
        }
    }
}

impl SecretRef {
    /// Parse a stack-file value.
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        let v = value.trim();
        if let Some(var) = v.strip_prefix(ENV_PREFIX) {
            if !crate::naming::is_env_name(var) {
                return Err(SecretError::BadEnvName(var.to_string()));
            }
            return Ok(SecretRef::Env(var.to_string()));
        }
        if v.starts_with(ARMOR_BEGIN) {
            return Ok(SecretRef::Encrypted(v.to_string()));
        }
        Err(SecretError::Unrecognised)
    }

    /// A short, non-reversible fingerprint of how the secret is stored (not of its value).
    /// A re-encrypted value gets a new fingerprint, so `deploy` sees the change.
    pub fn fingerprint(&self) -> String {
        let text = match self {
            SecretRef::Env(v) => format!("env:{v}"),
            SecretRef::Encrypted(a) => a.clone(),
        };
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        hex::encode(h.finalize())[..16].to_string()
    }
}

/// The identities available to decrypt with. Loading never fails; failures surface on use,
/// so that commands that do not need plaintext (`plan`, `render`) work without an identity.
pub struct Keyring {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    passphrase: Option<SecretString>,
    problem: Option<String>,
}

impl Keyring {
    /// Identity file from `AGENT_ARMY_IDENTITY` or `~/.config/agent-army/identity.txt`,
    /// plus a passphrase from `AGENT_ARMY_PASSPHRASE`.
    pub fn load(env: &Env) -> Self {
        let passphrase = env
            .get(vars::PASSPHRASE)
            .map(|p| SecretString::from(p.to_string()));
        let mut problem = None;
        let mut identities = Vec::new();
        match env.identity_path() {
            Some(path) if path.exists() => match read_identity_file(&path) {
                Ok(ids) => identities = ids,
                Err(e) => problem = Some(format!("{}: {e}", path.display())),
            },
            Some(path) => {
                problem = Some(format!("identity file {} does not exist", path.display()))
            }
            None => problem = Some("HOME is not set and no identity file was given".into()),
        }
        Keyring {
            identities,
            passphrase,
            problem,
        }
    }

    /// A keyring holding exactly this identity (tests, `init`).
    pub fn from_identity_str(s: &str) -> Result<Self, SecretError> {
        let ids = age::IdentityFile::from_buffer(s.as_bytes())
            .map_err(|e| SecretError::NoIdentity(e.to_string()))?
            .into_identities()
            .map_err(|e| SecretError::NoIdentity(e.to_string()))?;
        Ok(Keyring {
            identities: ids,
            passphrase: None,
            problem: None,
        })
    }

    /// Decrypt an armored age file.
    pub fn decrypt(&self, armored: &str) -> Result<Secret, SecretError> {
        let reader = age::armor::ArmoredReader::new(armored.trim().as_bytes());
        let decryptor =
            age::Decryptor::new(reader).map_err(|e| SecretError::Corrupt(e.to_string()))?;
        let mut out = Vec::new();
        let result = if decryptor.is_scrypt() {
            let Some(pass) = &self.passphrase else {
                return Err(SecretError::NoIdentity(format!(
                    "the value is passphrase-encrypted and {} is not set",
                    vars::PASSPHRASE
                )));
            };
            let id = age::scrypt::Identity::new(pass.clone());
            decryptor.decrypt(std::iter::once(&id as &dyn age::Identity))
        } else {
            if self.identities.is_empty() {
                return Err(SecretError::NoIdentity(
                    self.problem.clone().unwrap_or_else(|| "none loaded".into()),
                ));
            }
            decryptor.decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
        };
        let mut reader = result.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                SecretError::NoMatchingKey
            }
            other => SecretError::Corrupt(other.to_string()),
        })?;
        reader
            .read_to_end(&mut out)
            .map_err(|e| SecretError::Corrupt(e.to_string()))?;
        String::from_utf8(out)
            .map(Secret)
            .map_err(|_| SecretError::NotUtf8)
    }

    /// Resolve a stored secret to its plaintext.
    pub fn resolve(&self, r: &SecretRef, env: &Env) -> Result<Secret, SecretError> {
        let value = match r {
            SecretRef::Env(var) => env
                .get(var)
                .map(Secret::new)
                .ok_or_else(|| SecretError::EnvUnset(var.clone())),
            SecretRef::Encrypted(a) => self.decrypt(a),
        }?;
        // Stored by an older agent-army, or decrypted from a hand-made block.
        if value.expose().contains('\0') {
            return Err(SecretError::Nul);
        }
        Ok(value)
    }
}

fn read_identity_file(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, String> {
    age::IdentityFile::from_file(path.display().to_string())
        .map_err(|e| e.to_string())?
        .into_identities()
        .map_err(|e| e.to_string())
}

/// Who to encrypt to: the stack's recipients, or a passphrase when the stack has none.
pub enum EncryptTo {
    Recipients(Vec<age::x25519::Recipient>),
    Passphrase(SecretString),
}

impl EncryptTo {
    /// Parse the stack's recipients; fall back to `AGENT_ARMY_PASSPHRASE`.
    pub fn for_stack(recipients: &[String], env: &Env) -> Result<Self, SecretError> {
        if !recipients.is_empty() {
            let parsed = recipients
                .iter()
                .map(|r| {
                    r.parse::<age::x25519::Recipient>()
                        .map_err(|_| SecretError::BadRecipient(r.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(EncryptTo::Recipients(parsed));
        }
        match env.get(vars::PASSPHRASE) {
            Some(p) => Ok(EncryptTo::Passphrase(SecretString::from(p.to_string()))),
            None => Err(SecretError::NoRecipients),
        }
    }

    /// Encrypt `plaintext` to an armored age file.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, SecretError> {
        let enc = |e: &dyn std::fmt::Display| SecretError::Encrypt(e.to_string());
        let encryptor = match self {
            EncryptTo::Recipients(rs) => {
                age::Encryptor::with_recipients(rs.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| enc(&e))?
            }
            EncryptTo::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
        };
        let mut out = Vec::new();
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .map_err(|e| enc(&e))?;
        let mut w = encryptor.wrap_output(armor).map_err(|e| enc(&e))?;
        w.write_all(plaintext).map_err(|e| enc(&e))?;
        w.finish()
            .and_then(|armor| armor.finish())
            .map_err(|e| enc(&e))?;
        String::from_utf8(out).map_err(|e| enc(&e))
    }
}

/// A new X25519 identity: (identity file text, public recipient).
pub fn generate_identity() -> (SecretString, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let text = format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    (SecretString::from(text), public)
}

/// Write a new identity to `path` (mode 0600) unless one exists. Returns the public key.
pub fn ensure_identity(path: &Path) -> Result<(String, bool), SecretError> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::WriteIdentity {
            path: path.to_path_buf(),
            source: e,
        })?;
        let public = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .map(str::to_string)
            .or_else(|| {
                text.lines()
                    .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                    .and_then(|l| l.parse::<age::x25519::Identity>().ok())
                    .map(|i| i.to_public().to_string())
            })
            .ok_or_else(|| {
                SecretError::NoIdentity(format!("{} has no X25519 identity", path.display()))
            })?;
        return Ok((public, false));
    }
    let (text, public) = generate_identity();
    crate::fsutil::write_private_atomic(path, text.expose_secret().as_bytes()).map_err(|e| {
        SecretError::WriteIdentity {
            path: path.to_path_buf(),
            source: e,
        }
    })?;
    Ok((public, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (Keyring, String) {
        let (text, public) = generate_identity();
        (
            Keyring::from_identity_str(text.expose_secret()).unwrap(),
            public,
        )
    }

    #[test]
    fn roundtrip_recipient() {
        let (kr, public) = keypair();
        let to = EncryptTo::for_stack(&[public], &Env::default()).unwrap();
        let armored = to.encrypt(b"s3cret value\nwith newline").unwrap();
        assert!(armored.starts_with(ARMOR_BEGIN));
        assert!(!armored.contains("s3cret"));
        assert_eq!(
            kr.decrypt(&armored).unwrap().expose(),
            "s3cret value\nwith newline"
        );
    }

    #[test]
    fn wrong_identity_is_reported() {
        let (_, public) = keypair();
        let (other, _) = keypair();
        let to = EncryptTo::for_stack(&[public], &Env::default()).unwrap();
        let armored = to.encrypt(b"x").unwrap();
        assert!(matches!(
            other.decrypt(&armored),
            Err(SecretError::NoMatchingKey)
        ));
    }

    #[test]
    fn passphrase_roundtrip() {
        let env = Env::from_pairs([("AGENT_ARMY_PASSPHRASE", "correct horse")]);
        let to = EncryptTo::for_stack(&[], &env).unwrap();
        let armored = to.encrypt(b"pp").unwrap();
        let kr = Keyring::load(&env);
        assert_eq!(kr.decrypt(&armored).unwrap().expose(), "pp");
        let wrong = Keyring::load(&Env::from_pairs([("AGENT_ARMY_PASSPHRASE", "nope")]));
        assert!(matches!(
            wrong.decrypt(&armored),
            Err(SecretError::NoMatchingKey)
        ));
    }

    #[test]
    fn refs_parse() {
        assert_eq!(
            SecretRef::parse("env:TS_KEY").unwrap(),
            SecretRef::Env("TS_KEY".into())
        );
        assert!(matches!(
            SecretRef::parse("env:1x"),
            Err(SecretError::BadEnvName(_))
        ));
        assert!(matches!(
            SecretRef::parse("plaintext"),
            Err(SecretError::Unrecognised)
        ));
        let env = Env::from_pairs([("TS_KEY", "v")]);
        let kr = Keyring::load(&env);
        assert_eq!(
            kr.resolve(&SecretRef::Env("TS_KEY".into()), &env)
                .unwrap()
                .expose(),
            "v"
        );
        assert!(matches!(
            kr.resolve(&SecretRef::Env("NOPE".into()), &env),
            Err(SecretError::EnvUnset(_))
        ));
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(********)");
    }

    #[test]
    fn no_recipients_without_passphrase() {
        assert!(matches!(
            EncryptTo::for_stack(&[], &Env::default()),
            Err(SecretError::NoRecipients)
        ));
        assert!(matches!(
            EncryptTo::for_stack(&["nope".into()], &Env::default()),
            Err(SecretError::BadRecipient(_))
        ));
    }
}
