//! `schema.graphql` is generated from the code: this fails when they drift.
//! Regenerate with `cargo run -p attach-gateway -- schema > schema.graphql`.

use std::path::Path;
use std::process::Command;

#[test]
fn committed_schema_matches_the_code() {
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql"))
        .expect("schema.graphql at the repository root");
    assert_eq!(
        committed,
        attach_gateway::graphql::sdl(),
        "schema.graphql is stale: run `cargo run -p attach-gateway -- schema > schema.graphql`"
    );
}

#[test]
fn attach_schema_prints_the_same_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_attach")).arg("schema").output().expect("attach runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).expect("UTF-8"), attach_gateway::graphql::sdl());
}
