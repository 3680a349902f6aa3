//! A bounded cache of parsed queries.
//!
//! Clients send the same few query texts over and over, and async-graphql's
//! parser is the largest single cost of a small query (about a third of the
//! server's time for a waitlist page, measured with `perf`). The cache hands
//! the schema an already-parsed document; the schema still runs its recursion,
//! depth and complexity checks and every validation rule on it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;

/// Parsed documents by query text.
pub struct DocumentCache {
    entries: Mutex<HashMap<String, ExecutableDocument>>,
    /// Most documents kept; when full the cache starts over, so memory stays bounded
    /// whatever clients send.
    capacity: usize,
    /// Longer query texts are parsed every time rather than kept.
    max_query_len: usize,
}

impl DocumentCache {
    /// A cache of at most `capacity` documents of at most `max_query_len` bytes of text.
    pub fn new(capacity: usize, max_query_len: usize) -> Self {
        DocumentCache { entries: Mutex::new(HashMap::new()), capacity, max_query_len }
    }

    /// Gives `request` its parsed document from the cache, parsing and keeping it
    /// on a miss. A query that does not parse is left for the schema to report.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > self.max_query_len || self.capacity == 0 {
            return;
        }
        if let Some(doc) = self.lock().get(&request.query).cloned() {
            request.set_parsed_query(doc);
            return;
        }
        // Parse outside the lock: it is the slow part.
        let Some(doc) = super::nesting::parse(&request.query) else { return };
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(request.query.clone(), doc.clone());
        drop(entries);
        request.set_parsed_query(doc);
    }

    /// Documents held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutableDocument>> {
        // A panic while holding the lock cannot leave the map inconsistent for our use.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_valid_queries_and_stays_bounded() {
        let cache = DocumentCache::new(2, 100);
        let mut r = async_graphql::Request::new("{ a }");
        cache.prepare(&mut r);
        assert_eq!(cache.len(), 1);
        let mut again = async_graphql::Request::new("{ a }");
        cache.prepare(&mut again);
        assert_eq!(cache.len(), 1);
        assert!(again.parsed_query().is_ok());
        cache.prepare(&mut async_graphql::Request::new("{ b }"));
        cache.prepare(&mut async_graphql::Request::new("{ c }"));
        assert!(cache.len() <= 2, "bounded");
        cache.prepare(&mut async_graphql::Request::new("{ broken"));
        cache.prepare(&mut async_graphql::Request::new(format!("{{ {} }}", "x ".repeat(100))));
        assert!(cache.len() <= 2, "errors and long queries are not kept");
    }
}
