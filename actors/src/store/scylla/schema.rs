//! The CQL schema (`infra/scylla/schema.cql`, embedded at build time) and how
//! `attach migrate` applies it with the configured keyspace and replication.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use scylla::client::session::Session;

/// `infra/scylla/schema.cql`, as built into the binary.
pub const SCHEMA: &str = include_str!("../../../../infra/scylla/schema.cql");

/// The schema's statements, comments removed, without their `;`.
pub(super) fn statements(schema: &str) -> Vec<String> {
    let without_comments: String =
        schema.lines().map(|line| line.split_once("--").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks a keyspace name: CQL's unquoted identifiers, at most 48 characters.
pub fn check_keyspace(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    ensure!(
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.len() <= 48,
        "keyspace `{name}` must be lowercase letters, digits and _, start with a letter, at most 48 long"
    );
    Ok(())
}

/// The `CREATE KEYSPACE` statement for `keyspace` with `replication`
/// (datacenter → replicas), in place of the file's default one.
///
/// One datacenter only: leases, PHN claims and locators are lightweight
/// transactions at `LOCAL_SERIAL`, whose Paxos round spans the replicas of
/// the coordinator's datacenter alone, so with two datacenters two nodes could
/// both take one shard, or two communities one PHN (DECISIONS 15).
pub fn keyspace_cql(keyspace: &str, replication: &BTreeMap<String, u32>) -> anyhow::Result<String> {
    check_keyspace(keyspace)?;
    ensure!(!replication.is_empty(), "replication must name at least one datacenter");
    ensure!(
        replication.len() == 1,
        "replication names {} datacenters; Attach runs on one (its leases and PHN claims are serial within a \
         datacenter only): give one datacenter and its replicas",
        replication.len()
    );
    let mut map = String::from("'class': 'NetworkTopologyStrategy'");
    for (dc, factor) in replication {
        ensure!(
            !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "datacenter name `{dc}` must be letters, digits, _ and -"
        );
        ensure!(*factor >= 1, "datacenter `{dc}` needs at least one replica");
        map.push_str(&format!(", '{dc}': {factor}"));
    }
    Ok(format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{map}}} AND tablets = {{'enabled': false}}"
    ))
}

/// The statements `migrate` runs, in order: the keyspace with the configured
/// replication, then every table qualified with the keyspace.
pub fn migration(keyspace: &str, replication: &BTreeMap<String, u32>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for statement in statements(SCHEMA) {
        let upper = statement.to_ascii_uppercase();
        if upper.starts_with("CREATE KEYSPACE") {
            out.push(keyspace_cql(keyspace, replication)?);
        } else if upper.starts_with("USE ") {
            // Tables are qualified instead: the session may serve other keyspaces.
        } else if let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            out.push(format!("CREATE TABLE IF NOT EXISTS {keyspace}.{rest}"));
        } else {
            anyhow::bail!("schema.cql holds a statement migrate does not know how to apply: {statement}");
        }
    }
    Ok(out)
}

/// Columns added to a table after it was first released: `(table, column,
/// type)`. A keyspace made before gets them from `migrate`; the table's
/// `CREATE` in schema.cql has them too.
pub(super) const ADDED_COLUMNS: &[(&str, &str, &str)] = &[("shard_owners", "write_floor", "bigint")];

/// Creates the keyspace and tables if missing, and adds the columns added
/// since (`ADDED_COLUMNS`) that a table made before lacks. Safe to run again.
pub async fn migrate(session: &Session, keyspace: &str, replication: &BTreeMap<String, u32>) -> anyhow::Result<()> {
    for statement in migration(keyspace, replication)? {
        session
            .query_unpaged(statement.as_str(), ())
            .await
            .with_context(|| format!("applying the schema: {}", statement.chars().take(60).collect::<String>()))?;
    }
    session.await_schema_agreement().await.context("waiting for the cluster to agree on the schema")?;
    for (table, column, kind) in ADDED_COLUMNS {
        if has_column(session, keyspace, table, column).await? {
            continue;
        }
        let added = session.query_unpaged(format!("ALTER TABLE {keyspace}.{table} ADD {column} {kind}"), ()).await;
        // Another node's `migrate` may have added it meanwhile (migrate_on_start on several nodes).
        if let Err(e) = added {
            session.await_schema_agreement().await.context("waiting for the cluster to agree on the schema")?;
            if !has_column(session, keyspace, table, column).await? {
                return Err(e).with_context(|| format!("adding column {column} to {keyspace}.{table}"));
            }
        }
        tracing::info!(keyspace, table, column, "column added");
    }
    session.await_schema_agreement().await.context("waiting for the cluster to agree on the schema")?;
    tracing::info!(keyspace, "ScyllaDB schema applied");
    Ok(())
}

/// Whether `keyspace.table` has `column`, from the cluster's schema tables.
async fn has_column(session: &Session, keyspace: &str, table: &str, column: &str) -> anyhow::Result<bool> {
    let read = || format!("reading the columns of {keyspace}.{table}");
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
            (keyspace, table, column),
        )
        .await
        .with_context(read)?
        .into_rows_result()
        .with_context(read)?
        .rows_num();
    Ok(rows > 0)
}

/// Drops a keyspace (the conformance suite's clean-up).
pub async fn drop_keyspace(session: &Session, keyspace: &str) -> anyhow::Result<()> {
    check_keyspace(keyspace)?;
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::super::statements::{Kind, SPECS};
    use super::*;

    /// Table name → its columns, read from the schema file.
    fn tables() -> BTreeMap<String, BTreeSet<String>> {
        let mut tables = BTreeMap::new();
        for statement in statements(SCHEMA) {
            let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") else { continue };
            let (name, body) = rest.split_once(" (").expect("a table statement has a column list");
            let columns = body
                .split(',')
                .map(str::trim)
                .filter(|c| !c.starts_with("PRIMARY KEY") && !c.starts_with('('))
                .filter_map(|c| c.split_whitespace().next())
                .map(str::to_string)
                .collect();
            tables.insert(name.to_string(), columns);
        }
        tables
    }

    const KEYWORDS: &[&str] = &[
        "select", "from", "where", "and", "insert", "into", "values", "if", "not", "exists", "update", "set", "delete",
        "using", "ttl", "null", "order", "by", "desc", "limit", "ks",
    ];

    #[test]
    fn the_schema_file_has_the_keyspace_and_its_tables() {
        let all = statements(SCHEMA);
        assert!(all[0].starts_with("CREATE KEYSPACE IF NOT EXISTS attach WITH replication"), "{}", all[0]);
        assert!(all[0].contains("NetworkTopologyStrategy"));
        let names: Vec<_> = tables().into_keys().collect();
        assert_eq!(names, ["audit", "audit_buckets", "events", "locators", "phn_claims", "records", "shard_owners"]);
    }

    #[test]
    fn every_prepared_statement_names_tables_and_columns_of_the_schema() {
        let tables = tables();
        for spec in SPECS {
            let (_, after_ks) =
                spec.cql.split_once("{ks}.").unwrap_or_else(|| panic!("{}: no {{ks}}.table", spec.name));
            let table: String = after_ks.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let columns =
                tables.get(&table).unwrap_or_else(|| panic!("{}: table {table} is not in schema.cql", spec.name));
            let words = spec
                .cql
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()));
            for word in words {
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) || lower == table || lower == "applied" {
                    continue;
                }
                assert!(columns.contains(&lower), "{}: `{word}` is not a column of {table}", spec.name);
            }
        }
    }

    #[test]
    fn statement_kinds_follow_their_text() {
        let mut names = BTreeSet::new();
        for spec in SPECS {
            assert!(names.insert(spec.name), "{} is listed twice", spec.name);
            let conditional = spec.cql.contains(" IF ");
            let read = spec.cql.starts_with("SELECT");
            match spec.kind {
                Kind::Read | Kind::SerialRead => assert!(read, "{} is a read but does not SELECT", spec.name),
                Kind::Write => assert!(!read && !conditional, "{} is a plain write but is conditional", spec.name),
                Kind::Lwt => assert!(
                    conditional || spec.name == "owner_lease",
                    "{} is marked a lightweight transaction but has no IF",
                    spec.name
                ),
            }
            if conditional {
                assert_eq!(spec.kind, Kind::Lwt, "{} has an IF but is not run as a lightweight transaction", spec.name);
            }
        }
        // LWT touches only ownership, PHN claims and the claim of a new id's locator.
        for spec in SPECS.iter().filter(|s| s.kind == Kind::Lwt) {
            assert!(
                spec.cql.contains("{ks}.shard_owners")
                    || spec.cql.contains("{ks}.phn_claims")
                    || spec.name == "locator_claim",
                "{} is a lightweight transaction outside ownership and claims",
                spec.name
            );
        }
    }

    #[test]
    fn columns_added_later_are_in_their_tables_create_statement() {
        let tables = tables();
        for (table, column, _) in ADDED_COLUMNS {
            assert!(tables[*table].contains(*column), "{table}.{column} is added by migrate but not created");
        }
    }

    #[test]
    fn migration_uses_the_configured_keyspace_and_replication() {
        let two = BTreeMap::from([("dc-east".to_string(), 3), ("dc_west".to_string(), 2)]);
        assert!(migration("attach_test", &two).unwrap_err().to_string().contains("names 2 datacenters"));
        let replication = BTreeMap::from([("dc-east".to_string(), 3)]);
        let steps = migration("attach_test", &replication).unwrap();
        assert_eq!(
            steps[0],
            "CREATE KEYSPACE IF NOT EXISTS attach_test WITH replication = {'class': 'NetworkTopologyStrategy', \
             'dc-east': 3} AND tablets = {'enabled': false}"
        );
        assert_eq!(steps.len(), 8);
        assert!(steps[1..].iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS attach_test.")), "{steps:?}");
        assert!(steps.iter().all(|s| !s.contains("USE ")));
    }

    #[test]
    fn bad_keyspaces_and_replication_are_refused() {
        let one = BTreeMap::from([("dc1".to_string(), 1)]);
        for bad in ["", "Attach", "1attach", "attach-x", "a;DROP", &"a".repeat(49)] {
            assert!(keyspace_cql(bad, &one).is_err(), "{bad:?}");
        }
        assert!(keyspace_cql("attach", &BTreeMap::new()).is_err());
        assert!(keyspace_cql("attach", &BTreeMap::from([("dc'1".to_string(), 1)])).is_err());
        assert!(keyspace_cql("attach", &BTreeMap::from([("dc1".to_string(), 0)])).is_err());
    }
}
