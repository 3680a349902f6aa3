//! The scenarios and the target they run against.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::Args;
use super::recorder::{Outcome, Recorder};

/// A named scenario of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// A household registers (public, no token).
    Register,
    /// A coordinator runs a matching round in a community.
    Match,
    /// A coordinator reads a page of a community's waitlist.
    Waitlist,
    /// A provider's panel is read (support or the provider).
    Panel,
    /// A community's statistics are read.
    Stats,
    /// A provider submits a panel list (a CSV of new patients, multipart upload).
    Upload,
    /// A household registers, then a coordinator moves it to another of the
    /// target's communities (three durable steps across two shards).
    Move,
    /// A household registers, then has a baby: the household changes and the
    /// newborn's PHN is claimed.
    Update,
}

impl Scenario {
    /// Every scenario.
    const ALL: [Scenario; 8] = [
        Scenario::Register,
        Scenario::Match,
        Scenario::Waitlist,
        Scenario::Panel,
        Scenario::Stats,
        Scenario::Upload,
        Scenario::Move,
        Scenario::Update,
    ];

    /// Parses a scenario name.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match Self::ALL.into_iter().find(|s| s.name() == name) {
            Some(scenario) => Ok(scenario),
            None => {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                bail!("no scenario is called `{name}` ({})", names.join(", "))
            }
        }
    }

    /// The name the mix gives it (`--mix NAME=WEIGHT`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Match => "match",
            Scenario::Waitlist => "waitlist",
            Scenario::Panel => "panel",
            Scenario::Stats => "stats",
            Scenario::Upload => "upload",
            Scenario::Move => "move",
            Scenario::Update => "update",
        }
    }

    /// The operation name in reports.
    pub fn operation(self) -> &'static str {
        match self {
            Scenario::Register => "registerHousehold",
            Scenario::Match => "runMatching",
            Scenario::Waitlist => "waitlistPage",
            Scenario::Panel => "panelPage",
            Scenario::Stats => "communityStatistics",
            Scenario::Upload => "submitPanel",
            Scenario::Move => "moveRegistration",
            Scenario::Update => "updateHousehold",
        }
    }
}

/// The communities (and their providers) a run loads.
pub struct Target {
    /// GraphQL endpoints: one per node given, used in turn.
    pub endpoints: Vec<String>,
    /// Community codes.
    pub communities: Vec<String>,
    /// Provider ids homed in them (read when the mix reads panels).
    pub providers: Vec<String>,
}

impl Target {
    /// Asks the server which communities `args.target` names, and their providers.
    pub async fn resolve(client: &reqwest::Client, args: &Args, recorder: &Recorder) -> anyhow::Result<Target> {
        let endpoints: Vec<String> = super::base_urls(&args.url).iter().map(|u| format!("{u}/graphql")).collect();
        ensure!(!endpoints.is_empty(), "--url names no server");
        let endpoint = endpoints[0].clone();
        let regions =
            post(client, &endpoint, None, "{ healthAuthorities { code communities { code } } }", json!({}), recorder)
                .await
                .context("reading the regions")?;
        let mut communities = Vec::new();
        for part in args.target.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            // Whether the part names a served community, even one an earlier part named
            // (`ha:IHA,community:111` overlaps, and is no mistake).
            let mut named = false;
            for ha in regions["healthAuthorities"].as_array().into_iter().flatten() {
                for c in ha["communities"].as_array().into_iter().flatten() {
                    let code = c["code"].as_str().unwrap_or_default().to_string();
                    let wanted = match part.split_once(':') {
                        None if part == "province" => true,
                        // As the server reads a health authority's code: in any case.
                        Some(("ha", h)) => ha["code"].as_str().is_some_and(|code| code.eq_ignore_ascii_case(h)),
                        Some(("community", want)) => code == want,
                        _ => bail!("`{part}` is not `province`, `ha:CODE` or `community:CODE`"),
                    };
                    named |= wanted;
                    if wanted && !communities.contains(&code) {
                        communities.push(code);
                    }
                }
            }
            ensure!(named, "`{part}` names no community this server serves");
        }
        let mut providers = Vec::new();
        if args.mix.contains("panel") {
            for c in &communities {
                let q = "query($c: String!) { providers(communityCode: $c) { id } }";
                let found = post(client, &endpoint, args.token.as_deref(), q, json!({ "c": c }), recorder)
                    .await
                    .with_context(|| format!("listing community {c}'s providers (does --token allow it?)"))?;
                providers.extend(
                    found["providers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["id"].as_str())
                        .map(String::from),
                );
                if providers.len() >= 10_000 {
                    break;
                }
            }
        }
        Ok(Target { endpoints, communities, providers })
    }

    /// The endpoint ticket `n` goes to: the nodes in turn.
    pub fn endpoint(&self, n: u64) -> &str {
        &self.endpoints[usize::try_from(n).unwrap_or(0) % self.endpoints.len()]
    }
}

/// A set-up request: must succeed; returns `data`. Counted, not measured.
async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
    recorder: &Recorder,
) -> anyhow::Result<Value> {
    recorder.count_request();
    let mut request = client.post(endpoint).json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let body: Value = request.send().await?.json().await?;
    ensure!(body.get("errors").is_none(), "the server answered with errors: {}", body["errors"]);
    Ok(body["data"].clone())
}

/// Sends one request of `scenario` (ticket `n`) and records it.
pub async fn send(
    scenario: Scenario,
    n: u64,
    client: &reqwest::Client,
    target: &Target,
    args: &Args,
    recorder: &Recorder,
    rng: &mut StdRng,
) {
    let community = &target.communities[rng.random_range(0..target.communities.len())];
    match scenario {
        Scenario::Upload => return upload(n, client, target, args, recorder).await,
        Scenario::Move | Scenario::Update => {
            return register_then(scenario, n, community, client, target, args, recorder, rng).await;
        }
        _ => {}
    }
    let (query, variables, token) = match scenario {
        Scenario::Upload | Scenario::Move | Scenario::Update => unreachable!("sent above"),
        Scenario::Register => {
            let Some(member) = member(args.phn_start, n) else { return out_of_phns(recorder, "registerHousehold") };
            (REGISTER, json!({ "i": household(community, vec![member]) }), None)
        }
        Scenario::Match => (
            "mutation($c: String!) { runMatching(communityCode: $c) { proposals { id } } }",
            json!({ "c": community }),
            args.token.as_deref(),
        ),
        Scenario::Waitlist => (
            "query($c: String!) { waitlist(communityCode: $c, first: 20) { totalCount nodes { reference registeredAt householdSize } } }",
            json!({ "c": community }),
            args.token.as_deref(),
        ),
        Scenario::Panel => {
            let Some(provider) = target.providers.get(rng.random_range(0..target.providers.len().max(1))) else {
                return;
            };
            (
                "query($p: ID!) { panel(providerId: $p, first: 20) { panelSize nodes { surname } } }",
                json!({ "p": provider }),
                args.panel_token.as_deref(),
            )
        }
        Scenario::Stats => (
            "query($c: String!) { communityStatistics(code: $c) { waitingHouseholds medianWaitDays } }",
            json!({ "c": community }),
            args.token.as_deref(),
        ),
    };
    let mut request = client.post(target.endpoint(n)).json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    measure(scenario, request, recorder).await;
}

const REGISTER: &str =
    "mutation($i: RegisterHouseholdInput!) { registerHousehold(input: $i) { reference placeInLine } }";

/// A household member with the first valid PHN of ticket `n`'s block of 13
/// bodies from `start` (any 11 bodies in a row hold a valid PHN).
fn member(start: u32, n: u64) -> Option<Value> {
    let start = start.saturating_add(u32::try_from(n).unwrap_or(u32::MAX).saturating_mul(13));
    let phn = (start..start.saturating_add(13)).find_map(attach_actors::domain::Phn::with_body)?.expose();
    Some(json!({ "phn": phn, "givenName": "Load", "surname": "Test", "dateOfBirth": "1990-01-01" }))
}

/// A ticket whose patients lie past the end of its PHN range: a failure, so a
/// run that has used its range up does not report the requests it could not
/// send as a success.
fn out_of_phns(recorder: &Recorder, operation: &str) {
    recorder.record(operation, Duration::ZERO, Outcome::Failed("PHN_RANGE_EXHAUSTED".into()));
}

fn household(community: &str, members: Vec<Value>) -> Value {
    json!({ "community": community, "postalCode": "V0B 1M0", "languages": ["en"], "members": members })
}

/// `move` and `update`: a household registers (measured as
/// `registerHousehold`), then changes (measured under the scenario's name).
#[allow(clippy::too_many_arguments)]
async fn register_then(
    scenario: Scenario,
    n: u64,
    community: &str,
    client: &reqwest::Client,
    target: &Target,
    args: &Args,
    recorder: &Recorder,
    rng: &mut StdRng,
) {
    let Some(first) = member(args.phn_start, n) else { return out_of_phns(recorder, "registerHousehold") };
    let register = client.post(target.endpoint(n)).json(&json!({
        "query": REGISTER, "variables": { "i": household(community, vec![first.clone()]) },
    }));
    let Some(body) = measure_as("registerHousehold", register, recorder).await else { return };
    let Some(reference) = body["data"]["registerHousehold"]["reference"].as_str() else { return };
    let (query, variables) = match scenario {
        Scenario::Move => {
            let others: Vec<_> = target.communities.iter().filter(|c| c.as_str() != community).collect();
            let Some(to) = others.get(rng.random_range(0..others.len().max(1))) else { return };
            (
                "mutation($r: ID!, $c: String!) { moveRegistration(reference: $r, communityCode: $c) { status } }",
                json!({ "r": reference, "c": to }),
            )
        }
        _ => {
            let Some(mut baby) = member(args.newborn_phn_start, n) else {
                return out_of_phns(recorder, scenario.name());
            };
            baby["dateOfBirth"] = json!(chrono::Utc::now().date_naive().to_string());
            baby["needs"] = json!(["NEWBORN"]);
            let mut grown = household(community, vec![first, baby]);
            grown.as_object_mut().map(|h| h.remove("community"));
            (
                "mutation($r: ID!, $h: HouseholdInput!) { updateHousehold(reference: $r, household: $h) { householdSize } }",
                json!({ "r": reference, "h": grown }),
            )
        }
    };
    // The change goes to the next node: on a cluster, it may well be one that forwards it.
    let mut request = client.post(target.endpoint(n + 1)).json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    measure(scenario, request, recorder).await;
}

/// Sends a request, times it and records how it ended.
async fn measure(scenario: Scenario, request: reqwest::RequestBuilder, recorder: &Recorder) {
    measure_as(scenario.operation(), request, recorder).await;
}

/// Sends a request, times and records it as `operation`; answers the body of a success.
async fn measure_as(operation: &'static str, request: reqwest::RequestBuilder, recorder: &Recorder) -> Option<Value> {
    recorder.count_request();
    let started = Instant::now();
    let (outcome, body) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.json::<Value>().await {
                Ok(body) => (Outcome::of_response(status, &body), Some(body)),
                Err(_) => (Outcome::Failed(format!("HTTP_{status}")), None),
            }
        }
        Err(_) => (Outcome::Failed("TRANSPORT".into()), None),
    };
    let ok = outcome == Outcome::Ok;
    let unreachable = outcome == Outcome::Failed("TRANSPORT".into());
    recorder.record(operation, started.elapsed(), outcome);
    // A server that went away refuses at once: without a pause each worker would
    // spin, counting thousands of "requests" a second that measure nothing.
    if unreachable {
        tokio::time::sleep(TRANSPORT_BACKOFF).await;
    }
    body.filter(|_| ok)
}

/// How long a worker waits after a request that never reached the server.
const TRANSPORT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A surname of letters only, different for every `i`.
fn surname(mut i: u64) -> String {
    let mut s = String::from("Load");
    loop {
        s.push(char::from(b'a' + (i % 26) as u8));
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

/// The CSV of upload ticket `n`: `rows` patients never uploaded before, as an
/// EMR export gives them (a header row, CRLF line ends).
pub fn panel_csv(n: u64, rows: u32, phn_start: u32, facility: &str) -> String {
    let mut csv = String::from("PHN,Surname,Given name,Date of birth,Service code,Facility\r\n");
    for k in 0..u64::from(rows) {
        let i = n * u64::from(rows) + k;
        let start = phn_start.saturating_add(u32::try_from(i * 13).unwrap_or(u32::MAX));
        if let Some(phn) = (start..start.saturating_add(13)).find_map(attach_actors::domain::Phn::with_body) {
            csv.push_str(&format!("{},{},Pat,1980-02-03,98990,{facility}\r\n", phn.expose(), surname(i)));
        }
    }
    csv
}

/// One panel submission: a GraphQL multipart request (the `Upload` spec).
async fn upload(n: u64, client: &reqwest::Client, target: &Target, args: &Args, recorder: &Recorder) {
    let (Some(provider), Some(facility)) = (&args.upload_provider, &args.upload_facility) else { return };
    let csv = panel_csv(n, args.upload_rows, args.upload_phn_start, facility);
    let operations = json!({
        "query": "mutation($p: ID!, $f: String!, $file: Upload!) { submitPanel(providerId: $p, facilityNumber: $f, file: $file) { accepted conflict panelSize } }",
        "variables": { "p": provider, "f": facility, "file": null },
    });
    const BOUNDARY: &str = "attach-loadtest-boundary-7d1f";
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\": [\"variables.file\"]}}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"panel.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n\
         --{BOUNDARY}--\r\n"
    );
    let mut request = client
        .post(target.endpoint(n))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body);
    if let Some(t) = &args.upload_token {
        request = request.bearer_auth(t);
    }
    measure(Scenario::Upload, request, recorder).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_files_hold_fresh_valid_rows() {
        let a = panel_csv(0, 50, 60_000_000, "0F111");
        let b = panel_csv(1, 50, 60_000_000, "0F111");
        assert_eq!(a.lines().count(), 51, "a header and 50 rows");
        let phns =
            |csv: &str| csv.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect::<Vec<_>>();
        let (pa, pb) = (phns(&a), phns(&b));
        assert!(pa.iter().all(|p| !pb.contains(p)), "each upload has new patients");
        assert!(pa.iter().all(|p| attach_actors::domain::Phn::parse(p).is_ok()));
        assert!(a.lines().skip(1).all(|l| l.split(',').nth(1).unwrap().chars().all(|c| c.is_ascii_alphabetic())));
    }
}
