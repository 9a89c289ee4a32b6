//! `docs/architecture.md` says what `cargo metadata` says: the same crates, each with
//! exactly the Herald crates it depends on (normal dependencies), and no service depending
//! on another.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each workspace package and its normal dependencies on other workspace packages.
fn cargo_graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| names.contains(*n))
                .map(String::from)
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// The crate table of `docs/architecture.md`: `| `crate` | job | `dep`, `dep` |`.
fn documented_graph() -> Graph {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/architecture.md"
    ))
    .expect("docs/architecture.md");
    let table = doc
        .split("## Crates")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Crates section");
    let ticked = |cell: &str| -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    };
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = ticked(cells[1]).into_iter().next().expect("a crate name");
            (name, ticked(cells[3]))
        })
        .collect()
}

#[test]
fn the_crate_map_matches_cargo_metadata() {
    let (cargo, doc) = (cargo_graph(), documented_graph());
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        cargo.keys().collect::<Vec<_>>(),
        "the same crates"
    );
    for (name, deps) in &cargo {
        assert_eq!(&doc[name], deps, "{name}'s dependencies");
    }
}

#[test]
fn no_service_depends_on_another_and_the_bottom_depends_on_nothing() {
    let graph = cargo_graph();
    let services = ["command-service", "query-service", "projector"];
    for s in services {
        for other in services {
            assert!(!graph[s].contains(other), "{s} depends on {other}");
        }
    }
    for bottom in ["domain", "migrations"] {
        assert!(graph[bottom].is_empty(), "{bottom}: {:?}", graph[bottom]);
    }
    for lib in ["event-store", "read-model", "service-kit"] {
        for s in services {
            assert!(!graph[lib].contains(s), "{lib} depends on the service {s}");
        }
    }
}
