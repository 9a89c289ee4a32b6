//! The alert rules behave as their names say: `promtool test rules` runs the unit tests in
//! `deploy/prometheus/alerts.test.yml`, and every alert of `alerts.yml` has a test where it
//! fires and one where it stays quiet.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn yaml(name: &str) -> serde_norway::Value {
    let text = std::fs::read_to_string(deploy().join(name)).expect(name);
    serde_norway::from_str(&text).expect(name)
}

#[test]
fn every_alert_fires_when_it_should_and_stays_quiet_when_it_should_not() {
    let rules = yaml("alerts.yml");
    let alerts: BTreeSet<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    assert!(alerts.len() >= 13, "{alerts:?}");
    let tests = yaml("alerts.test.yml");
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in tests["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let expected = case["exp_alerts"].as_sequence().map_or(0, |a| a.len());
            if expected > 0 {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let missing_fire: Vec<_> = alerts.difference(&fires).collect();
    let missing_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(missing_fire.is_empty(), "no test fires {missing_fire:?}");
    assert!(
        missing_quiet.is_empty(),
        "no test keeps quiet {missing_quiet:?}"
    );

    let out = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(deploy())
        .output()
        .expect("promtool runs (timescale/setup.sh installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}
