//! The deployment kit agrees with the code: every `CONCIERGE_*` variable it sets is a real
//! setting with a value the server accepts, the Kubernetes ConfigMap's file loads, and probes
//! and ports point at what the server serves. (No container engine runs here, so images are
//! not built; the real server behind these paths is tested in `observability.rs`.)

use std::path::{Path, PathBuf};

use concierge::config::Config;
use serde_yaml::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

/// A value the server accepts for a variable whose real value is a secret or a reference.
fn sample(name: &str, value: &str) -> String {
    match name {
        "CONCIERGE_KEY_ENCRYPTION_KEY" => concierge::util::b64(&[9u8; 32]),
        "CONCIERGE_DATABASE_URL" if !value.starts_with("postgres") => {
            "postgres://db/concierge".into()
        }
        _ => value.to_string(),
    }
}

/// Load a config from these variables alone (plus an optional file) and validate it.
fn loads(file: Option<&Path>, vars: &[(String, String)]) -> Config {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), sample(k, v)))
        .collect();
    for (k, _) in &vars {
        // A misspelt name would be silently ignored; make sure each one changes something.
        let key = k.trim_start_matches("CONCIERGE_").to_ascii_lowercase();
        let top = key.split("__").next().unwrap();
        let names = serde_json::to_value(Config::default()).unwrap();
        assert!(names.get(top).is_some(), "{k} is not a Concierge setting");
    }
    let c = Config::load(file, vars).unwrap_or_else(|e| panic!("{e}"));
    c.validate().unwrap_or_else(|e| panic!("{e}"));
    c
}

fn string_map(v: &Value) -> Vec<(String, String)> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn compose_settings_are_real() {
    let doc = &yaml_documents("compose/compose.yaml")[0];
    let env = string_map(&doc["x-concierge"]["environment"]);
    let concierge: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("CONCIERGE_"))
        .map(|(k, v)| {
            (
                k,
                if v.starts_with("${") {
                    String::new()
                } else {
                    v
                },
            )
        })
        .collect();
    assert!(concierge.iter().any(|(k, _)| k == "CONCIERGE_DATABASE_URL"));
    let c = loads(None, &concierge);
    assert!(
        !c.trusted_proxies.is_empty() && !c.trust_forwarded_for,
        "replicas sit behind the proxy, which is trusted by its address"
    );
    // The proxy's upstreams are the compose services.
    let nginx = std::fs::read_to_string(deploy("compose/nginx.conf")).unwrap();
    for service in ["concierge-a", "concierge-b"] {
        assert!(doc["services"].get(service).is_some());
        assert!(
            nginx.contains(&format!("server {service}:8080")),
            "{service}"
        );
    }
}

#[test]
fn kubernetes_manifests_match_the_server() {
    let docs: Vec<Value> = [
        "k8s/deployment.yaml",
        "k8s/configmap.yaml",
        "k8s/service.yaml",
        "k8s/hpa.yaml",
    ]
    .iter()
    .flat_map(|f| yaml_documents(f))
    .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap();
    let kustomize = &yaml_documents("k8s/kustomization.yaml")[0];
    for r in kustomize["resources"].as_sequence().unwrap() {
        assert!(
            deploy(&format!("k8s/{}", r.as_str().unwrap())).exists(),
            "{r:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("concierge.toml");
    std::fs::write(
        &file,
        kind("ConfigMap")["data"]["concierge.toml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    let container = &kind("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .filter(|(k, _)| k.starts_with("CONCIERGE_"))
        .collect();
    let c = loads(Some(&file), &env);
    assert_eq!(c.listen.port(), 8080);
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(port, u64::from(c.listen.port()));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["args"].as_sequence().unwrap().last().unwrap(),
        "serve"
    );
    assert_eq!(
        kind("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(
        kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"],
        "concierge"
    );
}

#[test]
fn the_image_and_the_unit_use_real_settings() {
    let containerfile = std::fs::read_to_string(deploy("Containerfile")).unwrap();
    let env: Vec<(String, String)> = containerfile
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| k.starts_with("CONCIERGE_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(env.len() >= 3, "{env:?}");
    loads(None, &env);
    assert!(containerfile.contains("USER 65532"), "runs as non-root");

    let unit = std::fs::read_to_string(deploy("systemd/concierge.service")).unwrap();
    let env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(!env.is_empty());
    loads(None, &env);
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/concierge --config /etc/concierge/concierge.toml serve"
    ));
}

/// Issue 15.1: the operator commands the kit documents reach the server's database: the
/// systemd comment's `systemd-run` has the unit's environment, environment file, working
/// directory and `--config`; the Kubernetes `exec` has the container's `--config`.
#[test]
fn operator_commands_reach_the_servers_database() {
    let unit = std::fs::read_to_string(deploy("systemd/concierge.service")).unwrap();
    let comment: String = unit
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .skip_while(|l| !l.contains("systemd-run"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_end_matches('\\').to_string() + " ")
        .collect();
    let words: Vec<&str> = comment.split_whitespace().collect();
    let value_after = |flag: &str| -> Vec<String> {
        words
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_string())
            .collect()
    };
    let props = value_after("-p");
    let exported = value_after("-E");
    let service = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    for e in service("Environment") {
        assert!(
            exported.contains(&e),
            "the operator command lacks {e}: {comment}"
        );
    }
    for key in [
        "WorkingDirectory",
        "EnvironmentFile",
        "StateDirectory",
        "DynamicUser",
    ] {
        for v in service(key) {
            assert!(
                props.contains(&format!("{key}={v}")),
                "the operator command lacks -p {key}={v}: {comment}"
            );
        }
    }
    let exec_start = service("ExecStart").pop().unwrap();
    let config = exec_start
        .split_whitespace()
        .skip_while(|w| *w != "--config")
        .nth(1);
    assert_eq!(value_after("--config").first().map(String::as_str), config);

    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    let exec = readme
        .lines()
        .find(|l| l.contains("kubectl") && l.contains(" exec "))
        .expect("a kubectl exec command");
    let after: Vec<&str> = exec
        .split(" -- ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let deployment = &yaml_documents("k8s/deployment.yaml")[0];
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let global = &args[..args.len() - 1];
    assert_eq!(&after[..global.len()], global, "{exec}");
}
