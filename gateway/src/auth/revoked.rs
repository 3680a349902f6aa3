//! Revoked tokens: a file the operators keep (`auth.revoked`), read again every
//! `auth.revoked_refresh_secs`. A token it names is refused on its next use,
//! cached or not, and a subscription connection signed in with it is closed.
//!
//! One entry a line; `#` starts a comment:
//!
//! ```text
//! jti 6f1c2a9e-4b1d-4a57-9b8e-2f3c1d0e9a77    # one token, by its `jti`
//! sub coord-17                                # every token of a subject
//! sub-before 1795000000 coord-17              # its tokens issued (`iat`) before that time
//! ```
//!
//! A subject is the rest of the line (it may hold spaces). A `sub-before`
//! entry also revokes the subject's tokens that carry no `iat`. A file that
//! does not parse is refused at start; on a refresh it is logged and the last
//! good list stays in force.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use super::token::Signed;

/// The entries of a revocation file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedList {
    ids: HashSet<String>,
    /// Subject → tokens issued before this time (seconds) are revoked; `None`: all of them.
    subjects: HashMap<String, Option<u64>>,
}

impl RevokedList {
    /// Parses a revocation file; the error names the line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut list = RevokedList::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            let line_no = n + 1;
            if rest.is_empty() {
                bail!("line {line_no}: `{kind}` needs a value");
            }
            match kind {
                "jti" => {
                    list.ids.insert(rest.to_string());
                }
                "sub" => {
                    list.subjects.insert(rest.to_string(), None);
                }
                "sub-before" => {
                    let (time, subject) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                    let time: u64 = time.parse().with_context(|| format!("line {line_no}: `{time}` is not a time"))?;
                    let subject = subject.trim();
                    if subject.is_empty() {
                        bail!("line {line_no}: `sub-before` needs a time and a subject");
                    }
                    // A whole-subject entry wins over a time; a later time over an earlier one.
                    let entry = list.subjects.entry(subject.to_string()).or_insert(Some(time));
                    if let Some(before) = entry {
                        *before = (*before).max(time);
                    }
                }
                other => bail!("line {line_no}: `{other}` is not `jti`, `sub` or `sub-before`"),
            }
        }
        Ok(list)
    }

    /// Whether the list revokes this token.
    pub fn revokes(&self, signed: &Signed) -> bool {
        if signed.id.as_ref().is_some_and(|id| self.ids.contains(id)) {
            return true;
        }
        match self.subjects.get(signed.principal.subject()) {
            None => false,
            Some(None) => true,
            Some(Some(before)) => signed.issued_at.is_none_or(|iat| iat < *before),
        }
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.subjects.is_empty()
    }
}

/// The revocation list in force, and a signal for each change of it.
#[derive(Debug)]
pub struct Revocations {
    path: Option<PathBuf>,
    list: RwLock<Arc<RevokedList>>,
    changed: watch::Sender<u64>,
}

impl Revocations {
    /// Reads `path` (it must exist and parse), or holds an empty list without one.
    pub fn load(path: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        let list = match &path {
            Some(p) => read(p)?,
            None => RevokedList::default(),
        };
        let (changed, _) = watch::channel(0);
        Ok(Arc::new(Revocations { path, list: RwLock::new(Arc::new(list)), changed }))
    }

    /// Whether the list in force revokes this token.
    pub fn revokes(&self, signed: &Signed) -> bool {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        !list.is_empty() && list.revokes(signed)
    }

    /// Ticks once for every change of the list.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reads the file again; a changed list replaces the one in force.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let Some(path) = &self.path else { return Ok(false) };
        let fresh = read(path)?;
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if **list == fresh {
            return Ok(false);
        }
        *list = Arc::new(fresh);
        drop(list);
        self.changed.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// Reloads every `every` in the background while the list is in use.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        if self.path.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            tick.tick().await;
            // The error last logged: a file that stays broken is told once, not every refresh.
            let mut told: Option<String> = None;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                match this.reload() {
                    Ok(changed) => {
                        if changed {
                            tracing::info!("the token revocation list changed");
                        } else if told.is_some() {
                            tracing::info!("the token revocation list reads again; it had not changed");
                        }
                        told = None;
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        if told.as_ref() != Some(&error) {
                            tracing::error!(error = %error, "the token revocation list was not reloaded; the last one stays in force until it is mended");
                            told = Some(error);
                        }
                    }
                }
            }
        });
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<RevokedList> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading auth.revoked {}", path.display()))?;
    RevokedList::parse(&text).with_context(|| format!("auth.revoked {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use attach_actors::access::{Principal, Role, Scope};

    use super::*;

    fn signed(subject: &str, id: Option<&str>, issued_at: Option<u64>) -> Signed {
        Signed {
            principal: Principal::new(subject, Role::Coordinator, None, Scope::province()),
            expires: SystemTime::now() + Duration::from_secs(60),
            id: id.map(str::to_string),
            issued_at,
        }
    }

    #[test]
    fn entries_revoke_a_token_a_subject_or_a_subjects_older_tokens() {
        let list = RevokedList::parse(
            "# revoked after the laptop was lost\n\
             jti abc-123\n\
             sub coord 17   # a subject with a space\n\
             sub-before 1000 moa-1\n\
             sub-before 900 moa-1\n\n",
        )
        .unwrap();
        assert!(list.revokes(&signed("anyone", Some("abc-123"), Some(5))));
        assert!(!list.revokes(&signed("anyone", Some("abc-124"), Some(5))));
        assert!(list.revokes(&signed("coord 17", None, Some(u64::MAX))));
        assert!(list.revokes(&signed("moa-1", None, Some(999))), "the later time stands");
        assert!(!list.revokes(&signed("moa-1", None, Some(1000))), "issued at the time: still good");
        assert!(list.revokes(&signed("moa-1", None, None)), "no iat: cannot show it is newer");
        assert!(!list.revokes(&signed("moa-2", None, None)));
    }

    #[test]
    fn a_file_that_does_not_parse_names_its_line() {
        for (text, line) in [("jti\n", 1), ("sub a\nban b\n", 2), ("\nsub-before soon x\n", 2), ("sub-before 5\n", 1)] {
            let e = RevokedList::parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_taken_on_reload_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        std::fs::write(&path, "").unwrap();
        let revocations = Revocations::load(Some(path.clone())).unwrap();
        let changes = revocations.subscribe();
        let token = signed("coord-1", Some("t-1"), Some(10));
        assert!(!revocations.revokes(&token));
        std::fs::write(&path, "jti t-1\n").unwrap();
        assert!(revocations.reload().unwrap());
        assert!(changes.has_changed().unwrap(), "subscribers are told");
        assert!(revocations.revokes(&token));
        assert!(!revocations.reload().unwrap(), "the same list again is no change");
        std::fs::write(&path, "jti\n").unwrap();
        assert!(revocations.reload().is_err());
        assert!(revocations.revokes(&token), "the last good list stays in force");
        assert!(Revocations::load(Some(dir.path().join("missing"))).is_err());
    }
}
