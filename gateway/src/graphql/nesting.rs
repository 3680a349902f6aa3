//! How deeply a query's text nests, found before anything parses it.
//!
//! async-graphql's parser recurses once per level of a list or input-object
//! literal (an argument, a directive's argument, a variable's default value)
//! with no limit of its own: a 4 KB anonymous request nesting `[[[…]]]` 2,000
//! deep overflowed a request thread's stack and aborted the whole server. The
//! depth and recursion limits only apply once a document has parsed. So every
//! query text is measured here first, by a scan that keeps no stack, and one
//! nesting deeper than [`MAX_NESTING`] is refused without being parsed.

use async_graphql::parser::types::ExecutableDocument;

/// Most brackets (`{`, `[`, `(`) open at once in a query's text. Selections are
/// at most 32 deep (async-graphql's recursion limit, and `limits.max_depth` is
/// held below it), and no input of the schema nests more than a few levels.
pub const MAX_NESTING: usize = 64;

/// The refusal of a text nesting deeper than [`MAX_NESTING`].
pub fn refusal() -> String {
    format!("the query nests brackets more than {MAX_NESTING} deep; no operation of this API needs that")
}

/// Whether `text` keeps within [`MAX_NESTING`]. Brackets inside strings, block
/// strings and comments do not count; an unbalanced text is left to the parser.
pub fn within(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (mut depth, mut at) = (0usize, 0usize);
    while let Some(&b) = bytes.get(at) {
        at += 1;
        match b {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return false;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'#' => {
                while bytes.get(at).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    at += 1;
                }
            }
            b'"' if bytes[at..].starts_with(b"\"\"") => {
                // A block string ends at the first `"""` not escaped as `\"""`.
                at += 2;
                loop {
                    match bytes.get(at) {
                        None => return true,
                        Some(b'\\') if bytes[at + 1..].starts_with(b"\"\"\"") => at += 4,
                        Some(b'"') if bytes[at..].starts_with(b"\"\"\"") => {
                            at += 3;
                            break;
                        }
                        Some(_) => at += 1,
                    }
                }
            }
            b'"' => loop {
                match bytes.get(at) {
                    None => return true,
                    Some(b'\\') => at += 2,
                    Some(b'"') => {
                        at += 1;
                        break;
                    }
                    // A string ends at the line's end (the parser refuses it).
                    Some(b'\n' | b'\r') => break,
                    Some(_) => at += 1,
                }
            },
            _ => {}
        }
    }
    true
}

/// Parses `text` if it keeps within [`MAX_NESTING`] and is a valid document.
pub fn parse(text: &str) -> Option<ExecutableDocument> {
    within(text).then(|| async_graphql::parser::parse_query(text).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, n: usize) -> String {
        format!("{{ community(code: {}1{}) {{ code }} }}", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn deep_literals_are_refused_and_ordinary_queries_are_not() {
        assert!(within(
            "query($c: String!, $n: Int) { waitlist(communityCode: $c, first: $n) { nodes { reference } } }"
        ));
        assert!(within(&nested("[", "]", 60)));
        assert!(!within(&nested("[", "]", 64)));
        assert!(!within(&nested("{a:", "}", 2_000)));
        assert!(!within(&format!("query($x: String = {}1{}) {{ __typename }}", "[".repeat(100), "]".repeat(100))));
        assert!(parse(&nested("[", "]", 2_000)).is_none(), "refused without parsing");
        assert!(parse("{ __typename }").is_some());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let many = "[".repeat(100);
        assert!(within(&format!(r#"{{ a(s: "{many}") }}"#)));
        assert!(within(&format!(r#"{{ a(s: "\"{many}\\") }}"#)), "escaped quotes stay inside the string");
        assert!(within(&format!("{{ a(s: \"\"\"{many} \\\"\"\" {many}\"\"\") }}")), "a block string, escaped end");
        assert!(within(&format!("# {many}\n{{ a }}")));
        // A string that hides nothing: the brackets after it count.
        assert!(!within(&format!(r#"{{ a(s: "x", t: {many}) }}"#)));
        assert!(!within(&format!("{{ a(s: \"\"\"x\"\"\", t: {many}) }}")));
    }
}
