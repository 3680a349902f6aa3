//! Starting the real `attach` binary and talking to it as a client would.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attach_actors::access::Role;
use attach_gateway::auth::dev::{DevKey, TokenRequest};
use attach_gateway::config::AuthSettings;
use serde_json::{Value, json};

/// The `attach` binary: `ATTACH_BIN`, else the one cargo built next to this test.
pub fn attach_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ATTACH_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/attach
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join(format!("attach{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not found: build it first (cargo test --workspace builds it)", bin.display());
    bin
}

/// The `attach-loadtest` binary, built beside `attach`.
pub fn loadtest_bin() -> PathBuf {
    let bin = attach_bin().with_file_name(format!("attach-loadtest{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not found: build it first (cargo test --workspace builds it)", bin.display());
    bin
}

/// The repository root (for the regions file).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// A running `attach serve` on a free loopback port with its own data directory.
pub struct TestApp {
    child: Child,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Everything the process wrote to stderr (its log).
    pub log: Arc<Mutex<String>>,
    /// Its data directory (which holds its development signing key).
    pub data_dir: PathBuf,
    client: reqwest::Client,
}

/// Options for a spawn.
#[derive(Default, Clone)]
pub struct Spawn {
    /// Extra `ATTACH_*` environment variables. Rate limits are off unless a
    /// test turns them on (`ATTACH_LIMITS__RATE__ENABLED=true`): tests send
    /// requests far faster than people do.
    pub env: Vec<(String, String)>,
    /// `--demo` size.
    pub demo: Option<String>,
    /// `--config` file.
    pub config: Option<PathBuf>,
    /// More flags of `attach serve` (`--node`, `--redis`).
    pub args: Vec<String>,
    /// The largest file the process may write (`ulimit -f`, with `SIGXFSZ`
    /// ignored so that a write past it fails with `EFBIG`, as on a full disk).
    pub max_file_bytes: Option<u64>,
}

impl TestApp {
    /// Waits (up to 10 s) until the server's log holds `text`: its output is
    /// read on another thread, so a line may land a moment after the request.
    pub async fn log_shows(&self, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.log.lock().unwrap().contains(text) {
            assert!(std::time::Instant::now() < deadline, "no `{text}` in the log:\n{}", self.log.lock().unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    /// Starts `attach serve` on `data_dir` and waits until `/readyz` says ready.
    pub async fn spawn(data_dir: &Path, opts: Spawn) -> TestApp {
        let mut cmd = match opts.max_file_bytes {
            // An ignored signal stays ignored across `exec`; `ulimit -f` counts 512-byte blocks.
            Some(bytes) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"", bytes / 512));
                sh.arg(attach_bin());
                sh
            }
            None => Command::new(attach_bin()),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--regions")
            .arg(repo_root().join("infra/regions/bc.toml"))
            .env("RUST_LOG", "info")
            .env("ATTACH_LIMITS__RATE__ENABLED", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.args(&opts.args);
        if let Some(demo) = &opts.demo {
            cmd.arg("--demo").arg(demo);
        }
        if let Some(config) = &opts.config {
            cmd.arg("--config").arg(config);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("attach starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("attach listening on ") {
                    let url = rest.split('/').take(3).collect::<Vec<_>>().join("/");
                    let _ = tx.send(url);
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("attach did not report its address; log:\n{}", log.lock().unwrap()));
        let app = TestApp { child, url, log, data_dir: data_dir.to_path_buf(), client: reqwest::Client::new() };
        app.wait_ready(Duration::from_secs(120)).await;
        app
    }

    async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.client.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "attach never became ready; log:\n{}", self.log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts a GraphQL request without a token (the public caller) and returns the whole JSON response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.anonymous().graphql(query, variables).await
    }

    /// Posts without a token and returns `data`, failing the test on any GraphQL error.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        self.anonymous().ok(query, variables).await
    }

    /// Posts without a token, expects an error, and returns the first one's `extensions.code`.
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        self.anonymous().error_code(query, variables).await
    }

    /// The development key the process made in its data directory.
    pub fn dev_key(&self) -> DevKey {
        DevKey::load(&self.data_dir).expect("attach serve made a development key")
    }

    /// A development token for `subject` in `role`, with `scope` entries
    /// (`province`, `ha:IHA`, `community:111`) and, for providers and medical
    /// directors, their `provider` id; valid for an hour, for the default
    /// issuer and audience.
    pub fn token_for(&self, subject: &str, role: Role, scope: &[&str], provider: Option<&str>) -> String {
        let request = TokenRequest {
            subject: subject.to_string(),
            role,
            scope: scope.iter().map(|s| s.to_string()).collect(),
            provider: provider.map(str::to_string),
            ttl: Duration::from_secs(3600),
        };
        let auth = AuthSettings::default();
        self.dev_key().mint(&auth.issuer, &auth.audience, &request).expect("a token is minted")
    }

    /// Like [`token_for`](Self::token_for), with a subject made from the role and provider.
    pub fn token(&self, role: Role, scope: &[&str], provider: Option<&str>) -> String {
        let subject = format!("test-{role}-{}", provider.unwrap_or("x"));
        self.token_for(&subject, role, scope, provider)
    }

    /// Sends requests with `token` as the bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Caller<'_> {
        Caller { app: self, token: Some(token.into()) }
    }

    /// Sends requests without a token.
    pub fn anonymous(&self) -> Caller<'_> {
        Caller { app: self, token: None }
    }

    /// A coordinator for the whole province.
    pub fn coordinator(&self) -> Caller<'_> {
        self.with_token(self.token(Role::Coordinator, &["province"], None))
    }

    /// Provider `id` themselves.
    pub fn provider(&self, id: &str) -> Caller<'_> {
        self.with_token(self.token(Role::Provider, &[], Some(id)))
    }

    /// Provider `id` as a medical director (who keeps the clinics naming them).
    pub fn medical_director(&self, id: &str) -> Caller<'_> {
        self.with_token(self.token(Role::MedicalDirector, &[], Some(id)))
    }

    /// Posts a GraphQL multipart request (the GraphQL multipart request spec)
    /// with one file for the variable `file_var`, with `token` as the bearer
    /// token if given, and returns the raw response.
    pub async fn upload_raw(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        file_var: &str,
        file: &[u8],
    ) -> reqwest::Response {
        const BOUNDARY: &str = "attach-e2e-boundary-7d1f";
        let operations = json!({ "query": query, "variables": variables });
        let mut body = Vec::new();
        let mut part = |headers: String, content: &[u8]| {
            body.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        };
        part("Content-Disposition: form-data; name=\"operations\"".into(), operations.to_string().as_bytes());
        let map = json!({ "0": [format!("variables.{file_var}")] });
        part("Content-Disposition: form-data; name=\"map\"".into(), map.to_string().as_bytes());
        part(
            "Content-Disposition: form-data; name=\"0\"; filename=\"panel.csv\"\r\nContent-Type: text/csv".into(),
            file,
        );
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        let mut request = self
            .client
            .post(format!("{}/graphql", self.url))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            // An upload the server refuses unread (413) ends its connection: never
            // hand that connection back to the pool for the next request.
            .header("connection", "close");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.body(body).send().await.expect("request sent")
    }

    /// The server's process id (to read its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The raw HTTP client, for requests that are not GraphQL.
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks that new connections are served. The pooled client keeps one
    /// connection with a task of its own, which would hide a server that
    /// stopped accepting after start-up.
    pub async fn assert_accepting(&self) {
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("a client");
        let r = fresh.get(format!("{}/healthz", self.url)).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "a new connection was not served");
    }

    /// Waits (up to `limit`) for the process to end on its own; its exit status.
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the process can be waited for") {
                return status;
            }
            assert!(Instant::now() < deadline, "attach did not stop; log:\n{}", self.log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process with SIGKILL (no shutdown, no flush) and waits for it.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL delivered");
        let _ = self.child.wait();

        self.log.lock().unwrap().clone()
    }
}

/// Requests to a [`TestApp`] as one caller: with a bearer token, or none.
pub struct Caller<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl Caller<'_> {
    /// Posts a GraphQL request and returns the HTTP response as it came.
    pub async fn post(&self, query: &str, variables: Value) -> reqwest::Response {
        let mut request = self.app.client.post(format!("{}/graphql", self.app.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.json(&json!({ "query": query, "variables": variables })).send().await.expect("request sent")
    }

    /// Posts a GraphQL request and returns the whole JSON response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.post(query, variables).await.json().await.expect("a JSON response")
    }

    /// Posts and returns `data`, failing the test on any GraphQL error.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let r = self.graphql(query, variables).await;
        assert!(r.get("errors").is_none(), "unexpected errors: {r:#}");
        r["data"].clone()
    }

    /// Posts, expects an error, and returns the first one's `extensions.code`.
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let r = self.graphql(query, variables).await;
        let errors = r["errors"].as_array().unwrap_or_else(|| panic!("expected an error: {r:#}"));
        assert!(!errors[0]["message"].as_str().unwrap_or("").is_empty(), "errors say what is wrong: {r:#}");
        errors[0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code: {r:#}")).to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Every test's process log is checked: no PHN any test sent may appear in it.
        if !std::thread::panicking() {
            assert_no_phn_in(&self.log.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

/// Every PHN the tests of this binary have made with [`phn`].
static PHNS_SENT: Mutex<std::collections::BTreeSet<String>> = Mutex::new(std::collections::BTreeSet::new());

/// A registration's reference as providers, delegates and other communities'
/// coordinators are given it: its first four and last two characters.
pub fn masked(reference: &str) -> String {
    format!("{}…{}", &reference[..4], &reference[reference.len() - 2..])
}

/// A valid PHN made from a number (bodies without a check digit are skipped).
/// Remembered, so that [`assert_no_phn_in`] can look for it in process logs.
pub fn phn(i: u32) -> String {
    let phn =
        (i * 7919..).find_map(attach_actors::domain::Phn::with_body).expect("some body has a check digit").expose();
    PHNS_SENT.lock().unwrap_or_else(|e| e.into_inner()).insert(phn.clone());
    phn
}

/// Fails if any PHN made by [`phn`] appears in `log`.
pub fn assert_no_phn_in(log: &str) {
    let sent = PHNS_SENT.lock().unwrap_or_else(|e| e.into_inner());
    let leaked: Vec<&String> = sent.iter().filter(|p| log.contains(p.as_str())).collect();
    assert!(leaked.is_empty(), "{} PHN(s) appeared in a process log", leaked.len());
}
