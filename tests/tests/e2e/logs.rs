//! What the log says about where a line comes from: by default each line names
//! its own context, and `log_spans` adds the spans it happened in.

use crate::helpers::{Spawn, TestApp};

/// The log without its terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn log_lines_name_their_shard_and_carry_spans_only_when_asked() {
    for spans in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![("ATTACH_LOG_SPANS".to_string(), spans.to_string())];
        let app = TestApp::spawn(dir.path(), Spawn { env, ..Spawn::default() }).await;
        app.ok("{ healthAuthorities { code } }", serde_json::json!({})).await;
        let log = plain(&app.kill());
        let loaded = log.lines().find(|l| l.contains("shard loaded") && l.contains("IHA/111")).unwrap_or_else(|| {
            panic!("no line says the shard IHA/111 loaded:\n{log}");
        });
        assert_eq!(loaded.contains("shard.load{shard=IHA/111}"), spans, "{loaded}");
        assert!(loaded.contains("shard=IHA/111 records=0"), "the line names its shard itself: {loaded}");
    }
}
