//! The deployment files (docs/deployment.md), checked without a Docker engine or a
//! Kubernetes cluster:
//!
//! * `docker-compose.yml` is valid for Debian's `docker-compose` (1.29, installed by
//!   `timescale/setup.sh`), sets only variables the services read, and wires health checks,
//!   start-up order and ports as documented;
//! * every variable the services' sources name is documented in `VARIABLES`;
//! * the Dockerfile's dependency-caching stage yields a workspace cargo accepts;
//! * the Prometheus configuration, the Grafana provisioning and dashboard parse and refer to
//!   documented metrics, and the dashboard's SQL answers correctly from real read models;
//! * the Kubernetes manifests have what a rollout needs (replicas, probes, resources, the
//!   migrate Job, variables the services read).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    // checks/ -> the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// One YAML document, `<<` merge keys applied, as JSON for uniform indexing.
fn yaml(path: &str) -> Value {
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    doc.apply_merge()
        .unwrap_or_else(|e| panic!("{path}: merge keys: {e}"));
    serde_json::to_value(doc).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let value =
                serde_norway::Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {v}"))
}

/// Names the Herald services read: `service_kit::config::VARIABLES` (which includes
/// `OTEL_EXPORTER_OTLP_ENDPOINT` and `RUST_LOG`).
fn variables_the_services_read() -> BTreeSet<&'static str> {
    service_kit::config::VARIABLES
        .iter()
        .map(|v| v.name)
        .collect()
}

fn assert_known_variables<'a>(
    names: impl IntoIterator<Item = &'a str>,
    where_: &str,
) -> BTreeSet<String> {
    let known = variables_the_services_read();
    let names: BTreeSet<String> = names.into_iter().map(str::to_string).collect();
    let unknown: Vec<_> = names
        .iter()
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{where_} sets {unknown:?}, which no Herald service reads (service_kit::config::VARIABLES)"
    );
    names
}

/// `environment:` of a compose service, as a map or as a list of `KEY=value`.
fn compose_environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let s = str_of(item, "environment entry");
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        other => panic!("environment should be a map or a list, is {other}"),
    }
}

const HERALD_SERVICES: [(&str, u16, &str); 3] = [
    ("command-service", 8080, "HERALD_COMMAND_ADDR"),
    ("query-service", 8081, "HERALD_QUERY_ADDR"),
    ("projector", 8082, "HERALD_PROJECTOR_ADDR"),
];

// ---------------------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_file_is_valid_for_debians_docker_compose() {
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `docker-compose` ({e}): install Debian's docker-compose package \
                 (timescale/setup.sh installs it; scripts/test.sh runs setup.sh)"
            )
        });
    assert!(
        output.status.success(),
        "docker-compose config rejected docker-compose.yml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn compose_sets_only_variables_the_services_read() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let mut herald_containers = 0;
    for (name, service) in services {
        let image = service["image"].as_str().unwrap_or_default();
        if !image.starts_with("herald:") {
            continue;
        }
        herald_containers += 1;
        let env = compose_environment(service);
        assert_known_variables(env.keys().map(String::as_str), &format!("compose {name}"));
        assert_eq!(
            service["build"].as_str(),
            Some("."),
            "{name} builds the image from the Dockerfile"
        );
        for required in [
            "HERALD_DATABASE_URL",
            "HERALD_REDIS_URL",
            "HERALD_PUSHGATEWAY_URL",
        ] {
            assert!(env.contains_key(required), "{name} sets {required}");
        }
        assert!(env["HERALD_DATABASE_URL"].contains("@timescaledb:5432/"));
        assert_eq!(env["HERALD_REDIS_URL"], "redis://redis:6379");
        assert_eq!(env["HERALD_PUSHGATEWAY_URL"], "http://pushgateway:9091");
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
            Some("http://jaeger:4317"),
            "{name} exports traces to Jaeger"
        );
        if name == "migrate" {
            // A one-shot that is never scaled: a fixed instance keeps one Pushgateway group
            // per deployment, so a later run's success clears an earlier run's failure.
            assert_eq!(
                env.get("HERALD_INSTANCE_ID").map(String::as_str),
                Some("migrate")
            );
        } else {
            assert!(
                !env.contains_key("HERALD_INSTANCE_ID"),
                "{name}: a fixed instance id would collide when scaled"
            );
        }
    }
    assert_eq!(
        herald_containers, 4,
        "migrate and the three services use the Herald image"
    );

    // The Dockerfile's ENV lines too.
    let dockerfile = read("Dockerfile");
    let mut env_names: Vec<&str> = Vec::new();
    let mut in_env = false;
    for line in dockerfile.lines() {
        let line = line.trim();
        let rest = match line.strip_prefix("ENV ") {
            Some(rest) => rest,
            None if in_env => line,
            None => continue,
        };
        env_names.extend(
            rest.split_whitespace()
                .filter_map(|token| token.split_once('=').map(|(name, _)| name)),
        );
        in_env = line.ends_with('\\');
    }
    env_names.retain(|n| n.starts_with("HERALD_") || n.starts_with("OTEL_") || *n == "RUST_LOG");
    assert!(
        env_names.contains(&"HERALD_COMMAND_ADDR"),
        "the image sets the listen addresses: {env_names:?}"
    );
    assert_known_variables(env_names, "the Dockerfile");
}

#[test]
fn compose_wires_health_checks_order_ports_and_volumes() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    for expected in [
        "timescaledb",
        "redis",
        "pushgateway",
        "prometheus",
        "jaeger",
        "grafana",
        "migrate",
        "command-service",
        "query-service",
        "projector",
    ] {
        assert!(services.contains_key(expected), "compose has {expected}");
    }
    for (name, service) in services {
        let healthcheck = &service["healthcheck"];
        if name == "migrate" {
            // A one-shot container: nothing to probe; the services wait for it to exit 0.
            assert_eq!(healthcheck["disable"], Value::Bool(true), "{name}");
            assert_eq!(
                service["command"],
                serde_json::json!(["command-service", "migrate"])
            );
            assert_eq!(
                service["depends_on"]["timescaledb"]["condition"],
                "service_healthy"
            );
            continue;
        }
        assert!(
            healthcheck["test"].is_array(),
            "{name} has a health check: {healthcheck}"
        );
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            let condition = str_of(&condition["condition"], "depends_on condition");
            assert!(services.contains_key(dependency), "{name} -> {dependency}");
            if condition == "service_healthy" {
                assert!(
                    services[dependency]["healthcheck"]["test"].is_array(),
                    "{name} waits for {dependency} to be healthy, which has no health check"
                );
            }
        }
    }

    let timescale = str_of(&services["timescaledb"]["image"], "timescaledb image");
    let tag = timescale
        .strip_prefix("timescale/timescaledb:")
        .expect("the official TimescaleDB image");
    assert!(
        tag.ends_with("-pg17") || tag.ends_with("-pg16"),
        "PostgreSQL 16 or 17: {tag}"
    );
    assert!(
        tag.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "pinned version, not latest: {tag}"
    );
    let redis_command = services["redis"]["command"].to_string();
    assert!(
        redis_command.contains("--appendonly") && redis_command.contains("yes"),
        "Redis keeps an AOF: {redis_command}"
    );

    for (name, port, addr_var) in HERALD_SERVICES {
        let service = &services[name];
        let env = compose_environment(service);
        assert_eq!(
            env[addr_var],
            format!("0.0.0.0:{port}"),
            "{name} listens on 0.0.0.0"
        );
        assert_eq!(service["command"], serde_json::json!([name]));
        assert_eq!(
            service["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{name} starts after the migrations"
        );
        assert_eq!(
            service["depends_on"]["timescaledb"]["condition"],
            "service_healthy"
        );
        assert_eq!(
            service["depends_on"]["redis"]["condition"],
            "service_healthy"
        );
        let probe = service["healthcheck"]["test"].to_string();
        assert!(
            probe.contains(&format!("127.0.0.1:{port}/health/ready")),
            "{name} probes its own readiness: {probe}"
        );
    }

    // Host ports: those of the local scripts, plus the observability UIs; all documented.
    let mut published = BTreeMap::new();
    for (name, service) in services {
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = str_of(port, "port");
            let (host, container) = port.rsplit_once(':').expect("host:container");
            published.insert(host.to_string(), (name.clone(), container.to_string()));
        }
    }
    let expected = [
        ("8080", "command-service"),
        ("8081", "query-service"),
        ("8082", "projector"),
        ("55432", "timescaledb"),
        ("6379", "redis"),
        ("59091", "pushgateway"),
        ("9090", "prometheus"),
        ("3000", "grafana"),
        ("16686", "jaeger"),
    ];
    let deployment_doc = read("docs/deployment.md");
    for (host, service) in expected {
        assert_eq!(
            published.get(host).map(|(s, _)| s.as_str()),
            Some(service),
            "host port {host}: {published:?}"
        );
        assert!(
            deployment_doc.contains(&format!("| {host} |")),
            "docs/deployment.md's port table lists {host}"
        );
    }
    assert_eq!(published.len(), expected.len(), "{published:?}");

    // Named volumes for every stateful part; bind mounts point at files in the repository.
    let volumes = compose["volumes"].as_object().expect("named volumes");
    for (name, service) in services {
        for mount in service["volumes"].as_array().into_iter().flatten() {
            let mount = str_of(mount, "volume");
            let source = mount.split(':').next().unwrap();
            if let Some(relative) = source.strip_prefix("./") {
                assert!(
                    root().join(relative).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    volumes.contains_key(source),
                    "{name}: {source} is a named volume"
                );
            }
        }
    }
    for stateful in ["timescaledb", "redis", "prometheus", "grafana"] {
        let mounts = services[stateful]["volumes"].to_string();
        assert!(
            mounts.contains(&format!("{stateful}-data:")),
            "{stateful} keeps its data in a named volume"
        );
    }
}

#[test]
fn service_sources_name_only_documented_variables() {
    // A variable read by a service but missing from VARIABLES would be undocumented and
    // unchecked here; this covers the projector's own settings (projector/src/settings.rs).
    let known = variables_the_services_read();
    let mut found = BTreeSet::new();
    for dir in [
        "command-service/src",
        "query-service/src",
        "projector/src",
        "service-kit/src",
        "migrations/src",
    ] {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in quoted_variable_names(&text) {
                if name.starts_with("HERALD_TEST_") {
                    continue; // test support only, documented under "Tests"
                }
                assert!(
                    known.contains(name.as_str()),
                    "{} reads {name}, which is not in service_kit::config::VARIABLES",
                    file.display()
                );
                found.insert(name);
            }
        }
    }
    let settings = read("projector/src/settings.rs");
    let projector_names = quoted_variable_names(&settings);
    assert!(
        projector_names.len() >= 10,
        "the projector's settings name its variables: {projector_names:?}"
    );
    assert!(projector_names.iter().all(|n| known.contains(n.as_str())));
    assert!(found.contains("HERALD_STREAM_SHARDS"));
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// `"HERALD_..."`, `"OTEL_..."` and `"RUST_LOG"` string literals.
fn quoted_variable_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices('"') {
        let rest = &text[i + 1..];
        if !(rest.starts_with("HERALD_")
            || rest.starts_with("OTEL_")
            || rest.starts_with("RUST_LOG"))
        {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with('"') {
            names.insert(rest[..end].to_string());
        }
    }
    names
}

// ---------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_builds_the_three_services_into_a_small_non_root_image() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 3, "multi-stage: {stages:?}");
    assert_eq!(
        stages.last().unwrap().trim(),
        "FROM debian:bookworm-slim AS runtime"
    );
    let build_line =
        "cargo build --release --locked -p command-service -p query-service -p projector";
    assert_eq!(
        dockerfile.matches(build_line).count(),
        2,
        "dependencies first (stubs), then the sources"
    );
    // The three binaries are copied into the runtime image, each checked not to be a stub.
    assert!(dockerfile.contains("for bin in command-service query-service projector; do"));
    assert!(dockerfile.contains(r#"grep -q "usage: $bin" "target/release/$bin""#));
    assert!(dockerfile.contains("COPY --from=build /out/ /usr/local/bin/"));
    for bin in ["command-service", "query-service", "projector"] {
        let main = read(&format!("{bin}/src/main.rs"));
        assert!(
            main.contains(&format!("\"usage: {bin} ")),
            "{bin}'s usage text, which the Dockerfile's stub check looks for"
        );
    }
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    let uid: u32 = user["USER ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric user");
    assert_ne!(uid, 0, "not root");
    assert!(dockerfile.contains("curl"), "curl for the health checks");
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
    assert!(
        !ignore
            .lines()
            .any(|l| l.trim() == "docs" || l.trim() == "docs/"),
        "service-kit embeds docs/openapi.json"
    );
}

#[test]
fn dockerfile_stub_stage_yields_a_workspace_cargo_accepts() {
    // Run the `manifests` stage's script on this checkout (into a temporary directory
    // instead of /out) and ask cargo, offline and with the lock file unchanged, whether the
    // stub workspace resolves: a new workspace member or an explicit target path the script
    // misses fails here, not in a user's `docker build`.
    let dockerfile = read("Dockerfile");
    let stage = &dockerfile[dockerfile.find("AS manifests").expect("a manifests stage")..];
    let start = stage.find("\nRUN ").expect("the stage's RUN") + "\nRUN ".len();
    let mut script = String::new();
    for line in stage[start..].lines() {
        script.push_str(line);
        script.push('\n');
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    assert!(script.contains("out=/out;"), "{script}");
    let out = std::env::temp_dir().join(format!(
        "herald-docker-stubs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let script = script.replace("out=/out;", &format!("out='{}';", out.display()));
    let status = Command::new("sh")
        .args(["-c", &script])
        .current_dir(root())
        .status()
        .expect("sh");
    assert!(status.success(), "the stub script failed");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let host = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8(host.stdout).unwrap();
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host triple")
        .to_string();
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version",
            "1",
            "--filter-platform",
            &host,
            "--manifest-path",
        ])
        .arg(out.join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "cargo refuses the Dockerfile's stub workspace:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let workspace: Vec<&Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .collect();
    // cargo metadata does not look at the sources; a build needs every lib and bin target's
    // file to exist.
    let mut missing = Vec::new();
    for package in &workspace {
        for target in package["targets"].as_array().unwrap() {
            let kinds = target["kind"].to_string();
            let src = str_of(&target["src_path"], "src_path");
            if (kinds.contains("lib") || kinds.contains("bin")) && !Path::new(src).exists() {
                missing.push(src.to_string());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(missing.is_empty(), "the stub stage misses {missing:?}");
    let members: BTreeSet<&str> = workspace
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for service in ["command-service", "query-service", "projector"] {
        assert!(members.contains(service), "{members:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus

#[test]
fn prometheus_config_scrapes_the_pushgateway_and_the_services_and_loads_the_rules() {
    let config = yaml("deploy/prometheus/prometheus.yml");
    let jobs = config["scrape_configs"].as_array().expect("scrape_configs");
    let job = |name: &str| {
        jobs.iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("scrape job {name}"))
    };
    let pushgateway = job("pushgateway");
    assert_eq!(
        pushgateway["honor_labels"],
        Value::Bool(true),
        "pushed job/instance labels are kept"
    );
    assert_eq!(
        pushgateway["static_configs"][0]["targets"],
        serde_json::json!(["pushgateway:9091"])
    );
    let herald = job("herald").to_string();
    for (service, port, _) in HERALD_SERVICES {
        assert!(
            herald.contains(&format!("\"{service}\"")) && herald.contains(&port.to_string()),
            "the herald job scrapes {service}:{port}: {herald}"
        );
    }
    let rule_files = config["rule_files"].as_array().expect("rule_files");
    assert!(rule_files.iter().any(|f| f == "alerts.yml"));
    for file in rule_files {
        let path = format!("deploy/prometheus/{}", str_of(file, "rule file"));
        let rules = yaml(&path);
        let groups = rules["groups"].as_array().expect("groups");
        assert!(!groups.is_empty());
        for group in groups {
            assert!(group["name"].is_string());
            for rule in group["rules"].as_array().expect("rules") {
                assert!(
                    rule["alert"].is_string() || rule["record"].is_string(),
                    "{rule}"
                );
                assert!(rule["expr"].is_string(), "{rule}");
            }
        }
    }

    // The full check where promtool is installed (Debian's `prometheus` package); the YAML
    // checks above always run.
    match Command::new("promtool")
        .args(["check", "config", "deploy/prometheus/prometheus.yml"])
        .current_dir(root())
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool check config:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!("promtool not installed: skipped `promtool check config`"),
    }
}

// ---------------------------------------------------------------------------------------
// Grafana

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/herald.json"))
        .expect("the dashboard is JSON")
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

#[test]
fn grafana_provisioning_and_dashboard_parse_and_use_documented_metrics() {
    let datasources = yaml("deploy/grafana/provisioning/datasources/herald.yml");
    let datasources = datasources["datasources"].as_array().expect("datasources");
    let uid_of = |kind: &str| -> String {
        let ds = datasources
            .iter()
            .find(|d| str_of(&d["type"], "type").contains(kind))
            .unwrap_or_else(|| panic!("a {kind} data source"));
        str_of(&ds["uid"], "uid").to_string()
    };
    let prometheus_uid = uid_of("prometheus");
    let timescale_uid = uid_of("postgres");
    let timescale = datasources
        .iter()
        .find(|d| d["uid"] == timescale_uid.as_str())
        .unwrap();
    assert_eq!(timescale["jsonData"]["database"], "herald");
    assert_eq!(timescale["jsonData"]["timescaledb"], Value::Bool(true));
    let reader_sql = read("deploy/timescaledb/grafana-reader.sql");
    assert!(reader_sql.contains(&format!(
        "CREATE ROLE {} LOGIN",
        str_of(&timescale["user"], "user")
    )));

    let providers = yaml("deploy/grafana/provisioning/dashboards/herald.yml");
    let path = str_of(
        &providers["providers"][0]["options"]["path"],
        "provider path",
    );
    let compose = read("docker-compose.yml");
    assert!(
        compose.contains(&format!("./deploy/grafana/dashboards:{path}")),
        "compose mounts the dashboards where the provider reads them ({path})"
    );

    let dashboard = dashboard();
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let operations = read("docs/operations.md");
    let mut metrics = BTreeSet::new();
    let mut sql_panels = 0;
    for panel in panels(&dashboard) {
        let title = str_of(&panel["title"], "title");
        let uid = str_of(&panel["datasource"]["uid"], "datasource uid");
        assert!(
            uid == prometheus_uid || uid == timescale_uid,
            "{title}: unknown data source {uid}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            if uid == prometheus_uid {
                let expr = str_of(&target["expr"], "expr");
                assert!(expr.contains("job=~\"$source\""), "{title}: {expr}");
                for metric in metric_names(expr) {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| metric.strip_suffix(s))
                        .unwrap_or(&metric)
                        .to_string();
                    assert!(
                        operations.contains(&format!("`{base}`")),
                        "{title}: {base} is not documented in docs/operations.md"
                    );
                    metrics.insert(base);
                }
            } else {
                sql_panels += 1;
                assert!(str_of(&target["rawSql"], "rawSql").contains("read_model_active"));
            }
        }
    }
    for required in [
        "herald_commands_total",
        "herald_command_duration_seconds",
        "herald_http_requests_total",
        "herald_http_request_duration_seconds",
        "herald_projector_lag_events",
        "herald_projector_lag_seconds",
        "herald_relay_lag_seconds",
        "herald_relay_horizon_age_seconds",
        "herald_stream_pending_entries",
        "herald_dead_letters",
    ] {
        assert!(
            metrics.contains(required),
            "the dashboard shows {required}: {metrics:?}"
        );
    }
    assert_eq!(
        sql_panels, 3,
        "delivered per hour, delivery rate, p95 latency"
    );
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("herald_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The dashboard's SQL, with Grafana's PostgreSQL macros expanded the way Grafana expands
/// them, run against a migrated database with known read-model rows.
#[tokio::test]
async fn dashboard_sql_answers_from_the_read_models() {
    let db = test_support::TestDb::migrated().await;
    let pool = db.pool().await;
    let tenant = "6a1f5c1e-0000-4000-8000-000000000001";

    // Hourly rollup rows, active version 1, over-all-tags rows (tag = ''), 2024-03-01 UTC.
    let stats = [
        ("10:00", "email", "delivered", 20),
        ("10:15", "email", "delivered", 10),
        ("10:30", "email", "bounced", 5),
        ("10:45", "email", "failed", 5),
        ("10:45", "email", "queued", 50), // not an outcome: not in the rate
        ("11:00", "sms", "delivered", 7),
        ("11:15", "sms", "expired", 1),
    ];
    for (time, channel, status, n) in stats {
        insert_stat(&pool, tenant, 1, "", time, channel, status, n).await;
    }
    // Ignored: per-tag rows, and a version that is not active.
    insert_stat(&pool, tenant, 1, "vip", "10:00", "email", "delivered", 999).await;
    insert_stat(&pool, tenant, 2, "", "10:00", "email", "delivered", 999).await;

    // Latency sketches: email 1..=200 ms spread over two buckets and two providers; sms
    // mostly zero-millisecond samples (the zero bin).
    let mut latency: BTreeMap<(&str, &str, &str, i32), i64> = BTreeMap::new();
    for ms in 1..=200i64 {
        let (bucket, provider) = if ms % 2 == 0 {
            ("10:00", "a")
        } else {
            ("10:30", "b")
        };
        *latency
            .entry((bucket, "email", provider, bin_of(ms)))
            .or_default() += 1;
    }
    *latency.entry(("11:00", "sms", "a", bin_of(0))).or_default() += 100;
    *latency
        .entry(("11:00", "sms", "a", bin_of(50)))
        .or_default() += 5;
    for ((bucket, channel, provider, bin), count) in &latency {
        insert_latency(
            &pool, tenant, 1, "", bucket, channel, provider, *bin, *count,
        )
        .await;
    }
    insert_latency(
        &pool,
        tenant,
        2,
        "",
        "10:00",
        "email",
        "a",
        bin_of(100_000),
        10_000,
    )
    .await;
    insert_latency(
        &pool,
        tenant,
        1,
        "vip",
        "10:00",
        "email",
        "a",
        bin_of(100_000),
        10_000,
    )
    .await;

    let dashboard = dashboard();
    let sql_of = |title: &str| -> String {
        let panel = panels(&dashboard)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("panel {title}"));
        str_of(&panel["targets"][0]["rawSql"], "rawSql").to_string()
    };

    let hour = |h: i64| 1_709_251_200.0 + (h * 3600) as f64; // 2024-03-01T00:00Z + h hours
    let delivered = run_panel(&pool, &sql_of("Delivered per hour by channel")).await;
    assert_eq!(
        delivered,
        vec![
            (hour(10), "email".into(), 30.0),
            (hour(11), "sms".into(), 7.0)
        ]
    );

    let rate = run_panel(&pool, &sql_of("Delivery rate by channel")).await;
    assert_eq!(
        rate,
        vec![
            (hour(10), "email".into(), 30.0 / 40.0),
            (hour(11), "sms".into(), 7.0 / 8.0)
        ]
    );

    let p95 = run_panel(&pool, &sql_of("p95 delivery latency by channel")).await;
    assert_eq!(p95.len(), 2, "{p95:?}");
    // email: 200 samples, rank ceil(0.95 * 200) = 190 -> the bin of 190 ms.
    let expected_email = value_of(bin_of(190)) / 1000.0;
    assert_eq!((p95[0].0, p95[0].1.as_str()), (hour(10), "email"));
    assert!(
        (p95[0].2 - expected_email).abs() < 1e-9,
        "{} vs {expected_email}",
        p95[0].2
    );
    assert!(
        (p95[0].2 - 0.190).abs() / 0.190 <= 0.01,
        "within 1 % of 190 ms"
    );
    // sms: 105 samples, rank 100 falls in the zero bin.
    assert_eq!(p95[1], (hour(11), "sms".into(), 0.0));
}

/// Adds `n` messages entering `status` to the hourly rollup row holding `time`.
#[allow(clippy::too_many_arguments)]
async fn insert_stat(
    pool: &sqlx::PgPool,
    tenant: &str,
    version: i32,
    tag: &str,
    time: &str,
    channel: &str,
    status: &str,
    n: i64,
) {
    let mut entered = vec![0i64; read_model::rollup::STATUSES.len()];
    entered[read_model::rollup::status_index(status).unwrap()] = n;
    sqlx::query(
        "INSERT INTO message_rollup_1h AS t (version, tenant_id, bucket, channel, provider, tag, \
         entered, engaged, engaged_first, submit_sketch, dispatch_sketch)
         VALUES ($1, $2::uuid, date_bin('1 hour', ('2024-03-01 ' || $3 || '+00')::timestamptz, \
         '2000-01-01T00:00:00Z'), $4, 'p', $5, $6, '{0,0,0,0}', '{0,0,0,0}', '', '')
         ON CONFLICT (version, tenant_id, bucket, channel, provider, tag) DO UPDATE SET \
         entered = herald_add(t.entered, EXCLUDED.entered)",
    )
    .bind(version)
    .bind(tenant)
    .bind(time)
    .bind(channel)
    .bind(tag)
    .bind(entered)
    .execute(pool)
    .await
    .unwrap();
}

/// Adds `count` submit-to-delivered samples in `bin` to the hourly rollup row holding
/// `time`.
#[allow(clippy::too_many_arguments)]
async fn insert_latency(
    pool: &sqlx::PgPool,
    tenant: &str,
    version: i32,
    tag: &str,
    time: &str,
    channel: &str,
    provider: &str,
    bin: i32,
    count: i64,
) {
    sqlx::query(
        "INSERT INTO message_rollup_1h AS t (version, tenant_id, bucket, channel, provider, tag, \
         entered, engaged, engaged_first, submit_sketch, dispatch_sketch)
         VALUES ($1, $2::uuid, date_bin('1 hour', ('2024-03-01 ' || $3 || '+00')::timestamptz, \
         '2000-01-01T00:00:00Z'), $4, $5, $6, '{0,0,0,0,0,0,0,0,0,0}', '{0,0,0,0}', '{0,0,0,0}', \
         herald_sketch_of(ARRAY[$7::int], ARRAY[$8::bigint]), '')
         ON CONFLICT (version, tenant_id, bucket, channel, provider, tag) DO UPDATE SET \
         submit_sketch = herald_sketch_add(t.submit_sketch, EXCLUDED.submit_sketch)",
    )
    .bind(version)
    .bind(tenant)
    .bind(time)
    .bind(channel)
    .bind(provider)
    .bind(tag)
    .bind(bin)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// Expands the macros the way Grafana's PostgreSQL data source does for a time range of
/// 2024-03-01 (UTC) and runs the panel's query: `(epoch seconds, series, value)` rows.
async fn run_panel(pool: &sqlx::PgPool, raw_sql: &str) -> Vec<(f64, String, f64)> {
    let mut sql = raw_sql
        .replace(
            "$__timeGroupAlias(bucket, '1h')",
            "floor(extract(epoch from bucket)/3600)*3600 AS \"time\"",
        )
        .replace(
            "$__timeGroup(bucket, '1h')",
            "floor(extract(epoch from bucket)/3600)*3600",
        )
        .replace(
            "$__timeFilter(bucket)",
            "bucket BETWEEN '2024-03-01T00:00:00Z' AND '2024-03-01T23:59:59Z'",
        )
        .replace("$latency_metric", "submit_to_delivered");
    assert!(
        !sql.contains('$'),
        "a macro or variable this test does not expand: {sql}"
    );
    sql = format!(
        "SELECT \"time\"::float8, metric::text, value::float8 FROM ({sql}) AS panel ORDER BY 1, 2"
    );
    sqlx::query_as(&sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

// The latency sketch of read_model::sketch (relative accuracy 1%), restated: this crate does
// not depend on the projector.
const ZERO_BIN: i32 = i32::MIN;

fn gamma() -> f64 {
    (1.0 + 0.01) / (1.0 - 0.01)
}

fn bin_of(ms: i64) -> i32 {
    if ms <= 0 {
        return ZERO_BIN;
    }
    ((ms as f64).ln() / gamma().ln()).ceil() as i32
}

fn value_of(bin: i32) -> f64 {
    if bin == ZERO_BIN {
        return 0.0;
    }
    2.0 * gamma().powi(bin) / (gamma() + 1.0)
}

// ---------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn kubernetes_manifests_have_what_a_rollout_needs() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let files: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|f| str_of(f, "resource").to_string())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = files.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");

    let mut objects: Vec<Value> = Vec::new();
    for file in &files {
        objects.extend(yaml_documents(&format!("deploy/kubernetes/{file}")));
    }
    let mut by_kind: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for object in &objects {
        let kind = str_of(&object["kind"], "kind");
        assert!(object["apiVersion"].is_string(), "{kind} has an apiVersion");
        let name = str_of(&object["metadata"]["name"], "metadata.name");
        if kind != "Namespace" {
            assert_eq!(
                object["metadata"]["namespace"], "herald",
                "{kind} {name} is namespaced"
            );
        }
        by_kind.entry(kind.to_string()).or_default().push(object);
    }
    let named = |kind: &str, name: &str| -> &Value {
        by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    named("Namespace", "herald");

    let config_map = named("ConfigMap", "herald-config");
    let config_keys: Vec<&str> = config_map["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    assert_known_variables(config_keys, "the ConfigMap herald-config");
    let secret = named("Secret", "herald-secrets");
    let secret_keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .or(secret["data"].as_object())
        .expect("secret data")
        .keys()
        .map(String::as_str)
        .collect();

    // Checks one container's environment: known names, existing references.
    let check_env = |container: &Value, what: &str| -> BTreeMap<String, Value> {
        for source in container["envFrom"].as_array().into_iter().flatten() {
            assert_eq!(
                source["configMapRef"]["name"], "herald-config",
                "{what}: envFrom only the ConfigMap (its keys are variables)"
            );
        }
        let env: BTreeMap<String, Value> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (str_of(&e["name"], "env name").to_string(), e.clone()))
            .collect();
        assert_known_variables(env.keys().map(String::as_str), what);
        for (name, entry) in &env {
            if let Some(key) = entry["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert_eq!(entry["valueFrom"]["secretKeyRef"]["name"], "herald-secrets");
                assert!(
                    secret_keys.contains(key),
                    "{what}: {name} from missing key {key}"
                );
            }
        }
        assert!(
            env.contains_key("HERALD_DATABASE_URL"),
            "{what} gets the database"
        );
        env
    };

    let job = named("Job", "herald-migrate");
    let pod = &job["spec"]["template"]["spec"];
    let migrate = &pod["containers"][0];
    assert_eq!(
        migrate["args"],
        serde_json::json!(["command-service", "migrate"])
    );
    assert!(pod["restartPolicy"] == "OnFailure" || pod["restartPolicy"] == "Never");
    check_env(migrate, "the migrate Job");

    for (name, port, addr_var) in HERALD_SERVICES {
        let deployment = named("Deployment", name);
        let spec = &deployment["spec"];
        let replicas = spec["replicas"].as_u64().expect("replicas");
        assert!(replicas > 1, "{name}: {replicas} replicas");
        let selector = &spec["selector"]["matchLabels"];
        let labels = &spec["template"]["metadata"]["labels"];
        for (k, v) in selector.as_object().expect("selector") {
            assert_eq!(&labels[k], v, "{name}: the template matches the selector");
        }
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        assert_eq!(container["args"], serde_json::json!([name]));
        assert_eq!(container["ports"][0]["containerPort"], port);
        let port_name = str_of(&container["ports"][0]["name"], "port name");
        for (probe, path) in [
            ("readinessProbe", "/health/ready"),
            ("livenessProbe", "/health/live"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{name} {probe}");
            assert!(
                get["port"] == port_name || get["port"] == port,
                "{name} {probe} port"
            );
        }
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !container["resources"][bound][resource].is_null(),
                    "{name}: resources.{bound}.{resource}"
                );
            }
        }
        let env = check_env(container, &format!("Deployment {name}"));
        assert_eq!(
            env["HERALD_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
            "{name}: the instance id is the pod name"
        );
        assert!(env.contains_key("HERALD_REDIS_URL"), "{name} gets Redis");
        if name != "projector" {
            // The API services divide every tenant's quota among their replicas.
            assert_eq!(
                env.get("HERALD_QUOTA_REPLICAS").map(|e| e["value"].clone()),
                Some(Value::from(replicas.to_string())),
                "{name}: HERALD_QUOTA_REPLICAS is its replica count"
            );
        }
        assert_eq!(
            config_map["data"][addr_var],
            format!("0.0.0.0:{port}"),
            "{name} listens on the pod's interfaces"
        );

        let service = named("Service", name);
        assert_eq!(&service["spec"]["selector"], selector, "Service {name}");
        let pdb = named("PodDisruptionBudget", name);
        assert_eq!(
            &pdb["spec"]["selector"]["matchLabels"], selector,
            "PDB {name}"
        );
    }
}
