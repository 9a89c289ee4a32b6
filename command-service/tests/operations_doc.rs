//! `docs/operations.md` documents every metric the code registers, and the alert rules in
//! `deploy/prometheus/alerts.yml` use only documented metrics.

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `herald_*` identifier in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("herald_") && w.len() > "herald_".len())
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

#[test]
fn every_registered_metric_is_documented_and_alerts_use_documented_ones() {
    let doc = read("docs/operations.md");
    let registered = [
        service_kit::metrics::HTTP_REQUESTS_TOTAL,
        service_kit::metrics::HTTP_REQUEST_DURATION_SECONDS,
        command_service::metrics::COMMANDS_TOTAL,
        command_service::metrics::COMMAND_DURATION_SECONDS,
        command_service::metrics::EVENTS_APPENDED_TOTAL,
        command_service::metrics::GROUP_COMMIT_COMMANDS,
        command_service::metrics::GROUP_COMMIT_ISOLATED_TOTAL,
        service_kit::edge::HTTP_PANICS_TOTAL,
    ];
    for name in registered.into_iter().chain(service_kit::migrate::NAMES) {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "{name} has no row in docs/operations.md"
        );
    }
    let documented = metric_names(&doc);
    let alerts = read("deploy/prometheus/alerts.yml");
    let used = metric_names(&alerts);
    assert!(!used.is_empty());
    let undocumented: Vec<_> = used.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "alerts use undocumented metrics: {undocumented:?}"
    );
}
