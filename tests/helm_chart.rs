//! The Helm chart `charts/forgeops`, with the real helm (built from its pinned Go module by
//! `hack/helm/build.sh`): it lints; its default render is `deploy/` object for object (the
//! operator's arguments, environment, pod spec and RBAC rules equal, labels added), and with
//! `watchNamespace` it is `deploy/namespaced`; its values do what they say; and against the real
//! kube-apiserver it installs (server-side), upgrades, uninstalls leaving the CRDs and the objects
//! in them, installs again over the kept CRDs, and takes over an install of `deploy/`.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};
use support::repo_path;

const CHART: &str = "charts/forgeops";
const FORGEOPS_CRDS: [&str; 4] = [
    "forgeapps.forgeops.dev",
    "distributionpolicies.forgeops.dev",
    "installations.forgeops.dev",
    "bulkupgrades.forgeops.dev",
];

/// helm, built once and cached by `hack/helm/build.sh` (which prints its path).
fn helm_bin() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_path("hack/helm/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running hack/helm/build.sh");
        assert!(out.status.success(), "hack/helm/build.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim())
    })
}

/// Helm's own state (repositories, cache, plugins) and this test's files in target/, not the user's.
fn helm_home() -> &'static PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = repo_path("target/helm-chart-test");
        std::fs::create_dir_all(&dir).expect("creating helm's home");
        dir
    })
}

fn helm(args: &[&str]) -> Output {
    let home = helm_home();
    Command::new(helm_bin())
        .args(args)
        .current_dir(repo_path("."))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("running helm")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every document of a multi-document YAML stream (empty ones left out).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| {
            let doc = serde_yaml_ng::Value::deserialize(doc).expect("a YAML document");
            serde_yaml_ng::from_value::<Value>(doc).expect("YAML that JSON can hold")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template forgeops charts/forgeops -n forgeops-system` with these extra arguments.
fn template(extra: &[&str]) -> Vec<Value> {
    let args = [&["template", "forgeops", CHART, "--namespace", "forgeops-system"], extra].concat();
    documents(&helm_ok(&args))
}

/// helm template's failure message for these arguments (it must fail).
fn template_error(extra: &[&str]) -> String {
    let args = [&["template", "forgeops", CHART, "--namespace", "forgeops-system"], extra].concat();
    let out = helm(&args);
    assert!(!out.status.success(), "helm {args:?} should have failed");
    text(&out)
}

/// kubectl from the pinned control-plane binaries (no cluster needed for `kustomize`).
fn kubectl_bin() -> PathBuf {
    forgeops_testenv::localcluster::binaries().expect("the control-plane binaries").join("kubectl")
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out =
        Command::new(kubectl_bin()).args(["kustomize", dir]).current_dir(repo_path(".")).output().expect("kubectl");
    assert!(out.status.success(), "kubectl kustomize {dir}: {}", text(&out));
    documents(&String::from_utf8_lossy(&out.stdout))
}

fn key(o: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&o["kind"]), s(&o["metadata"]["namespace"]), s(&o["metadata"]["name"]))
}

fn keys(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    objects.iter().map(key).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is not rendered: {:?}", keys(objects)))
}

fn has(objects: &[Value], kind: &str) -> bool {
    objects.iter().any(|o| o["kind"] == kind)
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "forgeops-operator")["spec"]["template"]["spec"]["containers"][0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("a list").iter().map(|a| a.as_str().expect("a string").to_string()).collect()
}

/// An object without the labels and annotations (which the chart adds to).
fn normalized(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(meta) = o.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        meta.remove("labels");
        meta.remove("annotations");
    }
    if let Some(template) = o.pointer_mut("/spec/template").and_then(Value::as_object_mut)
        && let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("labels");
        meta.remove("annotations");
        if meta.is_empty() {
            template.remove("metadata");
        }
    }
    o
}

/// The chart's object has every label of the manifest's (selectors rely on them), and is otherwise equal.
fn assert_same_object(chart: &Value, manifest: &Value) {
    let what = format!("{:?}", key(manifest));
    for meta in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(Value::Object(labels)) = manifest.pointer(meta) {
            for (k, v) in labels {
                assert_eq!(chart.pointer(meta).and_then(|l| l.get(k)), Some(v), "{what}: label {k} at {meta}");
            }
        }
    }
    let (chart, manifest) = (numbers_as_numbers(&normalized(chart)), numbers_as_numbers(&normalized(manifest)));
    if let Some(difference) = first_difference(&chart, &manifest, "") {
        panic!("{what} differs between the chart and the manifests: {difference}");
    }
}

/// The same number written `1` or `1.0` (kustomize rewrites the CRDs' `maximum: 4294967295.0`) is equal.
fn numbers_as_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_numbers).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), numbers_as_numbers(v))).collect()),
        _ => v.clone(),
    }
}

/// Where two JSON values first differ, as `path: chart vs manifest`.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}/{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

/// Every object of `kubectl kustomize <dir>` is rendered by the chart, equal but for added labels,
/// and the chart renders nothing else; the release namespace is helm's (`--create-namespace`), not
/// the chart's.
fn assert_chart_is(chart: &[Value], dir: &str) {
    let manifests: Vec<Value> = kustomize(dir)
        .into_iter()
        .filter(|o| !(o["kind"] == "Namespace" && o["metadata"]["name"] == "forgeops-system"))
        .collect();
    assert_eq!(keys(chart), keys(&manifests), "the chart renders other objects than {dir}");
    for manifest in &manifests {
        let rendered = chart.iter().find(|o| key(o) == key(manifest)).expect("the same keys");
        assert_same_object(rendered, manifest);
    }
}

fn yaml_file(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
    let mut docs = documents(&text);
    assert_eq!(docs.len(), 1, "{rel} holds one document");
    docs.remove(0)
}

#[test]
fn the_chart_lints_with_defaults_and_with_every_toggle() {
    helm_ok(&["lint", "--strict", CHART]);
    helm_ok(&[
        "lint",
        "--strict",
        CHART,
        "--namespace",
        "forgeops-system",
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
        "--set",
        "watchNamespace=forge-apps,createWatchNamespace=true,rbac.clusterWideSecrets=true",
        "--set",
        "podDisruptionBudget.enabled=false,networkPolicy.enabled=false,crds.keep=false",
        "--set",
        "platform.url=https://gateway.example/graphql,platform.distribution=true",
    ]);
    let chart = yaml_file(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["version"], "0.1.0");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"), "appVersion is the operator's version");
}

#[test]
fn the_default_render_is_deploy_and_watch_namespace_is_deploy_namespaced() {
    let chart = template(&[]);
    let base = kustomize("deploy/");
    // What helm leaves out of the comparison: the Namespace forgeops-system, which is the release's
    // (`--create-namespace`); a chart owning it would delete the credentials Secret with it.
    assert!(!has(&chart, "Namespace"), "the release namespace is helm's, not the chart's");
    assert_eq!(
        strings(&container(&chart)["args"]),
        strings(&find(&base, "Deployment", "forgeops-operator")["spec"]["template"]["spec"]["containers"][0]["args"])
    );
    assert_eq!(
        container(&chart)["env"],
        find(&base, "Deployment", "forgeops-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    );
    assert_eq!(container(&chart)["image"], "forgeops:0.1.0");
    assert_chart_is(&chart, "deploy/");
    for crd in FORGEOPS_CRDS {
        let rendered = find(&chart, "CustomResourceDefinition", crd);
        assert_eq!(rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{crd}");
    }

    // The namespaced mode: deploy/namespaced's arguments, RoleBindings in the watched namespace and
    // no ClusterRoleBinding; with createWatchNamespace, its Namespace too (kept on uninstall).
    let namespaced = template(&["--set", "watchNamespace=forge-apps", "--set", "createWatchNamespace=true"]);
    let manifests = kustomize("deploy/namespaced");
    assert_eq!(
        strings(&container(&namespaced)["args"]),
        strings(
            &find(&manifests, "Deployment", "forgeops-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
        )
    );
    assert!(!has(&namespaced, "ClusterRoleBinding"), "no cluster-wide binding");
    assert_chart_is(&namespaced, "deploy/namespaced");
    assert_eq!(
        find(&namespaced, "Namespace", "forge-apps")["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let without_namespace = template(&["--set", "watchNamespace=forge-apps"]);
    assert!(!has(&without_namespace, "Namespace"), "the watched namespace is created only when asked");
    assert_eq!(
        find(&without_namespace, "RoleBinding", "forgeops-operator-credentials")["metadata"]["namespace"],
        "forge-apps"
    );
    // Watching the release namespace itself: the two RoleBindings there do not collide.
    let own = template(&["--set", "watchNamespace=forgeops-system"]);
    assert_eq!(
        find(&own, "RoleBinding", "forgeops-operator-watch")["roleRef"]["name"],
        "forgeops-operator",
        "the watch binding of the release namespace"
    );
    assert_eq!(find(&own, "RoleBinding", "forgeops-operator")["roleRef"]["name"], "forgeops-operator-own-namespace");

    // The optional components are deploy/components' objects.
    let components = template(&["--set", "serviceMonitor.enabled=true,rbac.clusterWideSecrets=true"]);
    assert_same_object(
        find(&components, "ServiceMonitor", "forgeops"),
        &yaml_file("deploy/components/servicemonitor/servicemonitor.yaml"),
    );
    assert_same_object(
        find(&components, "ClusterRoleBinding", "forgeops-operator-credentials"),
        &yaml_file("deploy/components/cluster-wide-secrets/clusterrolebinding.yaml"),
    );
}

#[test]
fn the_values_do_what_they_say() {
    // The image: repository and tag, or a digest.
    let image = template(&[
        "--set",
        "image.repository=registry.example.com/platform/forgeops",
        "--set",
        "image.tag=0.2.0",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ]);
    assert_eq!(container(&image)["image"], "registry.example.com/platform/forgeops:0.2.0");
    let pod = &find(&image, "Deployment", "forgeops-operator")["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = template(&["--set", &format!("image.digest={digest}")]);
    assert_eq!(container(&pinned)["image"], format!("forgeops@{digest}"));

    // Replicas and leader election, and the refusal of replicas without it.
    let three = template(&["--set", "replicaCount=3"]);
    assert_eq!(find(&three, "Deployment", "forgeops-operator")["spec"]["replicas"], 3);
    let single = template(&["--set", "replicaCount=1", "--set", "leaderElection.enabled=false"]);
    assert!(!strings(&container(&single)["args"]).contains(&"--leader-elect".to_string()));
    let refused = template_error(&["--set", "leaderElection.enabled=false"]);
    assert!(
        refused.contains("replicaCount is 2 but leaderElection.enabled is false"),
        "not a clear refusal:\n{refused}"
    );

    // The operator's options.
    let options = template(&[
        "--set",
        "defaultCredentials.namespaceSelector=",
        "--set",
        "defaultCredentials.namespaces={team-a,team-b}",
        "--set",
        "platform.url=https://gateway.example/graphql,platform.distribution=true",
        "--set",
        "logFormat=text,logLevel=info\\,forgeops=debug",
        "--set",
        "extraArgs={--max-running-bulk-upgrades=5}",
        "--set",
        "extraEnv[0].name=HTTPS_PROXY,extraEnv[0].value=http://proxy.example:3128",
    ]);
    assert_eq!(
        strings(&container(&options)["args"]),
        [
            "run",
            "--leader-elect",
            "--metrics-addr=0.0.0.0:9464",
            "--log-format=text",
            "--default-credentials-namespaces=team-a,team-b",
            "--platform-distribution",
            "--max-running-bulk-upgrades=5"
        ]
    );
    let env = &container(&options)["env"];
    assert_eq!(env[2], json!({"name": "RUST_LOG", "value": "info,forgeops=debug"}));
    assert_eq!(env[3], json!({"name": "FORGE_GRAPHQL_GATEWAY", "value": "https://gateway.example/graphql"}));
    assert_eq!(env[4], json!({"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"}));

    // Scheduling and the pod's metadata.
    let scheduled = template(&[
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux,podAnnotations.team=platform,priorityClassName=system-cluster-critical",
        "--set",
        "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
        "--set",
        "resources.limits.memory=512Mi",
    ]);
    let deployment = find(&scheduled, "Deployment", "forgeops-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"], json!([{"key": "dedicated", "operator": "Exists"}]));
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(deployment["spec"]["template"]["metadata"]["annotations"], json!({"team": "platform"}));
    assert_eq!(pod["containers"][0]["resources"]["limits"], json!({"cpu": "1", "memory": "512Mi"}));

    // The toggles: the monitoring objects on, the PDB, NetworkPolicy, aggregated roles and CRDs off.
    let on =
        template(&["--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true"]);
    let rule = find(&on, "PrometheusRule", "forgeops");
    let alerts = yaml_file(&format!("{CHART}/files/alerts.yaml"));
    assert!(alerts["groups"].as_array().is_some_and(|g| !g.is_empty()), "files/alerts.yaml has groups");
    assert_eq!(rule["spec"]["groups"], alerts["groups"], "the PrometheusRule is files/alerts.yaml's groups");
    let dashboard = find(&on, "ConfigMap", "forgeops-grafana-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json_in_map: Value =
        serde_json::from_str(dashboard["data"]["forgeops.json"].as_str().expect("the dashboard")).expect("JSON");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path(&format!("{CHART}/files/grafana-dashboard.json")))
            .expect("the dashboard file"),
    )
    .expect("the dashboard file is JSON");
    assert_eq!(json_in_map, file);
    assert!(has(&on, "ServiceMonitor"));
    let off = template(&[
        "--set",
        "podDisruptionBudget.enabled=false,networkPolicy.enabled=false,rbac.aggregateToDefaultRoles=false",
        "--set",
        "crds.enabled=false",
    ]);
    for kind in ["PodDisruptionBudget", "NetworkPolicy", "CustomResourceDefinition", "ServiceMonitor", "PrometheusRule"]
    {
        assert!(!has(&off, kind), "{kind} is rendered");
    }
    assert!(!off.iter().any(|o| o["metadata"]["name"] == "forgeops-edit"), "the aggregated roles are rendered");
    let unkept = template(&["--set", "crds.keep=false"]);
    assert!(find(&unkept, "CustomResourceDefinition", FORGEOPS_CRDS[0])["metadata"]["annotations"].is_null());

    // Names follow the release; the selector stays deploy/'s.
    let other = documents(&helm_ok(&["template", "acme", CHART, "--namespace", "acme-ops"]));
    let deployment = find(&other, "Deployment", "acme-forgeops-operator");
    assert_eq!(deployment["metadata"]["namespace"], "acme-ops");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "forgeops", "app.kubernetes.io/component": "operator"})
    );
    assert_eq!(find(&other, "ClusterRoleBinding", "acme-forgeops-operator")["subjects"][0]["namespace"], "acme-ops");

    // values.schema.json: a misspelt or ill-typed value is refused.
    for (bad, why) in [
        ("replicas=3", "replicas"),
        ("logFormat=yaml", "logFormat"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("podDisruptionBudget.enable=true", "enable"),
    ] {
        let error = template_error(&["--set", bad]);
        assert!(error.contains("schema") && error.contains(why), "--set {bad}:\n{error}");
    }
}

/// Leaf paths of the values schema: `image.repository`, `resources`, ...
fn schema_leaves(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    for (name, property) in schema["properties"].as_object().expect("properties") {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if property.get("properties").is_some() {
            schema_leaves(property, &path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_value_is_documented_in_values_yaml_the_schema_and_the_readme() {
    let values_text = std::fs::read_to_string(repo_path(&format!("{CHART}/values.yaml"))).expect("values.yaml");
    let lines: Vec<&str> = values_text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.split_once(':').is_some_and(|(k, _)| !k.is_empty() && !k.contains(' '));
        if is_key {
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "values.yaml line {}: `{line}` has no comment above it",
                i + 1
            );
        }
    }
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path(&format!("{CHART}/values.schema.json"))).expect("values.schema.json"),
    )
    .expect("values.schema.json is JSON");
    let values = yaml_file(&format!("{CHART}/values.yaml"));
    let mut leaves = Vec::new();
    schema_leaves(&schema, "", &mut leaves);
    let readme = std::fs::read_to_string(repo_path(&format!("{CHART}/README.md"))).expect("the chart's README");
    for leaf in leaves.iter().filter(|l| *l != "global") {
        let pointer = format!("/{}", leaf.replace('.', "/"));
        assert!(values.pointer(&pointer).is_some(), "the schema's {leaf} is not in values.yaml");
        assert!(readme.contains(&format!("| `{leaf}` |")), "the chart's README has no row for {leaf}");
    }
    // And every value of values.yaml is in the schema (a top-level typo is refused by it).
    fn value_paths(v: &Value, schema: &Value, prefix: &str) {
        for (k, child) in v.as_object().expect("a map") {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            let property = &schema["properties"][k];
            assert!(!property.is_null(), "values.yaml's {path} is not in values.schema.json");
            if property.get("properties").is_some() {
                value_paths(child, property, &path);
            }
        }
    }
    value_paths(&values, &schema, "");
}

// The real install.

fn kubectl(args: &[&str]) -> (bool, String) {
    let shared = support::bare();
    let out = Command::new(&shared.kubectl)
        .arg("--kubeconfig")
        .arg(&shared.kubeconfig)
        .args(args)
        .current_dir(repo_path("."))
        .output()
        .expect("running kubectl");
    (out.status.success(), text(&out))
}

fn kubectl_ok(args: &[&str]) -> String {
    let (ok, out) = kubectl(args);
    assert!(ok, "kubectl {args:?} failed:\n{out}");
    out
}

fn kubectl_json(args: &[&str]) -> Value {
    let out = kubectl_ok(&[args, &["-o", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}:\n{out}"))
}

fn exists(kind: &str, namespace: &str, name: &str) -> bool {
    let target = format!("{}/{name}", kind.to_lowercase());
    let mut args = vec!["get", target.as_str()];
    if !namespace.is_empty() {
        args.extend(["--namespace", namespace]);
    }
    let (ok, out) = kubectl(&args);
    assert!(ok || out.contains("NotFound"), "kubectl get {target}: {out}");
    ok
}

/// helm against the shared control plane.
fn helm_cluster(args: &[&str]) -> String {
    let kubeconfig = support::bare().kubeconfig.to_str().expect("a UTF-8 path").to_string();
    helm_ok(&[args, &["--kubeconfig", kubeconfig.as_str()]].concat())
}

/// Minimal stand-ins for the Prometheus Operator's CRDs (any spec accepted), so the ServiceMonitor and
/// PrometheusRule are installed too.
fn install_monitoring_crds() {
    let crd = |kind: &str, plural: &str| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
    };
    let dir = helm_home().join("monitoring-crds");
    std::fs::create_dir_all(&dir).expect("a directory");
    for (kind, plural) in [("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules")] {
        let path = dir.join(format!("{plural}.json"));
        std::fs::write(&path, crd(kind, plural).to_string()).expect("writing a CRD");
        kubectl_ok(&["apply", "--server-side", "-f", path.to_str().expect("a UTF-8 path")]);
        kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{plural}.monitoring.coreos.com"),
        ]);
    }
}

#[test]
fn helm_installs_server_side_upgrades_uninstalls_keeping_the_crds_and_takes_over_deploy() {
    let release = "forgeops-e2e";
    let namespace = "forgeops-e2e";
    let watched = "forge-e2e-apps";
    // A fresh cluster: no forgeops CRDs, no RBAC of the operator's.
    for crd in FORGEOPS_CRDS {
        assert!(!exists("CustomResourceDefinition", "", crd), "{crd} is installed before helm install");
    }
    install_monitoring_crds();

    // 1. Install, every component on.
    let toggles = "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true";
    let installed =
        helm_cluster(&["install", release, CHART, "--namespace", namespace, "--create-namespace", "--set", toggles]);
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(installed.contains("create secret generic forgeops-credentials"), "the NOTES: {installed}");
    let rendered = documents(&helm_ok(&["template", release, CHART, "--namespace", namespace, "--set", toggles]));
    for o in &rendered {
        let (kind, ns, name) = key(o);
        assert!(exists(&kind, &ns, &name), "{kind} {ns}/{name} was not installed");
    }
    assert!(rendered.len() >= 18, "{:?}", keys(&rendered));
    // helm 4 applies server-side: its field manager's entries are Apply operations.
    let deployment =
        kubectl_json(&["get", "deployment/forgeops-e2e-operator", "--namespace", namespace, "--show-managed-fields"]);
    let managers = deployment["metadata"]["managedFields"].as_array().expect("managedFields");
    assert!(
        managers.iter().any(|m| m["manager"] == "helm" && m["operation"] == "Apply"),
        "not applied server-side by helm: {managers:?}"
    );
    for crd in FORGEOPS_CRDS {
        kubectl_ok(&["wait", "--for=condition=Established", "--timeout=60s", &format!("crd/{crd}")]);
    }

    // 2. Upgrade: three replicas, then the namespaced mode (the cluster-wide binding goes, the
    // RoleBindings in the watched namespace come).
    helm_cluster(&["upgrade", release, CHART, "--namespace", namespace, "--reuse-values", "--set", "replicaCount=3"]);
    let deployment = kubectl_json(&["get", "deployment/forgeops-e2e-operator", "--namespace", namespace]);
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(exists("ClusterRoleBinding", "", "forgeops-e2e-operator"));
    helm_cluster(&[
        "upgrade",
        release,
        CHART,
        "--namespace",
        namespace,
        "--reuse-values",
        "--set",
        &format!("watchNamespace={watched},createWatchNamespace=true"),
    ]);
    assert!(!exists("ClusterRoleBinding", "", "forgeops-e2e-operator"), "the cluster-wide binding was not removed");
    assert!(exists("RoleBinding", watched, "forgeops-e2e-operator"));
    assert!(exists("RoleBinding", watched, "forgeops-e2e-operator-credentials"));
    let args = kubectl_ok(&[
        "get",
        "deployment/forgeops-e2e-operator",
        "--namespace",
        namespace,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    assert!(args.contains(&format!("--namespace={watched}")), "{args}");
    // An object of the users', which must outlive the release.
    let app = helm_home().join("forgeapp.json");
    std::fs::write(
        &app,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp",
            "metadata": {"name": "kept", "namespace": watched},
            "spec": {"appId": "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001"}})
        .to_string(),
    )
    .expect("writing a ForgeApp");
    kubectl_ok(&["apply", "--server-side", "-f", app.to_str().expect("a UTF-8 path")]);

    // 3. Uninstall: the CRDs (and so the ForgeApp) and the watched namespace are kept, the rest is gone.
    let uninstalled = helm_cluster(&["uninstall", release, "--namespace", namespace, "--wait"]);
    assert!(uninstalled.contains("kept due to the resource policy"), "{uninstalled}");
    for crd in FORGEOPS_CRDS {
        assert!(exists("CustomResourceDefinition", "", crd), "{crd} was deleted");
    }
    assert!(exists("ForgeApp", watched, "kept"), "the ForgeApp went with the release");
    assert!(exists("Namespace", "", watched), "the watched namespace went with the release");
    for (kind, ns, name) in [
        ("Deployment", namespace, "forgeops-e2e-operator"),
        ("ServiceAccount", namespace, "forgeops-e2e-operator"),
        ("Service", namespace, "forgeops-e2e-metrics"),
        ("ClusterRole", "", "forgeops-e2e-operator"),
        ("ClusterRole", "", "forgeops-e2e-edit"),
        ("RoleBinding", watched, "forgeops-e2e-operator"),
        ("ServiceMonitor", namespace, "forgeops-e2e"),
        ("PrometheusRule", namespace, "forgeops-e2e"),
        ("ConfigMap", namespace, "forgeops-e2e-grafana-dashboard"),
    ] {
        assert!(!exists(kind, ns, name), "{kind} {ns}/{name} is left after uninstall");
    }

    // 4. Installing again adopts the kept CRDs (they still name the release).
    helm_cluster(&["install", release, CHART, "--namespace", namespace]);
    assert!(exists("Deployment", namespace, "forgeops-e2e-operator"));
    helm_cluster(&["uninstall", release, "--namespace", namespace, "--wait"]);

    // 5. From deploy/ to the chart: the README's default install, taking over what
    // `kubectl apply -k deploy/` created (same names and selectors), then uninstalled.
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-k", "deploy/"]);
    helm_cluster(&[
        "install",
        "forgeops",
        CHART,
        "--namespace",
        "forgeops-system",
        "--create-namespace",
        "--take-ownership",
        // kubectl owns the env's fieldRefs, atomic structs the API server completed (apiVersion: v1):
        // the same value, taken over.
        "--force-conflicts",
    ]);
    let deployment = kubectl_json(&["get", "deployment/forgeops-operator", "--namespace", "forgeops-system"]);
    assert_eq!(deployment["metadata"]["annotations"]["meta.helm.sh/release-name"], "forgeops");
    assert_eq!(deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
    helm_cluster(&["uninstall", "forgeops", "--namespace", "forgeops-system", "--wait"]);
    assert!(!exists("Deployment", "forgeops-system", "forgeops-operator"));
    assert!(exists("CustomResourceDefinition", "", FORGEOPS_CRDS[0]));
    assert!(exists("Namespace", "", "forgeops-system"), "the release namespace is not the chart's");
}
