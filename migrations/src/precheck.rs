//! Pre-validation: what must hold before a run may apply anything. Each refusal says what
//! is wrong and what to do, so a start-up that cannot migrate stops with a reason instead of
//! half-way through a migration.

use std::collections::BTreeMap;

use crate::MigrationError;

/// The oldest TimescaleDB Herald's migrations run on: `create_hypertable(... by_range(...))`
/// arrived in 2.13.
pub const MIN_TIMESCALEDB: (u32, u32, u32) = (2, 13, 0);

/// `major.minor.patch` of a version string such as `2.19.3` or `2.14.0-dev`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split(['.', '-']).take(3).map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn show((a, b, c): (u32, u32, u32)) -> String {
    format!("{a}.{b}.{c}")
}

/// The extension `name` is installed at `min` or newer, or can be created at such a
/// version (a fresh database: the first migration creates it).
pub async fn extension(
    client: &tokio_postgres::Client,
    name: &str,
    min: (u32, u32, u32),
) -> Result<(), MigrationError> {
    let row = client
        .query_opt(
            "SELECT installed_version, default_version FROM pg_available_extensions \
             WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(MigrationError::Check)?;
    let Some(row) = row else {
        return Err(MigrationError::ExtensionMissing {
            name: name.to_string(),
            min: show(min),
        });
    };
    let installed: Option<String> = row.get(0);
    let available: Option<String> = row.get(1);
    let (version, how) = match (&installed, &available) {
        (Some(v), _) => (v.clone(), "installed"),
        (None, Some(v)) => (v.clone(), "available"),
        (None, None) => {
            return Err(MigrationError::ExtensionMissing {
                name: name.to_string(),
                min: show(min),
            })
        }
    };
    match parse_version(&version) {
        Some(v) if v >= min => Ok(()),
        _ => Err(MigrationError::ExtensionTooOld {
            name: name.to_string(),
            found: format!("{version} ({how})"),
            min: show(min),
        }),
    }
}

/// The history holds nothing this binary does not know, and every migration it holds has
/// the checksum of the embedded one.
pub async fn history(
    client: &tokio_postgres::Client,
    table: &str,
    embedded: &[(i32, String, u64)],
) -> Result<(), MigrationError> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(MigrationError::Check)?
        .get(0);
    if !exists {
        return Ok(());
    }
    let rows = client
        .query(
            &format!("SELECT version, name, checksum FROM {table} ORDER BY version"),
            &[],
        )
        .await
        .map_err(MigrationError::Check)?;
    let known: BTreeMap<i32, (&str, u64)> = embedded
        .iter()
        .map(|(v, n, c)| (*v, (n.as_str(), *c)))
        .collect();
    let newest_known = known.keys().next_back().copied().unwrap_or(0);
    let newest_applied = rows.iter().map(|r| r.get::<_, i32>(0)).max().unwrap_or(0);
    if newest_applied > newest_known {
        return Err(MigrationError::NewerSchema {
            database: newest_applied,
            binary: newest_known,
        });
    }
    for row in rows {
        let version: i32 = row.get(0);
        let name: Option<String> = row.get(1);
        let checksum: Option<String> = row.get(2);
        let applied = format!("V{version}__{}", name.as_deref().unwrap_or("?"));
        match known.get(&version) {
            None => {
                return Err(MigrationError::UnknownApplied { migration: applied });
            }
            Some((_, want)) if checksum.as_deref() != Some(&want.to_string()) => {
                return Err(MigrationError::Diverged {
                    migration: applied,
                    database: checksum.unwrap_or_default(),
                    binary: want.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_and_without_suffixes() {
        assert_eq!(parse_version("2.19.3"), Some((2, 19, 3)));
        assert_eq!(parse_version("2.14.0-dev"), Some((2, 14, 0)));
        assert_eq!(parse_version("2.13"), Some((2, 13, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("2.12.9").unwrap() < MIN_TIMESCALEDB);
        assert!(parse_version("2.13.0").unwrap() >= MIN_TIMESCALEDB);
    }
}
