//! `deploy/` in a real cluster: `kubectl apply --server-side -k deploy/` against the real
//! kube-apiserver (server-side validation of every object), then the operator binary run with
//! exactly the Deployment's arguments and environment, as the Deployment's ServiceAccount (a token
//! the API server issues for it), reconciling the examples with no RBAC denial.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::{EmulatorConfig, Seed};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{repo_path, shared};

const WAIT: Duration = Duration::from_secs(90);

fn kubectl(args: &[&str]) -> (bool, String) {
    let shared = shared();
    let out = Command::new(&shared.kubectl)
        .arg("--kubeconfig")
        .arg(&shared.kubeconfig)
        .args(args)
        .current_dir(repo_path("."))
        .output()
        .expect("running kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn kubectl_ok(args: &[&str]) -> String {
    let (ok, text) = kubectl(args);
    assert!(ok, "kubectl {args:?} failed:\n{text}");
    text
}

/// Every object `kubectl kustomize <dir>` renders.
fn rendered(dir: &str) -> Vec<Value> {
    let yaml = kubectl_ok(&["kustomize", dir]);
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde_yaml_ng::from_value::<Value>(serde_yaml_ng::Value::deserialize(doc).unwrap()).unwrap())
        .collect()
}

use serde::Deserialize;

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is not rendered"))
}

#[test]
fn the_manifests_render_what_a_cluster_needs() {
    let base = rendered("deploy/");
    let kinds: Vec<String> = base.iter().map(|o| o["kind"].as_str().unwrap().to_string()).collect();
    for kind in ["CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "Deployment", "Service"] {
        assert!(kinds.iter().any(|k| k == kind), "deploy/ lacks a {kind}: {kinds:?}");
    }
    let deployment = find(&base, "Deployment", "forgeops-operator");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--leader-elect"));
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--metrics-addr=0.0.0.0:9464"));
    // A drain keeps one replica of the two, and only the metrics port is reachable.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = find(&base, "PodDisruptionBudget", "forgeops-operator");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pod_labels);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let policy = find(&base, "NetworkPolicy", "forgeops-operator");
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], pod_labels);
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    assert_eq!(policy["spec"]["ingress"][0]["ports"], serde_json::json!([{"port": "metrics", "protocol": "TCP"}]));
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env: Vec<&str> = container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"), "{env:?}");
    for aggregate in ["aggregate-to-edit", "aggregate-to-view"] {
        let label = format!("rbac.authorization.k8s.io/{aggregate}");
        assert!(
            base.iter().any(|o| o["kind"] == "ClusterRole" && o["metadata"]["labels"][&label] == "true"),
            "no ClusterRole {aggregate}"
        );
    }
    // The image recipe runs the same user and serves the same port.
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    let uid = spec["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(dockerfile.contains(&format!("USER {uid}:")), "the Dockerfile's USER is not {uid}");
    assert!(dockerfile.contains("EXPOSE 9464"));
    assert!(dockerfile.contains("distroless/static"), "a static, distroless runtime");
    assert!(dockerfile.contains("--package forgeops --bin forgeops"), "the image builds the operator crate only");
    // The image the Deployment names is the one the Dockerfile's comment builds.
    let image = container["image"].as_str().unwrap();
    assert!(dockerfile.contains(&format!("docker build -t {image} .")), "the Dockerfile does not build {image}");

    // The namespaced variant watches one namespace and binds the operator there only.
    let namespaced = rendered("deploy/namespaced");
    let args =
        &find(&namespaced, "Deployment", "forgeops-operator")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_array().unwrap().iter().any(|a| a == "--namespace=forge-apps"), "{args}");
    assert!(!namespaced.iter().any(|o| o["kind"] == "ClusterRoleBinding"), "no cluster-wide binding");
    assert_eq!(
        find(&namespaced, "RoleBinding", "forgeops-operator-credentials")["metadata"]["namespace"],
        "forge-apps"
    );

    // The ServiceMonitor component, from an overlay (kustomize takes relative paths only).
    let overlay = repo_path(&format!("target/overlay-test-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../deploy]\ncomponents: [../../deploy/components/servicemonitor]\nimages:\n  - name: forgeops\n    newName: registry.example.com/platform/forgeops\n    newTag: 0.1.0\n",
    )
    .unwrap();
    let monitored = rendered(overlay.to_str().unwrap());
    assert_eq!(find(&monitored, "ServiceMonitor", "forgeops")["spec"]["endpoints"][0]["port"], "metrics");
    // The README's `images:` overlay points the Deployment at the image a user pushed.
    assert_eq!(
        find(&monitored, "Deployment", "forgeops-operator")["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/platform/forgeops:0.1.0"
    );
    std::fs::remove_dir_all(&overlay).ok();
}

fn tempdir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn apply_k_deploy_then_the_deployments_operator_reconciles_the_examples_as_its_service_account() {
    let shared = shared();
    let client = kube::Client::try_from(shared.admin.clone()).unwrap();
    // Every object validated and stored by the API server.
    // The namespaced variant first (it creates the namespace it binds in), then the base over it.
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-k", "deploy/namespaced/"]);
    let applied = kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-k", "deploy/"]);
    assert!(applied.contains("deployment.apps/forgeops-operator serverside-applied"), "{applied}");

    // The platform, with the apps and sites of the examples, and its credentials as the example
    // Secret describes them.
    let seed = Seed::load(&repo_path("deploy/emulator/seed.yaml")).unwrap();
    let account = seed.accounts[0].clone();
    let emulator =
        forgeops_emulator::start(EmulatorConfig { seed, ..Default::default() }, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let example: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_path("deploy/examples/credentials-secret.yaml.example")).unwrap(),
    )
    .unwrap();
    let mut secret: Secret = serde_json::from_value(example).unwrap();
    secret.string_data =
        Some([("email".into(), account.email.clone()), ("apiToken".into(), account.api_token.clone())].into());
    let namespace = secret.metadata.namespace.clone().unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch("forgeops-credentials", &PatchParams::apply("deploy-test").force(), &Patch::Apply(&secret))
        .await
        .unwrap();

    // A token for the Deployment's ServiceAccount, issued by the API server.
    let deployment = rendered("deploy/").into_iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let sa_name = pod["serviceAccountName"].as_str().unwrap();
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create_token_request(sa_name, &PostParams::default(), &request)
        .await
        .expect("a token for the operator's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest answered a token");
    let admin_kubeconfig = std::fs::read_to_string(&shared.kubeconfig).unwrap();
    let kubeconfig: String = admin_kubeconfig
        .lines()
        .map(|l| if l.trim_start().starts_with("token:") { format!("    token: {token}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempdir("forgeops-deploy");
    let kubeconfig_path = dir.join("kubeconfig-sa");
    std::fs::write(&kubeconfig_path, kubeconfig).unwrap();

    // Exactly the Deployment's arguments and environment (the downward API resolved as the kubelet
    // would), plus where the platform is and the kubeconfig standing in for the in-cluster config.
    let container = &pod["containers"][0];
    let args: Vec<String> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forgeops"));
    cmd.args(&args)
        .env_clear()
        .env("KUBECONFIG", &kubeconfig_path)
        .env("FORGE_GRAPHQL_GATEWAY", emulator.graphql_url());
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "forgeops-operator-7d4b9c-x2x7q".to_string(),
            Some("metadata.namespace") => namespace.clone(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => e["value"].as_str().unwrap().to_string(),
        };
        cmd.env(name, value);
    }
    let log = dir.join("operator.log");
    let operator = forgeops_testenv::localcluster::KeptProcess::spawn("forgeops", cmd, &log).unwrap();

    kubectl_ok(&["apply", "-f", "deploy/examples/"]);
    let apps: Api<ForgeApp> = Api::namespaced(client.clone(), "forge-demo");
    let insts: Api<Installation> = Api::namespaced(client.clone(), "forge-demo");
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = |a: &ForgeApp| {
            a.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let all_apps = apps.list(&Default::default()).await.unwrap().items;
        let installed = insts
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|i| i.status.as_ref().and_then(|s| s.installed_version.as_ref()).is_some())
            .count();
        if !all_apps.is_empty() && all_apps.iter().all(ready) && installed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the examples were not reconciled:\n{}", operator.log_tail());
        assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Ready as the leader: every watch (the Lease cache included) listed with these rights.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = support::probe(9464, "/readyz").await;
        if answer.as_ref().is_some_and(|(code, body)| *code == 200 && body.starts_with("leader")) {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz: {answer:?}\n{}", operator.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(support::probe(9464, "/healthz").await.map(|a| a.0), Some(200));
    // The README's `curl -s localhost:9464/metrics`.
    let metrics = support::probe(9464, "/metrics").await.unwrap_or_default();
    assert!(metrics.0 == 200 && metrics.1.contains("forgeops_kube_api_requests_total"), "/metrics: {metrics:?}");
    // Served as OpenMetrics text (a counter's family is named without `_total`), so Prometheus
    // parses it as such, with the object gauges and build info a dashboard reads.
    let served = reqwest::Client::new().get("http://127.0.0.1:9464/metrics").send().await.expect("GET /metrics");
    let content_type = served.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(content_type.as_deref(), Some(forgeops::operator::OPENMETRICS));
    assert!(metrics.1.contains("forgeops_build_info{") && metrics.1.contains("forgeops_objects{"), "{}", metrics.1);
    // What the Deployment's memory request and limit are sized from.
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", operator.pid())).unwrap_or_default();
    let kib = |key: &str| {
        proc_status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    };
    eprintln!(
        "operator memory after reconciling the examples: RSS {} KiB, peak {} KiB",
        kib("VmRSS:").unwrap_or(0),
        kib("VmHWM:").unwrap_or(0)
    );
    let stopping = Instant::now();
    operator.signal(forgeops_testenv::sys::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !operator.has_exited() {
        assert!(Instant::now() < deadline, "SIGTERM did not stop the operator");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("SIGTERM to exit: {} ms", stopping.elapsed().as_millis());
    let text = std::fs::read_to_string(&log).unwrap();
    for denial in ["forbidden", "Forbidden", "code: 403"] {
        assert!(!text.contains(denial), "an RBAC denial in the operator's log ({denial}):\n{text}");
    }
    assert!(text.contains("became leader"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The README's commands that install the CRDs alone work as written, against the real API server.
#[test]
fn the_readmes_crd_install_commands_work() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    for command in [
        "kubectl apply --server-side -f crds/forgeops.dev.yaml",
        "kubectl apply --server-side -f deploy/base/rbac.yaml",
    ] {
        assert!(readme.contains(command), "the README no longer says `{command}`");
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let (ok, text) = kubectl(&[&args[..], &["--force-conflicts"]].concat());
        assert!(ok, "`{command}` failed:\n{text}");
        assert!(text.contains("serverside-applied"), "`{command}`: {text}");
    }
    assert!(readme.contains("(or `-k crds/`)"));
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-k", "crds/"]);
}
