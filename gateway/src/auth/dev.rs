//! The development signing key: for running Attach on a laptop, never in production.
//!
//! With no `auth.jwks` configured, `attach serve` makes one ES256 key under
//! `<data_dir>/dev-auth/` (the private key readable by its owner only, and
//! its public half as `jwks.json`, which the server then verifies against like
//! any other JWKS). `attach token` mints tokens with it. Anyone who can read
//! the data directory can mint any role, which is why the server warns loudly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use attach_actors::access::Role;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

/// The directory under the data directory that holds the development key.
pub const DEV_DIR: &str = "dev-auth";
/// The development key's file, in [`DEV_DIR`].
pub const KEY_FILE: &str = "signing-key.pem";
const JWKS_FILE: &str = "jwks.json";

/// An ES256 signing key and its public JWK.
pub struct DevKey {
    /// The private key, PKCS#8 PEM, as written to disk.
    pem: String,
    encoding: EncodingKey,
    jwk: Jwk,
    kid: String,
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`: who (a user id, never personal data).
    pub subject: String,
    /// `role`.
    pub role: Role,
    /// `scope` entries: `province`, `ha:CODE`, `community:CODE`.
    pub scope: Vec<String>,
    /// `provider_id`, for providers and medical directors.
    pub provider: Option<String>,
    /// How long the token is valid.
    pub ttl: Duration,
}

impl DevKey {
    /// A fresh key, in memory only.
    pub fn generate() -> anyhow::Result<Self> {
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
            // Fails only for zero or a value past the curve order: try again.
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let pem = secret.to_pkcs8_pem(LineEnding::LF).context("encoding the development key")?;
        Self::from_pem(pem.as_bytes())
    }

    fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let encoding = EncodingKey::from_ec_pem(pem).context("the development key is not a P-256 PKCS#8 key")?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let pem = String::from_utf8(pem.to_vec()).context("the development key is not PEM text")?;
        Ok(DevKey { pem, encoding, jwk, kid })
    }

    /// Where the development key of `data_dir` lives.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(DEV_DIR)
    }

    /// The JWKS file the server verifies development tokens against.
    pub fn jwks_path(data_dir: &Path) -> PathBuf {
        Self::dir(data_dir).join(JWKS_FILE)
    }

    /// The key file's permission bits when users other than its owner may
    /// read or write it (anyone who can read it can sign in as any role).
    pub fn open_to_others(data_dir: &Path) -> Option<u32> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(Self::dir(data_dir).join(KEY_FILE)).ok()?.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then_some(mode)
        }
        #[cfg(not(unix))]
        {
            let _ = data_dir;
            None
        }
    }

    /// Loads the development key of `data_dir`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::dir(data_dir).join(KEY_FILE);
        let pem = fs::read(&path).with_context(|| format!("reading the development key {}", path.display()))?;
        Self::from_pem(&pem)
    }

    /// Loads the development key of `data_dir`, making one first if there is
    /// none; (re)writes its `jwks.json` if it does not hold the key's public half.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = Self::dir(data_dir);
        create_private_dir(&dir)?;
        let path = dir.join(KEY_FILE);
        let key = match Self::load(data_dir) {
            Ok(key) => key,
            Err(_) if !path.exists() => {
                let key = Self::generate()?;
                match write_private(&path, key.pem.as_bytes()) {
                    Ok(()) => {
                        tracing::warn!(
                            key = %path.display(),
                            "made a new development key: tokens signed with any earlier one are refused"
                        );
                        key
                    }
                    // Another process made it at the same moment: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(data_dir)?,
                    Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
                }
            }
            Err(e) => return Err(e),
        };
        let jwks = serde_json::to_string_pretty(&key.jwks())?;
        // Written only when it says something else: minting a token needs no write access.
        if fs::read_to_string(dir.join(JWKS_FILE)).ok().as_deref() != Some(jwks.as_str()) {
            let tmp = dir.join(format!("{JWKS_FILE}.{}", std::process::id()));
            fs::write(&tmp, jwks).and_then(|()| fs::rename(&tmp, dir.join(JWKS_FILE))).context("writing jwks.json")?;
        }
        Ok(key)
    }

    /// The public half as a JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// The key id tokens name in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs any claims as an ES256 JWT (tests use it to make bad tokens too).
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// Mints a token for `request`, valid from now, for `issuer` and `audience`.
    pub fn mint(&self, issuer: &str, audience: &str, request: &TokenRequest) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness for a token id: {e}"))?;
        let jti: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut claims = json!({
            "iss": issuer, "aud": audience, "sub": request.subject, "role": request.role.as_str(),
            "scope": request.scope, "iat": now, "nbf": now, "exp": now + request.ttl.as_secs(), "jti": jti,
        });
        if let Some(provider) = &request.provider {
            claims["provider_id"] = json!(provider);
        }
        self.sign(&claims)
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes a new file only its owner can read; fails if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Parses a lifetime such as `90s`, `30m`, `1h` or `7d` (a bare number is seconds).
pub fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().with_context(|| format!("`{s}` is not a lifetime like 90s, 30m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("`{s}` is not a lifetime like 90s, 30m, 1h or 7d"),
    };
    anyhow::ensure!(secs > 0 && secs <= 30 * 86_400, "a token lives between 1 second and 30 days");
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevKey::load_or_create(dir.path()).unwrap();
        let again = DevKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.kid(), again.kid(), "the same key on the next start");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(DevKey::dir(dir.path()).join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let jwks = fs::read_to_string(DevKey::jwks_path(dir.path())).unwrap();
        assert!(!jwks.contains("\"d\""), "the JWKS holds no private part");
        let set = super::super::keys::KeySet::parse(&jwks).unwrap();
        assert_eq!(set.candidates(Some(first.kid())).len(), 1);
        // Loading it again (minting a token) writes nothing when the JWKS is already right.
        let written = fs::metadata(DevKey::jwks_path(dir.path())).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        DevKey::load_or_create(dir.path()).unwrap();
        assert_eq!(fs::metadata(DevKey::jwks_path(dir.path())).unwrap().modified().unwrap(), written);
    }

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("31d").is_err());
    }
}
