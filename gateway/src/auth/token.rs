//! Checking one bearer token and turning its claims into a [`Principal`].
//!
//! The header's `alg` must be RS256 or ES256 *and* the one the key it names
//! is for: `alg: none` and HMAC tokens (including the classic confusion of an
//! HS256 token "signed" with an RSA public key) are refused before any
//! signature is looked at. Then the signature, `iss`, `aud`, `exp` and `nbf`
//! (with a small leeway), and Attach's own claims: `sub`, `role`, `scope`
//! and `provider_id`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attach_actors::access::{Principal, Role, Scope};
use attach_actors::domain::{MAX_SUBJECT, ProviderId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::keys::KeySet;

/// What a token must say besides a good signature.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Why a token was refused. Its text goes to the client: it names the
/// problem, never the token or its claims' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header.
    Malformed,
    /// The credential is not `Bearer <token>`.
    NotBearer,
    /// A subscription connection's `connection_init` payload is neither absent
    /// nor an object (where `Authorization` would be).
    InitPayload,
    /// `alg` is not RS256 or ES256, or not the named key's algorithm.
    Algorithm,
    /// No key with the token's `kid`.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` is not Attach's issuer.
    Issuer,
    /// `aud` does not include Attach.
    Audience,
    /// A claim is missing or not what Attach expects.
    Claims(String),
    /// On the operators' revocation list (`auth.revoked`).
    Revoked,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("the bearer token is not a JWT"),
            TokenError::NotBearer => f.write_str("the credential is not `Bearer <token>`"),
            TokenError::InitPayload => {
                f.write_str("the connection_init payload is not an object such as {\"Authorization\": \"Bearer …\"}")
            }
            TokenError::Algorithm => f.write_str("the bearer token's algorithm is not accepted (RS256 or ES256 only)"),
            TokenError::UnknownKey => f.write_str("the bearer token was signed with a key Attach does not know"),
            TokenError::Signature => f.write_str("the bearer token's signature is not valid"),
            TokenError::Expired => f.write_str("the bearer token has expired"),
            TokenError::NotYetValid => f.write_str("the bearer token is not valid yet"),
            TokenError::Issuer => f.write_str("the bearer token is from an issuer Attach does not trust"),
            TokenError::Audience => f.write_str("the bearer token is not meant for Attach"),
            TokenError::Claims(why) => write!(f, "the bearer token's claims are not usable: {why}"),
            TokenError::Revoked => f.write_str("the bearer token has been revoked"),
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who it says the caller is.
    pub principal: Principal,
    /// Its `exp`: a connection signed in with it must not outlive it.
    pub expires: SystemTime,
    /// Its `jti`, if it has one (revocation names tokens by it).
    pub id: Option<String>,
    /// Its `iat` in seconds, if it has one.
    pub issued_at: Option<u64>,
}

/// The claims Attach reads (the standard ones are checked by `Validation`).
#[derive(Deserialize)]
struct Claims {
    exp: u64,
    sub: String,
    role: String,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
}

/// `scope` as a space-separated string (OAuth style) or an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

/// Verifies `token` against `keys` and `rules`.
pub fn verify(token: &str, keys: &KeySet, rules: &TokenRules) -> Result<Signed, TokenError> {
    verify_as(token, keys, rules, true)
}

/// [`verify`] with `exp` not checked: who an expired token was signed for,
/// for the audit record of its refusal.
pub fn verify_expired(token: &str, keys: &KeySet, rules: &TokenRules) -> Result<Signed, TokenError> {
    verify_as(token, keys, rules, false)
}

fn verify_as(token: &str, keys: &KeySet, rules: &TokenRules, check_exp: bool) -> Result<Signed, TokenError> {
    // `decode_header` fails on any `alg` jsonwebtoken does not know, `none` included.
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(TokenError::Algorithm);
    }
    let candidates = keys.candidates(header.kid.as_deref());
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    let matching: Vec<_> = candidates.into_iter().filter(|k| k.alg == header.alg).collect();
    // Without a `kid`, a JWKS of several keys is tried key by key: a signature
    // that fails with one may verify with the next; anything else is the answer.
    let mut last = Err(TokenError::Algorithm);
    for key in matching {
        last = verify_with(token, key, rules, check_exp);
        if !matches!(last, Err(TokenError::Signature)) {
            break;
        }
    }
    last
}

/// Checks `token` against one key whose algorithm is the token's.
fn verify_with(token: &str, key: &super::keys::Key, rules: &TokenRules, check_exp: bool) -> Result<Signed, TokenError> {
    let mut validation = Validation::new(key.alg);
    validation.validate_exp = check_exp;
    validation.set_issuer(&[&rules.issuer]);
    validation.set_audience(&[&rules.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = rules.leeway_secs;
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::Claims(format!("`{claim}` is missing")),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::Claims(format!("`{claim}` is malformed")),
        ErrorKind::Json(_) => TokenError::Claims(
            "the claims are not as Attach reads them: `sub` and `role` are strings, `exp` a number of seconds"
                .to_string(),
        ),
        _ => TokenError::Malformed,
    })?;
    let expires = UNIX_EPOCH + Duration::from_secs(data.claims.exp);
    let (id, issued_at) = (data.claims.jti.clone(), data.claims.iat);
    Ok(Signed { principal: principal(data.claims)?, expires, id, issued_at })
}

/// What is wrong with a token's subject, if anything: the same rule as a
/// delegate's or staff member's id (so anyone who signs in can be named in an
/// endorsement), and not a PHN, since every audit record keeps its caller's
/// subject and the audit log holds no personal data.
pub fn subject_problem(sub: &str) -> Option<String> {
    use attach_actors::domain::{has_invisible_ends, has_unprintable, is_subject};
    if !is_subject(sub) || has_unprintable(sub) || has_invisible_ends(sub) {
        return Some(format!(
            "`sub` must be 1 to {MAX_SUBJECT} bytes, no control characters, bidirectional overrides or surrounding \
             spaces"
        ));
    }
    attach_actors::domain::Phn::is_spelled_in(sub).then(|| {
        "`sub` is a valid PHN: the audit log keeps every caller's subject and holds no personal data, so the \
         identity provider must give an opaque subject"
            .to_string()
    })
}

fn principal(claims: Claims) -> Result<Principal, TokenError> {
    let bad = |why: String| TokenError::Claims(why);
    if let Some(why) = subject_problem(&claims.sub) {
        return Err(bad(why));
    }
    let role: Role = claims.role.parse().map_err(|_| bad("`role` is not one Attach knows".to_string()))?;
    let entries: Vec<String> = match claims.scope {
        None => Vec::new(),
        Some(ScopeClaim::Text(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(ScopeClaim::List(v)) => v,
    };
    let scope = Scope::parse(entries.iter().map(String::as_str)).map_err(|e| bad(e.message))?;
    let provider = claims
        .provider_id
        .map(|p| ProviderId::parse(&p))
        .transpose()
        .map_err(|_| bad("`provider_id` is not a provider id".to_string()))?;
    if matches!(role, Role::Provider | Role::MedicalDirector) && provider.is_none() {
        return Err(bad(format!("the {role} role needs `provider_id`")));
    }
    Ok(Principal::new(claims.sub, role, provider, scope))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dev::DevKey;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    use serde_json::{Value, json};

    fn rules() -> TokenRules {
        TokenRules { issuer: "https://id.example".into(), audience: "attach".into(), leeway_secs: 5 }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> Value {
        json!({ "iss": "https://id.example", "aud": "attach", "sub": "u-1", "exp": now() + 300, "nbf": now() - 5,
                "role": "coordinator", "scope": "ha:VIHA community:111" })
    }

    /// An RSA key (2048 bits), its JWKS entry and its public key in PKCS#1 DER.
    struct Rsa {
        encoding: EncodingKey,
        jwk: Value,
        public_der: Vec<u8>,
    }

    fn rsa_key(kid: &str) -> Rsa {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let public = private.to_public_key();
        Rsa {
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jwk: json!({ "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                "n": B64.encode(public.n().to_bytes_be()), "e": B64.encode(public.e().to_bytes_be()) }),
            public_der: public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
        }
    }

    fn rs256(key: &Rsa, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn set(jwks: Vec<Value>) -> KeySet {
        KeySet::parse(&json!({ "keys": jwks }).to_string()).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_are_accepted() {
        let rsa = rsa_key("r1");
        let ec = DevKey::generate().unwrap();
        let mut jwks = ec.jwks()["keys"].as_array().unwrap().clone();
        jwks.push(rsa.jwk.clone());
        let keys = set(jwks);
        let p = verify(&rs256(&rsa, "r1", &claims()), &keys, &rules()).unwrap().principal;
        assert_eq!((p.subject(), p.role()), ("u-1", Role::Coordinator));
        assert_eq!(p.scope(), &Scope::parse(["ha:VIHA", "community:111"]).unwrap());
        let mut c = claims();
        c["role"] = json!("provider");
        c["provider_id"] = json!("P10001");
        c["scope"] = json!(["province"]);
        c["aud"] = json!(["other", "attach"]);
        let signed = verify(&ec.sign(&c).unwrap(), &keys, &rules()).unwrap();
        assert_eq!(signed.expires, UNIX_EPOCH + Duration::from_secs(c["exp"].as_u64().unwrap()));
        let p = signed.principal;
        assert_eq!(p.provider().map(|p| p.as_str()), Some("P10001"));
        assert!(p.scope().province);
    }

    #[test]
    fn time_issuer_and_audience_are_checked() {
        let ec = DevKey::generate().unwrap();
        let keys = set(ec.jwks()["keys"].as_array().unwrap().clone());
        let refused = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims();
            edit(&mut c);
            verify(&ec.sign(&c).unwrap(), &keys, &rules()).unwrap_err()
        };
        assert_eq!(refused(&|c| c["exp"] = json!(now() - 60)), TokenError::Expired);
        assert_eq!(refused(&|c| c["nbf"] = json!(now() + 60)), TokenError::NotYetValid);
        assert_eq!(refused(&|c| c["iss"] = json!("https://evil.example")), TokenError::Issuer);
        assert_eq!(refused(&|c| c["aud"] = json!("someone-else")), TokenError::Audience);
        assert!(matches!(
            refused(&|c| c.as_object_mut().unwrap().remove("sub").map(drop).unwrap()),
            TokenError::Claims(_)
        ));
        assert!(matches!(
            refused(&|c| c.as_object_mut().unwrap().remove("role").map(drop).unwrap()),
            TokenError::Claims(_)
        ));
        assert!(matches!(
            refused(&|c| c.as_object_mut().unwrap().remove("exp").map(drop).unwrap()),
            TokenError::Claims(_)
        ));
        assert!(matches!(refused(&|c| c["role"] = json!("internal")), TokenError::Claims(_)));
        assert!(matches!(refused(&|c| c["role"] = json!("provider")), TokenError::Claims(_)), "no provider_id");
        assert!(matches!(refused(&|c| c["scope"] = json!("planet:earth")), TokenError::Claims(_)));
        assert!(
            matches!(refused(&|c| c["sub"] = json!(" u-1")), TokenError::Claims(_)),
            "named as a delegate it would differ"
        );
        assert!(matches!(refused(&|c| c["sub"] = json!("u\n1")), TokenError::Claims(_)));
        assert!(matches!(refused(&|c| c["sub"] = json!("u\u{202E}1")), TokenError::Claims(_)), "as a delegate id");
        assert!(
            matches!(refused(&|c| c["sub"] = json!("9698658215")), TokenError::Claims(why) if why.contains("PHN")),
            "a PHN as the subject would be kept in every audit record"
        );
        assert!(matches!(refused(&|c| c["sub"] = json!("x".repeat(257))), TokenError::Claims(_)));
        let mut c = claims();
        c["sub"] = json!("auth0|64f1c2ab");
        assert_eq!(verify(&ec.sign(&c).unwrap(), &keys, &rules()).unwrap().principal.subject(), "auth0|64f1c2ab");
        // Within the leeway is fine.
        let mut c = claims();
        c["exp"] = json!(now() - 2);
        assert!(verify(&ec.sign(&c).unwrap(), &keys, &rules()).is_ok());
    }

    #[test]
    fn forged_tokens_are_refused() {
        let rsa = rsa_key("r1");
        let ec = DevKey::generate().unwrap();
        let keys = set(vec![rsa.jwk.clone()]);
        let good = rs256(&rsa, "r1", &claims());
        let parts: Vec<&str> = good.split('.').collect();

        // A tampered payload: the signature no longer matches.
        let mut c = claims();
        c["role"] = json!("operations");
        let tampered = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
        assert_eq!(verify(&tampered, &keys, &rules()).unwrap_err(), TokenError::Signature);

        // Signed by a key the set does not hold.
        assert_eq!(
            verify(&rs256(&rsa_key("r2"), "r2", &claims()), &keys, &rules()).unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(verify(&ec.sign(&claims()).unwrap(), &keys, &rules()).unwrap_err(), TokenError::UnknownKey);

        // `alg: none`, with and without a signature.
        let none = B64.encode(r#"{"alg":"none","typ":"JWT","kid":"r1"}"#);
        for token in [format!("{none}.{}.", parts[1]), format!("{none}.{}.{}", parts[1], parts[2])] {
            assert!(verify(&token, &keys, &rules()).is_err());
        }

        // HS256 "signed" with the RSA public key as the secret (key confusion).
        for secret in [rsa.public_der.clone(), rsa.jwk.to_string().into_bytes()] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("r1".to_string());
            let hs = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(verify(&hs, &keys, &rules()).unwrap_err(), TokenError::Algorithm);
        }

        // ES256 in the header over an RSA key's kid.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("r1".to_string());
        let confused = format!("{}.{}.{}", B64.encode(serde_json::to_string(&header).unwrap()), parts[1], parts[2]);
        assert_eq!(verify(&confused, &keys, &rules()).unwrap_err(), TokenError::Algorithm);

        assert_eq!(verify("not-a-token", &keys, &rules()).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn a_token_without_kid_is_tried_against_each_key_of_its_algorithm() {
        let (r1, r2, stranger) = (rsa_key("r1"), rsa_key("r2"), rsa_key("r3"));
        let ec = DevKey::generate().unwrap();
        let mut jwks = ec.jwks()["keys"].as_array().unwrap().clone();
        jwks.push(r1.jwk.clone());
        jwks.push(r2.jwk.clone());
        let keys = set(jwks);
        let without_kid = |key: &Rsa, c: &Value| jsonwebtoken::encode(&Header::new(Algorithm::RS256), c, &key.encoding);
        let signed = verify(&without_kid(&r2, &claims()).unwrap(), &keys, &rules()).unwrap();
        assert_eq!(signed.principal.subject(), "u-1", "the second RSA key verifies it");
        let by_stranger = without_kid(&stranger, &claims()).unwrap();
        assert_eq!(verify(&by_stranger, &keys, &rules()).unwrap_err(), TokenError::Signature);
        let mut c = claims();
        c["exp"] = json!(now() - 60);
        let expired = without_kid(&r1, &c).unwrap();
        assert_eq!(
            verify(&expired, &keys, &rules()).unwrap_err(),
            TokenError::Expired,
            "the key that verifies answers"
        );
        let only_ec = set(ec.jwks()["keys"].as_array().unwrap().clone());
        let rsa_token = without_kid(&r1, &claims()).unwrap();
        assert_eq!(verify(&rsa_token, &only_ec, &rules()).unwrap_err(), TokenError::Algorithm, "no RS256 key at all");
    }

    #[test]
    fn messages_never_carry_the_token() {
        let ec = DevKey::generate().unwrap();
        let keys = set(ec.jwks()["keys"].as_array().unwrap().clone());
        let mut c = claims();
        c["exp"] = json!(now() - 600);
        let token = ec.sign(&c).unwrap();
        let message = verify(&token, &keys, &rules()).unwrap_err().to_string();
        assert!(!message.contains(&token) && !message.contains("u-1"), "{message}");
    }
}
