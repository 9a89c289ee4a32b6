//! Post-validation: after a run, the objects Herald's code relies on exist as it expects.
//!
//! The declarations live beside the code that relies on them (the event store's in
//! `event-store`, the read models' in `read-model`); this module only knows how to check
//! one. A mismatch stops start-up naming the object, instead of failing the first request
//! that needs it.

/// One object Herald's code relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// A table with at least these columns.
    Table {
        /// Table name (in the search path's first schema).
        name: &'static str,
        /// Columns the code reads or writes.
        columns: &'static [&'static str],
    },
    /// A TimescaleDB hypertable partitioned by `time_column`.
    Hypertable {
        /// Table name.
        name: &'static str,
        /// Its time dimension.
        time_column: &'static str,
    },
    /// An index a query or the relay depends on for its plan.
    Index {
        /// The table it is on.
        table: &'static str,
        /// Index name.
        name: &'static str,
    },
    /// A function the code calls.
    Function {
        /// Function name.
        name: &'static str,
    },
    /// A row the code needs, as a query returning one boolean.
    Row {
        /// What it is, for the message.
        what: &'static str,
        /// `SELECT <bool>`.
        exists: &'static str,
    },
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requirement::Table { name, .. } => write!(f, "table {name}"),
            Requirement::Hypertable { name, time_column } => {
                write!(f, "hypertable {name} on {time_column}")
            }
            Requirement::Index { table, name } => write!(f, "index {name} on {table}"),
            Requirement::Function { name } => write!(f, "function {name}"),
            Requirement::Row { what, .. } => write!(f, "{what}"),
        }
    }
}

/// Checks every requirement; returns what is missing or different (empty: all hold).
pub async fn check(
    client: &tokio_postgres::Client,
    requirements: &[Requirement],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    for r in requirements {
        match r {
            Requirement::Table { name, columns } => {
                let have: Vec<String> = client
                    .query(
                        "SELECT column_name::text FROM information_schema.columns \
                         WHERE table_schema = current_schema() AND table_name = $1",
                        &[name],
                    )
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if have.is_empty() {
                    problems.push(format!("{r} is missing"));
                    continue;
                }
                let missing: Vec<&str> = columns
                    .iter()
                    .copied()
                    .filter(|c| !have.iter().any(|h| h == c))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!("{r} lacks columns {}", missing.join(", ")));
                }
            }
            Requirement::Hypertable { name, time_column } => {
                let row = client
                    .query_opt(
                        "SELECT column_name::text FROM timescaledb_information.dimensions \
                         WHERE hypertable_schema = current_schema() AND hypertable_name = $1 \
                         AND dimension_number = 1",
                        &[name],
                    )
                    .await?;
                match row.map(|row| row.get::<_, String>(0)) {
                    None => problems.push(format!("{r}: {name} is not a hypertable")),
                    Some(c) if c != *time_column => {
                        problems.push(format!("{r}: partitioned on {c} instead"))
                    }
                    Some(_) => {}
                }
            }
            Requirement::Index { table, name } => {
                let on: Option<String> = client
                    .query_opt(
                        "SELECT tablename::text FROM pg_indexes \
                         WHERE schemaname = current_schema() AND indexname = $1",
                        &[name],
                    )
                    .await?
                    .map(|row| row.get(0));
                match on {
                    None => problems.push(format!("{r} is missing")),
                    Some(t) if t != *table => problems.push(format!("{r}: it is on {t}")),
                    Some(_) => {}
                }
            }
            Requirement::Function { name } => {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n \
                         ON n.oid = p.pronamespace WHERE n.nspname = current_schema() \
                         AND p.proname = $1",
                        &[name],
                    )
                    .await?
                    .get(0);
                if n == 0 {
                    problems.push(format!("{r} is missing"));
                }
            }
            Requirement::Row { exists, .. } => {
                let ok: Option<bool> = client.query_one(*exists, &[]).await?.get(0);
                if ok != Some(true) {
                    problems.push(format!("{r} is missing"));
                }
            }
        }
    }
    Ok(problems)
}
