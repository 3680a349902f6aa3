//! Gateways that share one Redis share their rate limits: behind a load
//! balancer a caller has one quota, not one per gateway. When Redis cannot be
//! reached each gateway goes by its own count, and shares again once it is back.

use attach_actors::access::Role;
use serde_json::json;

use crate::helpers::{Spawn, TestApp};
use crate::redis::RedisServer;

const TRIVIAL: &str = "{ __typename }";

fn limited(redis: &RedisServer, shared: bool) -> Spawn {
    let env = [
        ("ATTACH_REDIS", redis.url()),
        ("ATTACH_LIMITS__RATE__ENABLED", "true".into()),
        ("ATTACH_LIMITS__RATE__SHARED", shared.to_string()),
        // A stopped Redis refuses at once; a busy machine (the suite on two cores)
        // can take longer than the default 50 ms to answer a live one.
        ("ATTACH_LIMITS__RATE__SHARED_TIMEOUT_MS", "1000".into()),
        // One request's worth comes back a minute: nothing refills during the test.
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__PER_MINUTE", "1".into()),
        ("ATTACH_LIMITS__RATE__ANONYMOUS_PER_IP__BURST", "5".into()),
        ("ATTACH_LIMITS__RATE__COORDINATOR__PER_MINUTE", "1".into()),
        ("ATTACH_LIMITS__RATE__COORDINATOR__BURST", "2".into()),
        ("ATTACH_LIMITS__RATE__SUPPORT__PER_MINUTE", "1".into()),
        ("ATTACH_LIMITS__RATE__SUPPORT__BURST", "4".into()),
    ];
    Spawn { env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), ..Spawn::default() }
}

/// The statuses of `n` anonymous trivial queries to `app`, in order.
async fn anonymous(app: &TestApp, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(app.anonymous().post(TRIVIAL, json!({})).await.status().as_u16());
    }
    out
}

async fn metric(app: &TestApp, name: &str) -> Option<u64> {
    let text = app.http().get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test]
async fn two_gateways_share_one_quota_through_redis() {
    let mut redis = RedisServer::start();
    let (da, db, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestApp::spawn(da.path(), limited(&redis, true)).await;
    let b = TestApp::spawn(db.path(), limited(&redis, true)).await;

    // Anonymous calls from 127.0.0.1: a burst of 5 between both gateways.
    assert_eq!(anonymous(&a, 3).await, [200, 200, 200]);
    let first_at_b = b.anonymous().post(TRIVIAL, json!({})).await;
    assert_eq!(first_at_b.status(), 200);
    assert_eq!(first_at_b.headers()["ratelimit"], "\"anonymous\";r=1;t=240", "b counts a's requests too");
    let refused = b.anonymous().post(TRIVIAL, json!({})).await;
    assert_eq!(refused.status(), 200, "the fifth");
    let refused = b.anonymous().post(TRIVIAL, json!({})).await;
    assert_eq!(refused.status(), 429, "the sixth, though b has seen only three");
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(redis.cli(&["KEYS", "attach:rate:anonymous:*"]).contains("127.0.0.1"), "the quota lives in Redis");

    // A signed-in caller is one subject on both gateways (each signs its own token here).
    let token = |app: &TestApp| app.token_for("shared-coordinator", Role::Coordinator, &["province"], None);
    let (at_a, at_b) = (a.with_token(token(&a)), b.with_token(token(&b)));
    assert_eq!(at_a.post(TRIVIAL, json!({})).await.status(), 200);
    assert_eq!(at_b.post(TRIVIAL, json!({})).await.status(), 200);
    assert_eq!(at_a.post(TRIVIAL, json!({})).await.status(), 429, "a burst of 2 across both");
    // A request of three top-level fields is three requests' worth, in Redis too.
    let support = |app: &TestApp| app.token_for("shared-support", Role::Support, &["province"], None);
    let (at_a, at_b) = (a.with_token(support(&a)), b.with_token(support(&b)));
    let three = "{ x: healthAuthorities { code } y: healthAuthorities { code } z: healthAuthorities { code } }";
    let r = at_a.post(three, json!({})).await;
    assert_eq!((r.status().as_u16(), r.headers()["ratelimit"].to_str().unwrap()), (200, "\"support\";r=1;t=180"));
    assert_eq!(at_b.post(TRIVIAL, json!({})).await.status(), 200, "the fourth of a burst of 4");
    assert_eq!(at_b.post(TRIVIAL, json!({})).await.status(), 429, "b has seen one, Redis four");
    assert_eq!(metric(&a, "attach_rate_limit_shared_misses_total").await, Some(0));

    // A gateway that does not share keeps its own count.
    let c = TestApp::spawn(dc.path(), limited(&redis, false)).await;
    assert_eq!(anonymous(&c, 6).await, [200, 200, 200, 200, 200, 429]);
    assert_eq!(metric(&c, "attach_rate_limit_shared_misses_total").await, None);
    drop(c);

    // Redis down: b goes by its own count (3 seen, a burst of 5) and says so.
    redis.stop();
    assert_eq!(anonymous(&b, 3).await, [200, 200, 429]);
    assert_eq!(metric(&b, "attach_rate_limit_shared_misses_total").await, Some(2));
    b.log_shows("shared rate limits cannot reach Redis").await;

    // Redis back, empty: a (whose connection the restart dropped) shares again.
    redis.restart();
    assert_eq!(anonymous(&a, 1).await, [200]);
    assert!(!redis.cli(&["GET", "attach:rate:anonymous:127.0.0.1"]).trim().is_empty(), "counted in Redis");
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert_eq!(anonymous(&a, 1).await, [200], "the script is loaded again");
    assert_eq!(metric(&a, "attach_rate_limit_shared_misses_total").await, Some(0), "each answer came from Redis");
    assert_eq!(anonymous(&a, 1).await, [429], "a's own count is spent as well");
}
