//! Who is calling: bearer JWTs checked against a JWKS, turned into a [`Principal`].
//!
//! - [`keys`]: the JWKS (a file or a URL), refreshed periodically and on an unknown key id;
//! - [`token`]: the checks one token must pass, and its claims;
//! - [`cache`]: tokens already verified, so a repeated token is checked once;
//! - [`revoked`]: the operators' list of revoked tokens and subjects;
//! - [`dev`]: the development key `attach serve` makes when no JWKS is configured,
//!   and the minting `attach token` does with it.
//!
//! No token means the public caller, who may only use the public operations
//! (registering a household, its status by reference); the core refuses the
//! rest with `UNAUTHENTICATED`. A token that is present but not valid is
//! refused at the door with HTTP 401: a client that meant to sign in must
//! learn that it did not.

pub mod cache;
pub mod dev;
pub mod keys;
pub mod revoked;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use attach_actors::access::Principal;
use axum::http::{HeaderMap, header};

use crate::config::Settings;
use cache::TokenCache;
use keys::{KeySource, Keys};
use revoked::Revocations;
use token::{Signed, TokenError, TokenRules};

/// Checks bearer tokens.
pub struct Authenticator {
    keys: Arc<Keys>,
    rules: TokenRules,
    verified: TokenCache,
    revoked: Arc<Revocations>,
}

impl Authenticator {
    /// Reads the keys `settings.auth` names, or makes and uses the development
    /// key when it names none.
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let source = if auth.jwks.is_empty() {
            let key = dev::DevKey::load_or_create(&settings.data_dir)?;
            if let Some(mode) = dev::DevKey::open_to_others(&settings.data_dir) {
                tracing::warn!(
                    mode = %format!("{mode:o}"),
                    "the development key is open to other users: anyone who can read it can sign in as any role; \
                     chmod 600 it"
                );
            }
            tracing::warn!(
                kid = key.kid(),
                dir = %dev::DevKey::dir(&settings.data_dir).display(),
                "DEVELOPMENT AUTHENTICATION: no auth.jwks is configured, so tokens are checked against a \
                 development key kept in the data directory; anyone who can read it can mint any role. \
                 Mint tokens with `attach token --role …`. Never run like this in production: set auth.jwks."
            );
            KeySource::File(dev::DevKey::jwks_path(&settings.data_dir))
        } else {
            KeySource::parse(&auth.jwks)
        };
        let keys = Keys::load(source).await?;
        keys.spawn_refresh(Duration::from_secs(auth.jwks_refresh_secs));
        let revoked = Revocations::load((!auth.revoked.is_empty()).then(|| auth.revoked.clone().into()))?;
        revoked.spawn_refresh(Duration::from_secs(auth.revoked_refresh_secs));
        Ok(Authenticator {
            revoked,
            keys,
            rules: TokenRules {
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
                leeway_secs: auth.leeway_secs,
            },
            verified: TokenCache::new(auth.verified_tokens, Duration::from_secs(auth.verified_token_secs)),
        })
    }

    /// The clock skew tolerated on `exp`.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.rules.leeway_secs)
    }

    /// Verifies a token, reading the JWKS again (rate-limited) when it names
    /// a key not held yet: the identity provider may have rotated its keys.
    /// A token verified lately against the same keys is not checked again,
    /// but its `exp` is.
    pub async fn verify(&self, token: &str) -> Result<Signed, TokenError> {
        let signed = self.verify_signature(token).await?;
        if self.is_revoked(&signed) {
            return Err(TokenError::Revoked);
        }
        Ok(signed)
    }

    /// Whether the operators revoked this token (`auth.revoked`).
    pub fn is_revoked(&self, signed: &Signed) -> bool {
        self.revoked.revokes(signed)
    }

    /// Ticks whenever the revocation list changes, so open connections can check again.
    pub fn revocations_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revoked.subscribe()
    }

    /// [`verify`](Self::verify) without the revocation list.
    async fn verify_signature(&self, token: &str) -> Result<Signed, TokenError> {
        let keys = self.keys.current();
        if let Some(verdict) = self.verified.get(token, &keys, self.leeway()) {
            return verdict;
        }
        let (result, keys) = match token::verify(token, &keys, &self.rules) {
            Err(TokenError::UnknownKey) if self.keys.refetch_for_unknown_key().await => {
                let keys = self.keys.current();
                (token::verify(token, &keys, &self.rules), keys)
            }
            result => (result, keys),
        };
        if let Ok(signed) = &result {
            self.verified.put(token, keys, signed);
        }
        result
    }

    /// Who a credential (`Bearer …`) refused with `error` was signed for, when
    /// its signature held and only its expiry or the revocation list refused
    /// it: someone may be using a lost or stolen token, which the audit log
    /// should show. None for every other refusal, whose subject could be anyone's.
    pub async fn signed_for(&self, credential: &str, error: &TokenError) -> Option<Principal> {
        let token = bearer(credential)?;
        match error {
            TokenError::Revoked => self.verify_signature(token).await.ok().map(|s| s.principal),
            TokenError::Expired => {
                token::verify_expired(token, &self.keys.current(), &self.rules).ok().map(|s| s.principal)
            }
            _ => None,
        }
    }

    /// The principal of a request: `Ok(None)` without an `Authorization`
    /// header, an error when there is one that does not hold a valid bearer token.
    pub async fn from_headers(&self, headers: &HeaderMap) -> Result<Option<Signed>, TokenError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
        let token = value.to_str().ok().and_then(bearer).ok_or(TokenError::NotBearer)?;
        self.verify(token).await.map(Some)
    }

    /// The principal of a WebSocket `connection_init` payload
    /// (`{"Authorization": "Bearer …"}`, any case of the key).
    pub async fn from_init_payload(&self, payload: &serde_json::Value) -> Result<Option<Signed>, TokenError> {
        let object = match payload {
            serde_json::Value::Object(object) => object,
            serde_json::Value::Null => return Ok(None),
            _ => return Err(TokenError::InitPayload),
        };
        let Some(value) = init_credential(object) else { return Ok(None) };
        let token = value.as_str().and_then(bearer).ok_or(TokenError::NotBearer)?;
        self.verify(token).await.map(Some)
    }
}

/// The credential a `connection_init` payload carries (`Authorization`, any case).
pub fn init_credential(payload: &serde_json::Map<String, serde_json::Value>) -> Option<&serde_json::Value> {
    payload.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v)
}

/// The token of a `Bearer …` credential (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_parse() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
