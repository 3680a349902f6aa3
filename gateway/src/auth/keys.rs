//! The public keys tokens are checked against: a JWKS read from a file or a URL.
//!
//! Only RSA keys (for RS256) and P-256 keys (for ES256) are kept; symmetric
//! (`oct`) keys are dropped on load, so an HMAC token can never find a key.
//! Keys rotate: the set is read again periodically, and when a token names a
//! key id the set does not hold (at most once per [`MIN_REFETCH`], so a stream
//! of forged key ids cannot make Attach hammer the identity provider).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest time between two reads of the JWKS caused by unknown key ids.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

/// The largest JWKS document read (a real one is a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One verification key.
pub(crate) struct Key {
    /// The only algorithm this key verifies: RS256 for RSA, ES256 for P-256.
    pub(crate) alg: Algorithm,
    pub(crate) decoding: DecodingKey,
}

/// The usable keys of one JWKS document, by key id.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Key>,
    /// Keys without a `kid`: used only when the token names none either.
    unnamed: Vec<Key>,
}

impl KeySet {
    /// Reads a JWKS document, keeping the RS256 and ES256 signing keys.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_str(json).context("a JWKS is a JSON object with a `keys` array")?;
        let mut set = KeySet::default();
        for value in doc.keys {
            // A key of a type this crate cannot read is skipped, not fatal: JWKS
            // documents often carry keys for other purposes.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
            let Some(key) = usable(&jwk) else { continue };
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.unnamed.push(key),
            }
        }
        Ok(set)
    }

    /// The keys a token may have been signed with: the one its `kid` names,
    /// or without a `kid` every key (the caller tries each whose algorithm
    /// matches; each is a key Attach trusts, so any that verifies will do).
    pub(crate) fn candidates(&self, kid: Option<&str>) -> Vec<&Key> {
        match kid {
            Some(kid) => self.by_kid.get(kid).into_iter().collect(),
            None => self.unnamed.iter().chain(self.by_kid.values()).collect(),
        }
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key as Attach uses it, or `None` for anything but an RS256 or ES256 signing key.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let declared = jwk.common.key_algorithm;
    let fits = match declared {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !fits {
        return None;
    }
    Some(Key { alg, decoding: DecodingKey::from_jwk(jwk).ok()? })
}

/// Where the JWKS comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A file (the development key's `jwks.json`, or one an operator maintains).
    File(PathBuf),
    /// An `http(s)://` URL (an OIDC provider's `jwks_uri`).
    Url(String),
}

impl KeySource {
    /// A URL when `s` looks like one, else a path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("https://") || s.starts_with("http://") {
            KeySource::Url(s.to_string())
        } else {
            KeySource::File(PathBuf::from(s))
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> anyhow::Result<KeySet> {
        let text = match self {
            KeySource::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
                    .await?
                    .with_context(|| format!("reading the JWKS file {}", self.describe()))?
            }
            KeySource::Url(url) => {
                let response = http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .with_context(|| format!("fetching the JWKS from {url}"))?;
                let bytes = response.bytes().await.with_context(|| format!("reading the JWKS from {url}"))?;
                anyhow::ensure!(bytes.len() <= MAX_JWKS_BYTES, "the JWKS at {url} is larger than 1 MiB");
                String::from_utf8(bytes.to_vec()).context("the JWKS is not UTF-8")?
            }
        };
        KeySet::parse(&text).with_context(|| format!("reading the JWKS from {}", self.describe()))
    }

    fn describe(&self) -> String {
        match self {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Url(u) => u.clone(),
        }
    }
}

/// The current key set and how to read it again.
pub struct Keys {
    source: KeySource,
    http: reqwest::Client,
    /// Swapped whole on refresh; readers clone the `Arc` and never hold the lock across a check.
    current: RwLock<Arc<KeySet>>,
    /// When an unknown key id last caused a read (rate-limits those reads).
    last_refetch: Mutex<Option<Instant>>,
}

impl Keys {
    /// Reads the set for the first time; start-up fails if it cannot be read
    /// or holds no usable key.
    pub async fn load(source: KeySource) -> anyhow::Result<Arc<Self>> {
        // A redirect may lead only where the configured URL may: https, or
        // plain HTTP on this machine's loopback (config checks the first URL).
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let url = attempt.url();
            let loopback = url.host_str().is_some_and(|h| {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            if attempt.previous().len() >= 5 {
                attempt.error("the JWKS URL redirects more than 5 times")
            } else if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
                attempt.follow()
            } else {
                attempt.error("the JWKS URL redirects to plain HTTP off this machine, where keys could be replaced")
            }
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(redirects)
            .build()
            .context("building the HTTP client for the JWKS")?;
        let set = source.fetch(&http).await?;
        anyhow::ensure!(!set.is_empty(), "the JWKS at {} holds no RS256 or ES256 signing key", source.describe());
        Ok(Arc::new(Keys { source, http, current: RwLock::new(Arc::new(set)), last_refetch: Mutex::new(None) }))
    }

    /// The keys as last read.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the set again; a failed read keeps the keys already held.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let set = self.source.fetch(&self.http).await?;
        anyhow::ensure!(!set.is_empty(), "the JWKS holds no RS256 or ES256 signing key; keeping the previous keys");
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Reads the set again because a token named a key it does not hold,
    /// unless that happened less than [`MIN_REFETCH`] ago. True when it was read.
    pub async fn refetch_for_unknown_key(&self) -> bool {
        {
            let mut last = self.last_refetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.refresh().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the JWKS again");
                false
            }
        }
    }

    /// Reads the set again every `every`, for as long as the process runs.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(keys) = keys.upgrade() else { return };
                if let Err(e) = keys.refresh().await {
                    tracing::warn!(error = %format!("{e:#}"), "could not refresh the JWKS; keeping the keys held");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_rs256_and_es256_signing_keys() {
        let json = r#"{ "keys": [
            { "kty": "oct", "kid": "h", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "e", "crv": "P-256", "use": "sig",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "EC", "kid": "enc", "crv": "P-256", "use": "enc",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "EC", "kid": "es384", "crv": "P-256", "alg": "ES384",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "weird" }
        ] }"#;
        let set = KeySet::parse(json).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.candidates(Some("e"))[0].alg, Algorithm::ES256);
        assert!(set.candidates(Some("h")).is_empty(), "no HMAC key is ever kept");
        assert_eq!(set.candidates(None).len(), 1, "a token without kid may use the one key");
        assert!(KeySet::parse("[]").is_err());
    }

    fn jwks_of(key: &crate::auth::dev::DevKey) -> String {
        key.jwks().to_string()
    }

    #[tokio::test]
    async fn an_unknown_kid_reads_the_file_again_but_not_twice_in_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (old, new) = (crate::auth::dev::DevKey::generate().unwrap(), crate::auth::dev::DevKey::generate().unwrap());
        std::fs::write(&path, jwks_of(&old)).unwrap();
        let keys = Keys::load(KeySource::File(path.clone())).await.unwrap();
        assert!(keys.current().candidates(Some(new.kid())).is_empty());
        std::fs::write(&path, jwks_of(&new)).unwrap(); // the identity provider rotated its key
        assert!(keys.refetch_for_unknown_key().await);
        assert!(keys.current().candidates(Some(new.kid())).len() == 1);
        assert!(!keys.refetch_for_unknown_key().await, "at most one read per MIN_REFETCH");
        std::fs::write(&path, "{ not json").unwrap();
        assert!(keys.refresh().await.is_err());
        assert!(keys.current().candidates(Some(new.kid())).len() == 1, "a failed read keeps the keys held");
        assert!(Keys::load(KeySource::File(dir.path().join("missing.json"))).await.is_err());
    }

    #[tokio::test]
    async fn a_jwks_url_is_fetched() {
        let key = crate::auth::dev::DevKey::generate().unwrap();
        let body = jwks_of(&key);
        let app = axum::Router::new().route("/certs", axum::routing::get(move || async move { body }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let source = KeySource::parse(&format!("http://{addr}/certs"));
        assert!(matches!(source, KeySource::Url(_)));
        let keys = Keys::load(source).await.unwrap();
        assert!(keys.current().candidates(Some(key.kid())).len() == 1);
        assert!(Keys::load(KeySource::parse(&format!("http://{addr}/missing"))).await.is_err(), "a 404 is an error");
    }

    #[tokio::test]
    async fn a_jwks_url_is_not_followed_to_plain_http_elsewhere() {
        let key = crate::auth::dev::DevKey::generate().unwrap();
        let body = jwks_of(&key);
        let app = axum::Router::new()
            .route("/certs", axum::routing::get(move || async move { body }))
            .route("/moved", axum::routing::get(|| async { axum::response::Redirect::temporary("/certs") }))
            .route(
                "/away",
                axum::routing::get(|| async { axum::response::Redirect::temporary("http://192.0.2.1/certs") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert!(Keys::load(KeySource::parse(&format!("http://{addr}/moved"))).await.is_ok(), "on this machine");
        let Err(away) = Keys::load(KeySource::parse(&format!("http://{addr}/away"))).await else {
            panic!("followed a redirect to plain HTTP off this machine");
        };
        assert!(format!("{away:#}").contains("plain HTTP"), "{away:#}");
    }
}
