//! The command line refuses what it cannot run, before touching any server.

use std::process::Command;

fn loadtest(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attach-loadtest")).args(args).output().expect("the tool runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn unbounded_or_unknown_runs_are_refused() {
    let (ok, text) = loadtest(&["run", "--url", "http://127.0.0.1:9", "--duration", "601"]);
    assert!(!ok && text.contains("bounded"), "{text}");
    let (ok, text) = loadtest(&["run", "--url", "http://127.0.0.1:9", "--mix", "dance=1"]);
    assert!(!ok && text.contains("no scenario is called `dance`"), "{text}");
    let (ok, text) = loadtest(&["feed-latency", "--events", "100001"]);
    assert!(!ok && text.contains("bounded"), "{text}");
}

#[test]
fn every_scenario_is_listed() {
    let (ok, text) = loadtest(&["--help"]);
    assert!(ok);
    for command in ["run", "read-path", "feed-latency", "registration-burst"] {
        assert!(text.contains(command), "{command} missing from --help:\n{text}");
    }
}
