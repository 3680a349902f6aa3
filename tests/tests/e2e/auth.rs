//! Authentication and rate limits at the real HTTP and WebSocket endpoints:
//! forged and stale tokens are refused with 401, a caller over quota gets 429
//! with the headers that say when to come back, and subscriptions are capped
//! per principal across connections.

use std::time::{Duration, Instant};

use attach_actors::access::Role;
use attach_gateway::auth::dev::DevKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::feed::{SUBSCRIBE, Ws, connect_as, next_event, next_message, register, subscribe};
use crate::helpers::{Spawn, TestApp, phn};

const WAITLIST: &str = r#"{ waitlist(communityCode: "111", first: 1) { totalCount } }"#;

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// A coordinator's claims, valid now, for `iss` and `aud`.
fn claims(iss: &str, aud: &str) -> Value {
    json!({ "iss": iss, "aud": aud, "sub": "coord-1", "role": "coordinator", "scope": ["province"],
            "iat": now(), "nbf": now() - 5, "exp": now() + 300 })
}

fn edited(base: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = base.clone();
    edit(&mut c);
    c
}

/// Posts `query` with `Authorization: <value>`.
/// An anonymous call as a proxy in front of Attach would send it, with `name: value`.
async fn post_through_proxy(app: &TestApp, name: &str, value: &str) -> reqwest::Response {
    app.http()
        .post(format!("{}/graphql", app.url))
        .header(name, value)
        .json(&json!({ "query": "{ healthAuthorities { code } }" }))
        .send()
        .await
        .unwrap()
}

/// Behind proxies trusted by address, writing the standard `Forwarded` header:
/// each client the proxy names has its own quota, what a client wrote to the
/// left of the proxy's entry is ignored, and an entry without an address
/// counts against the proxy that wrote it.
#[tokio::test]
async fn behind_trusted_proxies_each_forwarded_client_has_its_own_quota() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATTACH_LIMITS__RATE__ENABLED", "true"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__PER_MINUTE", "1"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__BURST", "1"),
        ("ATTACH_LIMITS__RATE__TRUSTED_PROXIES", r#"["127.0.0.0/8", "10.0.0.0/8"]"#),
        ("ATTACH_LIMITS__RATE__FORWARDED_HEADER", "forwarded"),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let status = |name: &'static str, value: &'static str| {
        let app = &app;
        async move { post_through_proxy(app, name, value).await.status() }
    };

    assert_eq!(status("forwarded", "for=203.0.113.5;proto=https").await, 200);
    assert_eq!(status("forwarded", "for=203.0.113.5;proto=https").await, 429, "one call a minute");
    // The client wrote an entry of its own; the proxy's entry (right) is what counts.
    assert_eq!(status("forwarded", "for=198.51.100.1, for=203.0.113.5").await, 429);
    assert_eq!(
        status("forwarded", "for=\"[2001:db8::7]:4711\", for=10.1.2.3").await,
        200,
        "another client, via two proxies"
    );
    // The proxy could not say who the client was: its own address takes the quota.
    assert_eq!(status("forwarded", "for=unknown, for=10.9.9.9").await, 200);
    assert_eq!(status("forwarded", "for=_hidden, for=10.9.9.9").await, 429);
    // X-Forwarded-For is not read when the proxies are set to write Forwarded.
    assert_eq!(status("x-forwarded-for", "192.0.2.200").await, 200, "the peer, 127.0.0.1, has not spent its quota");
    assert_eq!(status("x-forwarded-for", "192.0.2.201").await, 429);
}

async fn post_with(app: &TestApp, authorization: &str, query: &str) -> reqwest::Response {
    app.http()
        .post(format!("{}/graphql", app.url))
        .header("authorization", authorization)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
}

/// Asserts a 401 with `UNAUTHENTICATED`, the `WWW-Authenticate` challenge and no echo of the token.
async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let response = post_with(app, &format!("Bearer {token}"), WAITLIST).await;
    assert_eq!(response.status(), 401, "{why}");
    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.starts_with("Bearer") && challenge.contains("invalid_token"), "{why}: {challenge}");
    let body = response.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{why}: {body}");
    assert!(!v["errors"][0]["message"].as_str().unwrap().is_empty(), "{why}");
    assert!(!body.contains(token), "{why}: the token was echoed");
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", B64.encode(header.to_string()), B64.encode(claims.to_string()))
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused_with_401_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    assert!(app.log.lock().unwrap().contains("DEVELOPMENT AUTHENTICATION"), "the development key is announced");
    let key = app.dev_key();
    let good = claims("attach-dev", "attach");

    // The development key's own token works; no token is the public caller.
    let token = key.sign(&good).unwrap();
    assert_eq!(app.with_token(&token).ok(WAITLIST, json!({})).await["waitlist"]["totalCount"], 0);
    assert_eq!(app.error_code(WAITLIST, json!({})).await, "UNAUTHENTICATED", "protected without a token");
    assert!(app.ok("{ healthAuthorities { code } }", json!({})).await["healthAuthorities"].is_array());
    let minted = app.token(Role::Coordinator, &["province"], None);
    assert!(app.with_token(minted).graphql(WAITLIST, json!({})).await.get("errors").is_none());

    let sign = |c: &Value| key.sign(c).unwrap();
    assert_refused(&app, &sign(&edited(&good, |c| c["exp"] = json!(now() - 3600))), "expired").await;
    assert_refused(&app, &sign(&edited(&good, |c| c["nbf"] = json!(now() + 3600))), "not yet valid").await;
    assert_refused(&app, &sign(&edited(&good, |c| c["iss"] = json!("https://evil.example"))), "wrong issuer").await;
    assert_refused(&app, &sign(&edited(&good, |c| c["aud"] = json!("other-service"))), "wrong audience").await;
    assert_refused(&app, &sign(&edited(&good, |c| c["role"] = json!("internal"))), "a role no token carries").await;
    let parts: Vec<&str> = token.split('.').collect();
    let promoted = edited(&good, |c| c["role"] = json!("operations"));
    assert_refused(&app, &format!("{}.{}.{}", parts[0], B64.encode(promoted.to_string()), parts[2]), "tampered").await;
    assert_refused(&app, &DevKey::generate().unwrap().sign(&good).unwrap(), "unknown key").await;
    assert_refused(&app, &unsigned(&json!({ "alg": "none", "typ": "JWT" }), &good, ""), "alg none").await;
    assert_refused(&app, &unsigned(&json!({ "alg": "none", "kid": key.kid() }), &good, parts[2]), "alg none").await;
    // HS256 with the published public key as the HMAC secret.
    let jwks = std::fs::read(DevKey::jwks_path(dir.path())).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid().to_string());
    let confused = jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&jwks)).unwrap();
    assert_refused(&app, &confused, "HS256 signed with the public key").await;
    assert_refused(&app, "not.a.jwt", "garbage").await;

    let basic = post_with(&app, "Basic dXNlcjpwYXNz", WAITLIST).await;
    assert_eq!(basic.status(), 401, "only bearer credentials are accepted");
    let text = app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("attach_graphql_errors_total{code=\"UNAUTHENTICATED\"}"), "{text}");
}

/// An RSA key written as a JWKS file, as an operator would configure an identity provider's keys.
#[tokio::test]
async fn a_configured_jwks_with_an_rsa_key_and_its_issuer_and_audience() {
    let dir = tempfile::tempdir().unwrap();
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let public = private.to_public_key();
    let jwks = json!({ "keys": [{ "kty": "RSA", "kid": "idp-1", "alg": "RS256", "use": "sig",
        "n": B64.encode(public.n().to_bytes_be()), "e": B64.encode(public.e().to_bytes_be()) }] });
    let jwks_path = dir.path().join("idp-jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let env = vec![
        ("ATTACH_AUTH__JWKS".to_string(), jwks_path.display().to_string()),
        ("ATTACH_AUTH__ISSUER".to_string(), "https://id.health.example".to_string()),
        ("ATTACH_AUTH__AUDIENCE".to_string(), "attach-prod".to_string()),
    ];
    let app = TestApp::spawn(&dir.path().join("data"), Spawn { env, ..Spawn::default() }).await;
    assert!(!dir.path().join("data").join("dev-auth").exists(), "no development key when a JWKS is configured");

    let encoding = EncodingKey::from_rsa_pem(private.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("idp-1".to_string());
    let good = claims("https://id.health.example", "attach-prod");
    let token = jsonwebtoken::encode(&header, &good, &encoding).unwrap();
    assert!(app.with_token(&token).graphql(WAITLIST, json!({})).await.get("errors").is_none(), "RS256 accepted");

    let dev_claims = jsonwebtoken::encode(&header, &claims("attach-dev", "attach"), &encoding).unwrap();
    assert_refused(&app, &dev_claims, "the development issuer is not trusted here").await;
    for secret in [
        public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
        public.to_public_key_pem(LineEnding::LF).unwrap().into_bytes(),
    ] {
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("idp-1".to_string());
        let confused = jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&secret)).unwrap();
        assert_refused(&app, &confused, "HS256 signed with the RSA public key").await;
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[tokio::test]
async fn a_caller_over_quota_gets_429_then_succeeds_after_the_window_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATTACH_LIMITS__RATE__ENABLED", "true"),
        ("ATTACH_LIMITS__RATE__COORDINATOR__PER_MINUTE", "60"),
        ("ATTACH_LIMITS__RATE__COORDINATOR__BURST", "2"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__PER_MINUTE", "60"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__BURST", "3"),
        ("ATTACH_LIMITS__RATE__TRUSTED_PROXY_HOPS", "1"),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let a = app.with_token(app.token_for("coord-a", Role::Coordinator, &["province"], None));
    let b = app.with_token(app.token_for("coord-b", Role::Coordinator, &["province"], None));

    // A burst of two, each answer saying what is left.
    for left in [1, 0] {
        let r = a.post(WAITLIST, json!({})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"coordinator\";q=2;w=2");
        assert!(header(&r, "ratelimit").starts_with(&format!("\"coordinator\";r={left};t=")), "{r:?}");
    }
    let refused = a.post(WAITLIST, json!({})).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"coordinator\";q=2;w=2");
    assert_eq!(header(&refused, "ratelimit"), "\"coordinator\";r=0;t=1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");

    // Another coordinator has a quota of their own.
    assert_eq!(b.post(WAITLIST, json!({})).await.status(), 200);

    // After the window, A is served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.post(WAITLIST, json!({})).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without a token the client's address has its quota; a bad token spends it too.
    let anonymous = app.anonymous();
    let r = anonymous.post("{ healthAuthorities { code } }", json!({})).await;
    assert_eq!(header(&r, "ratelimit-policy"), "\"anonymous\";q=3;w=3");
    assert_eq!(post_with(&app, "Bearer not.a.jwt", WAITLIST).await.status(), 401);
    assert_eq!(anonymous.post("{ healthAuthorities { code } }", json!({})).await.status(), 200);
    let r = anonymous.post("{ healthAuthorities { code } }", json!({})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "ratelimit"), "\"anonymous\";r=0;t=1");
    assert_eq!(b.post(WAITLIST, json!({})).await.status(), 200, "signed-in callers are not held to the address");
    // Behind one trusted proxy, the address it saw is the client.
    let proxied = app
        .http()
        .post(format!("{}/graphql", app.url))
        .header("x-forwarded-for", "203.0.113.5")
        .json(&json!({ "query": "{ healthAuthorities { code } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200, "another client behind the proxy has its own quota");

    let text = app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    let count = |role: &str| -> f64 {
        let name = format!("attach_rate_limited_total{{role=\"{role}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&name)).unwrap().trim().parse().unwrap()
    };
    assert!(count("coordinator") >= 1.0 && count("anonymous") >= 1.0, "{text}");
    assert_eq!(count("provider"), 0.0);
}

/// The `jti` of a token minted by the development key.
fn token_id(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().expect("minted tokens carry a jti").to_string()
}

/// The operators revoke one token, then a whole subject: each is refused on its
/// next use (cached or not), an open subscription signed in with it is closed,
/// everyone else is unaffected, and a broken file leaves the last list in force.
#[tokio::test]
async fn revoked_tokens_are_refused_and_their_subscriptions_closed() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("revoked.txt");
    std::fs::write(&list, "# nothing revoked yet\n").unwrap();
    let env = vec![
        ("ATTACH_AUTH__REVOKED".to_string(), list.display().to_string()),
        ("ATTACH_AUTH__REVOKED_REFRESH_SECS".to_string(), "1".to_string()),
    ];
    let app = TestApp::spawn(&dir.path().join("data"), Spawn { env, ..Spawn::default() }).await;
    let a = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    let b = app.token_for("coord-b", Role::Coordinator, &["province"], None);
    let status = |token: String| {
        let app = &app;
        async move { post_with(app, &format!("Bearer {token}"), WAITLIST).await }
    };
    assert_eq!(status(a.clone()).await.status(), 200, "verified and now remembered");
    let mut watching = connect_as(&app, "graphql-transport-ws", &a).await;
    subscribe(&mut watching, "1", "111", Some(0)).await;
    register(&app, "111", 801).await;
    assert_eq!(next_event(&mut watching).await["seq"], 1);

    let until_refused = |token: String| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = status(token.clone()).await;
            if r.status() == 401 {
                let body: Value = r.json().await.unwrap();
                return body["errors"][0]["message"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "never refused");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    std::fs::write(&list, format!("jti {}\n", token_id(&a))).unwrap();
    assert!(until_refused(a.clone()).await.contains("revoked"));
    let frame = closed(&mut watching).await.expect("the subscription signed in with it was closed");
    assert!(frame.starts_with("4403 UNAUTHENTICATED: the token was revoked"), "{frame}");
    assert_eq!(status(b.clone()).await.status(), 200, "another subject is unaffected");
    let a_again = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    assert_eq!(status(a_again).await.status(), 200, "a new token of the same subject is not that token");

    std::fs::write(&list, format!("jti {}\nsub coord-b\n", token_id(&a))).unwrap();
    until_refused(b.clone()).await;
    let b_again = app.token_for("coord-b", Role::Coordinator, &["province"], None);
    assert_eq!(status(b_again).await.status(), 401, "every token of a revoked subject");
    std::fs::write(&list, "ban everyone\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(status(b).await.status(), 401, "a broken file leaves the last list in force");
    // Refreshed every second for 2.5 s, broken all along: told once.
    let told = app.log.lock().unwrap().matches("the token revocation list was not reloaded").count();
    assert_eq!(told, 1, "a file that stays broken is logged once");
    // A revoked token's use is in the audit log under its subject, over HTTP and
    // a socket's sign-in (a tester's stolen-token attempts left no trace); a
    // token that is not genuine is not, its subject could be anyone's.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&app)).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {a}") } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    assert!(closed(&mut ws).await.expect("refused").contains("revoked"));
    assert_eq!(post_with(&app, "Bearer not.a.jwt", WAITLIST).await.status(), 401);
    let signed = sign_ins(&app).await;
    let of = |sub: &str| signed.iter().filter(|r| r["subject"] == sub).count();
    assert!(of("coord-a") >= 2 && of("coord-b") >= 2, "{signed:?}");
    assert_eq!(of("coord-a") + of("coord-b"), signed.len(), "nobody else: {signed:?}");
    assert!(signed.iter().all(|r| r["target"] == "revoked" && r["outcome"] == "UNAUTHENTICATED"), "{signed:?}");
}

/// The audit log's records of tokens refused at the door.
async fn sign_ins(app: &TestApp) -> Vec<Value> {
    let operations = app.token_for("ops-1", Role::Operations, &[], None);
    let log = r#"{ auditLog(first: 100, filter: { operation: "signIn" }) { nodes { subject target outcome } } }"#;
    let body: Value = post_with(app, &format!("Bearer {operations}"), log).await.json().await.unwrap();
    body["data"]["auditLog"]["nodes"].as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

fn ws_request(app: &TestApp) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    request
}

async fn closed(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer within 10 s") {
            Some(Ok(Message::Close(frame))) => {
                return Some(frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default());
            }
            Some(Ok(Message::Text(t))) if t.contains("connection_ack") => return None,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Some(String::new()),
        }
    }
}

#[tokio::test]
async fn subscriptions_need_a_valid_token_and_are_capped_per_principal_across_connections() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ATTACH_LIMITS__SUBSCRIPTIONS_PER_PRINCIPAL".to_string(), "2".to_string())];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let a = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    let b = app.token_for("coord-b", Role::Coordinator, &["province"], None);

    // A bad token in connection_init closes the socket instead of acknowledging it.
    let url = format!("{}/graphql", app.url.replacen("http", "ws", 1));
    let request = |auth: Option<&str>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = url.clone().into_client_request().unwrap();
        r.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        if let Some(auth) = auth {
            r.headers_mut().insert("Authorization", auth.parse().unwrap());
        }
        r
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(request(None)).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "authorization": "Bearer not.a.jwt" } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    let reason = closed(&mut ws).await.expect("the socket is closed");
    assert!(reason.starts_with("4403 UNAUTHENTICATED"), "graphql-transport-ws's Forbidden: {reason}");
    // So does a payload that is not an object (it was taken as no sign-in at all),
    // and a credential without its scheme, each saying what is wrong.
    let a_bearer = format!("Bearer {a}");
    for (payload, says) in
        [(json!(a_bearer), "payload is not an object"), (json!({ "Authorization": a }), "not `Bearer <token>`")]
    {
        let (mut ws, _) = tokio_tungstenite::connect_async(request(None)).await.unwrap();
        ws.send(Message::text(json!({ "type": "connection_init", "payload": payload }).to_string())).await.unwrap();
        let reason = closed(&mut ws).await.expect("the socket is closed");
        assert!(reason.starts_with("4403 UNAUTHENTICATED") && reason.contains(says), "{reason}");
    }

    // A bad token on the upgrade request is refused before the upgrade.
    assert!(tokio_tungstenite::connect_async(request(Some("Bearer not.a.jwt"))).await.is_err());

    // Without a token, a subscription is refused by the core.
    let (mut ws, _) = tokio_tungstenite::connect_async(request(None)).await.unwrap();
    ws.send(Message::text(json!({ "type": "connection_init" }).to_string())).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "connection_ack");
    subscribe(&mut ws, "1", "111", None).await;
    let refused = next_message(&mut ws).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");

    // The token on the upgrade request works too.
    let (mut by_header, _) = tokio_tungstenite::connect_async(request(Some(&format!("Bearer {a}")))).await.unwrap();
    by_header.send(Message::text(json!({ "type": "connection_init" }).to_string())).await.unwrap();
    assert_eq!(next_message(&mut by_header).await["type"], "connection_ack");
    subscribe(&mut by_header, "1", "111", Some(0)).await;
    register(&app, "111", 701).await;
    assert_eq!(next_event(&mut by_header).await["seq"], 1);

    // A second connection of A's holds A's second subscription, proven live...
    let mut second = connect_as(&app, "graphql-transport-ws", &a).await;
    subscribe(&mut second, "1", "112", Some(0)).await;
    register(&app, "112", 702).await;
    assert_eq!(next_event(&mut second).await["seq"], 1);
    // ...so a third, on a fresh connection, is refused.
    let mut third = connect_as(&app, "graphql-transport-ws", &a).await;
    subscribe(&mut third, "1", "113", None).await;
    let refused = next_message(&mut third).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    assert_eq!(next_message(&mut third).await["type"], "complete");

    // B is not held to A's cap.
    let mut other = connect_as(&app, "graphql-transport-ws", &b).await;
    subscribe(&mut other, "1", "113", Some(0)).await;
    register(&app, "113", 703).await;
    assert_eq!(next_event(&mut other).await["seq"], 1);

    // When A closes a connection, its subscription's place comes back.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 2;
    loop {
        let query = json!({ "id": n.to_string(), "type": "subscribe",
            "payload": { "query": SUBSCRIBE, "variables": { "c": "113", "after": 0 } } });
        third.send(Message::text(query.to_string())).await.unwrap();
        let msg = next_message(&mut third).await;
        if msg["type"] == "next" && msg["payload"].get("errors").is_none() {
            break;
        }
        let done = next_message(&mut third).await;
        assert_eq!(done["type"], "complete", "{done}");
        assert!(Instant::now() < deadline, "the place never came back: {msg}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        n += 1;
    }
}

#[tokio::test]
async fn a_subscription_connection_ends_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("ATTACH_AUTH__LEEWAY_SECS".to_string(), "0".to_string())];
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let request = attach_gateway::auth::dev::TokenRequest {
        subject: "coord-short".to_string(),
        role: Role::Coordinator,
        scope: vec!["province".to_string()],
        provider: None,
        ttl: Duration::from_secs(2),
    };
    let token = app.dev_key().mint("attach-dev", "attach", &request).unwrap();
    let started = Instant::now();
    let mut ws = connect_as(&app, "graphql-transport-ws", &token).await;
    subscribe(&mut ws, "1", "111", Some(0)).await;
    register(&app, "111", 801).await;
    assert_eq!(next_event(&mut ws).await["seq"], 1, "live while the token is");
    let frame = closed(&mut ws).await.expect("the socket closes once the token expires");
    assert!(frame.starts_with("4403 UNAUTHENTICATED: the token expired"), "told why, not just dropped: {frame}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Used after it expired: refused, and recorded under its subject.
    assert_eq!(post_with(&app, &format!("Bearer {token}"), WAITLIST).await.status(), 401);
    let signed = sign_ins(&app).await;
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert_eq!((&signed[0]["subject"], &signed[0]["target"]), (&json!("coord-short"), &json!("expired")));
}

#[tokio::test]
async fn a_subscription_id_in_use_closes_the_connection_with_4409() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let token = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    let mut ws = connect_as(&app, "graphql-transport-ws", &token).await;
    subscribe(&mut ws, "1", "111", Some(0)).await;
    // An id the client completed is free again.
    ws.send(Message::text(json!({ "id": "1", "type": "complete" }).to_string())).await.unwrap();
    subscribe(&mut ws, "1", "111", Some(0)).await;
    subscribe(&mut ws, "2", "112", Some(0)).await;
    // No `complete` comes for the operation the client completed (graphql-transport-ws sends
    // none, and the client would take it for the end of the new "1").
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
        assert!(!matches!(&m, Message::Text(t) if t.contains("complete")), "{m:?}");
    }
    register(&app, "111", 801).await;
    let event = next_message(&mut ws).await;
    assert_eq!((&event["type"], &event["id"]), (&json!("next"), &json!("1")), "{event}");
    // A second operation under an id in use ends the connection, as graphql-transport-ws says.
    subscribe(&mut ws, "2", "111", Some(0)).await;
    let frame = closed(&mut ws).await.expect("closed");
    assert_eq!(frame, "4409 Subscriber for 2 already exists");

    // A subscribe before the connection is acknowledged is 4401 (Unauthorized).
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut early, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    subscribe(&mut early, "1", "111", Some(0)).await;
    let frame = closed(&mut early).await.expect("closed");
    assert!(frame.starts_with("4401 "), "{frame}");

    // A message over the size limit (max_body_bytes) is 1009 (too big), with a reason.
    let mut big = connect_as(&app, "graphql-transport-ws", &token).await;
    big.send(Message::text(format!(r#"{{"type":"ping","payload":{{"x":"{}"}}}}"#, "x".repeat(70_000)))).await.unwrap();
    let frame = closed(&mut big).await.expect("closed");
    assert!(frame.starts_with("1009 "), "{frame}");

    // A frame announcing more than a message may hold is refused when its header
    // arrives, not after the server has taken in (and held) its payload.
    big_frame_is_refused_at_its_header(&app).await;

    // A message the protocol does not know is 4400 (Bad Request), and so is
    // one of the legacy protocol's, which async-graphql would take on this one
    // too (since session 19; before, `start` ran as `subscribe` does).
    for message in [r#"{"type":"bogus"}"#, r#"{"id":"9","type":"start","payload":{"query":"{ __typename }"}}"#] {
        let mut odd = connect_as(&app, "graphql-transport-ws", &token).await;
        odd.send(Message::text(message)).await.unwrap();
        let frame = closed(&mut odd).await.expect("closed");
        assert!(frame.starts_with("4400 "), "{message}: {frame}");
    }

    // A subscription refused before it runs (it fails validation) is answered
    // `error`, with the errors and their codes, and nothing after it: the
    // connection's next message answers the client's ping (before session 19,
    // `next` with the errors, then `complete`).
    let mut invalid = connect_as(&app, "graphql-transport-ws", &token).await;
    let bad = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": "subscription { communityEvents(communityCode: \"111\") { nope } }" } });
    invalid.send(Message::text(bad.to_string())).await.unwrap();
    let refused = next_message(&mut invalid).await;
    assert_eq!((&refused["type"], &refused["id"]), (&json!("error"), &json!("1")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "INVALID_INPUT", "{refused}");
    invalid.send(Message::text(json!({ "type": "ping" }).to_string())).await.unwrap();
    loop {
        let after = tokio::time::timeout(Duration::from_secs(10), invalid.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(text) = after else { continue };
        let message: Value = serde_json::from_str(&text).unwrap();
        match message["type"].as_str() {
            Some("pong") => break,
            Some("ping") => continue, // the server's keepalive
            _ => panic!("nothing follows the error: {message}"),
        }
    }
}

/// One request of many aliased top-level fields costs what that many
/// requests would: aliases do not multiply what a quota allows.
#[tokio::test]
async fn each_top_level_field_counts_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATTACH_LIMITS__RATE__ENABLED", "true"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__PER_MINUTE", "1"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__BURST", "6"),
        ("ATTACH_LIMITS__RATE__COORDINATOR__PER_MINUTE", "1"),
        ("ATTACH_LIMITS__RATE__COORDINATOR__BURST", "3"),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let registrations = |n: u32, from: u32| {
        let fields: Vec<String> =
            (0..n).map(|i| format!("r{i}: registerHousehold(input: $h{i}) {{ reference }}")).collect();
        let params: Vec<String> = (0..n).map(|i| format!("$h{i}: RegisterHouseholdInput!")).collect();
        let query = format!("mutation({}) {{ {} }}", params.join(", "), fields.join(" "));
        let member = |i: u32| {
            json!({ "community": "111", "postalCode": "V0B 1M0",
            "members": [{ "phn": phn(from + i), "givenName": "Ana", "surname": "Silva", "dateOfBirth": "1990-01-01" }] })
        };
        let vars: serde_json::Map<String, Value> = (0..n).map(|i| (format!("h{i}"), member(i))).collect();
        (query, Value::Object(vars))
    };
    // Over a WebSocket (its upgrade is one of the address's requests), each operation's fields count.
    let token = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    let mut ws = connect_as(&app, "graphql-transport-ws", &token).await;
    let op = |id: &str, n: usize| {
        let fields: Vec<String> = (0..n).map(|i| format!("h{i}: healthAuthorities {{ code }}")).collect();
        json!({ "id": id, "type": "subscribe", "payload": { "query": format!("{{ {} }}", fields.join(" ")) } })
    };
    ws.send(Message::text(op("1", 4).to_string())).await.unwrap();
    let refused = next_message(&mut ws).await;
    assert_eq!(
        (&refused["type"], &refused["payload"][0]["extensions"]["code"]),
        (&json!("error"), &json!("INVALID_INPUT"))
    );
    ws.send(Message::text(op("2", 2).to_string())).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "next");
    assert_eq!(next_message(&mut ws).await["type"], "complete");
    ws.send(Message::text(op("3", 1).to_string())).await.unwrap();
    let refused = next_message(&mut ws).await;
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED", "1 + 2 + this one: {refused}");

    let anonymous = app.anonymous();
    // Over HTTP: seven registrations at once are more than a burst of six: refused whole, none made.
    let (query, vars) = registrations(7, 900);
    let r = anonymous.post(&query, vars).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("7 top-level fields"), "{body}");
    // Three are three requests' worth: with the upgrade and the refused one, one is left.
    let (query, vars) = registrations(3, 900);
    let r = anonymous.post(&query, vars).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").starts_with("\"anonymous\";r=1;"), "{r:?}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("errors").is_none() && body["data"]["r2"]["reference"].is_string(),
        "the first PHNs were free: {body}"
    );
    // Fields a variable's @skip or @include leaves out (a default counts) do not run and cost nothing.
    let skipping = "query($s: Boolean!, $i: Boolean = false) { a: healthAuthorities @skip(if: $s) { code } \
                    b: healthAuthorities @include(if: $i) { code } c: healthAuthorities { code } }";
    let r = anonymous.post(skipping, json!({ "s": true })).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").starts_with("\"anonymous\";r=0;"), "one field charged: {r:?}");
    let body: Value = r.json().await.unwrap();
    let keys = body["data"].as_object().map(|d| d.keys().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(keys, Some(vec!["c"]), "{body}");
    let (query, vars) = registrations(1, 910);
    assert_eq!(anonymous.post(&query, vars).await.status(), 429, "nothing left");
    // The address's anonymous quota is spent, but a coordinator signing in with
    // `connection_init` (its upgrade carries no token) is let in, on their own quota.
    let other = app.token_for("coord-b", Role::Coordinator, &["province"], None);
    let mut ws = connect_as(&app, "graphql-transport-ws", &other).await;
    ws.send(Message::text(op("4", 1).to_string())).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "next", "coord-b's own quota");
    // Without signing in, the connection is closed: the address has nothing left.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut unsigned, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    unsigned.send(Message::text(json!({ "type": "connection_init" }).to_string())).await.unwrap();
    let frame = closed(&mut unsigned).await.expect("closed");
    assert!(frame.contains("too many requests from this address"), "{frame}");
    // Nor with a token that is not valid: it counts against the address, as over
    // HTTP (a tester's 150 such sign-ins were each refused as a bad token, uncounted).
    let mut request = format!("{}/graphql", app.url.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut forged, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {other}x") } });
    forged.send(Message::text(init.to_string())).await.unwrap();
    let frame = closed(&mut forged).await.expect("closed");
    assert!(frame.contains("too many requests from this address"), "{frame}");
}

#[tokio::test]
async fn operations_over_a_websocket_count_against_the_callers_quota() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATTACH_LIMITS__RATE__ENABLED", "true"),
        ("ATTACH_LIMITS__RATE__COORDINATOR__PER_MINUTE", "1"),
        ("ATTACH_LIMITS__RATE__COORDINATOR__BURST", "3"),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let token = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    // Each operation the connection starts is one request of the principal it signed in as
    // (the upgrade, before connection_init names the token, was one of its address's).
    let mut ws = connect_as(&app, "graphql-transport-ws", &token).await;
    let query = |id: &str| json!({ "id": id, "type": "subscribe", "payload": { "query": "{ __typename }" } });
    for id in ["1", "2", "3"] {
        ws.send(Message::text(query(id).to_string())).await.unwrap();
        let answer = next_message(&mut ws).await;
        assert_eq!((&answer["type"], &answer["payload"]["data"]["__typename"]), (&json!("next"), &json!("Query")));
        assert_eq!(next_message(&mut ws).await["type"], "complete");
    }
    ws.send(Message::text(query("4").to_string())).await.unwrap();
    let refused = next_message(&mut ws).await;
    assert_eq!((&refused["type"], &refused["id"]), (&json!("error"), &json!("4")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    // The connection stays, and the quota is the one HTTP requests draw on.
    assert_eq!(post_with(&app, &format!("Bearer {token}"), WAITLIST).await.status(), 429);
    ws.send(Message::text(json!({ "type": "ping" }).to_string())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(&m, Message::Text(t) if t.contains("pong")) {
                return true;
            }
        }
        false
    });
    assert!(pong.await.unwrap(), "the connection is still open");
}

#[tokio::test]
async fn subscribers_are_told_when_the_server_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let token = app.token_for("coord-a", Role::Coordinator, &["province"], None);
    let mut ws = connect_as(&app, "graphql-transport-ws", &token).await;
    subscribe(&mut ws, "1", "111", Some(0)).await;
    let status = std::process::Command::new("kill").args(["-TERM", &app.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let frame = closed(&mut ws).await.expect("closed");
    assert!(frame.starts_with("1001 "), "going away, with a close frame: {frame}");
}

/// A request of several fields refused for now says how long to wait for all
/// of them, counting the unit the retry's admission takes first: a caller who
/// waits as told is then let through. Before, `Retry-After` was one unit short
/// and a patient's retry (a unit a second) was refused every time.
#[tokio::test]
async fn a_request_of_several_fields_that_waits_as_told_is_let_through() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATTACH_LIMITS__RATE__ENABLED", "true"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__PER_MINUTE", "60"),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__BURST", "2"),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
    let anonymous = app.anonymous();
    const TWO: &str = "{ a: healthAuthorities { code } b: healthAuthorities { code } }";
    assert_eq!(anonymous.post("{ healthAuthorities { code } }", json!({})).await.status(), 200);
    // One unit left: the admission takes it, the second field finds none.
    let refused = anonymous.post(TWO, json!({})).await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = header(&refused, "retry-after").parse().unwrap();
    tokio::time::sleep(Duration::from_millis(wait * 1_000 + 100)).await;
    let again = anonymous.post(TWO, json!({})).await;
    assert_eq!(again.status(), 200, "waited {wait} s as told: {:?}", again.headers());
}

/// A request refused before its body is read (a bad token here) leaves the
/// connection unable to carry another: the answer says it closes, so a client
/// does not send its next request into a connection that is going away.
#[tokio::test]
async fn a_request_refused_before_its_body_says_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path(), Spawn::default()).await;
    let address = app.url.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Headers only: the body is "still on its way".
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer not-a-token\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // A body over the limit is not read to its end either.
    let big = format!("{{\"query\": \"{}\"}}", "x".repeat(70_000));
    let r = app.http().post(format!("{}/graphql", app.url)).header("content-type", "application/json").body(big);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
}

/// Opens a WebSocket by hand, sends only the header of a 15 MB text frame and
/// a few bytes of it, and expects the server to close (1009) at once.
async fn big_frame_is_refused_at_its_header(app: &TestApp) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let upgrade = format!(
        "GET /graphql HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // FIN and text; masked, with a 64-bit length of 15,000,000; the mask; 100 bytes.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&15_000_000u64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[b'x'; 100]);
    tcp.write_all(&frame).await.unwrap();
    let mut answer = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer)).await;
    let n = read.expect("the server waited for the payload").unwrap();
    assert!(n >= 4 && answer[0] == 0x88 && u16::from_be_bytes([answer[2], answer[3]]) == 1009, "{:?}", &answer[..n]);
}
