//! The README is a front door: short, its links alive, and each of its commands either run by a
//! test or named here with why it cannot run on a test machine. A command added to the README
//! without a place in [`COMMANDS`] fails here.

use std::path::{Path, PathBuf};

const README_MAX_CHARS: usize = 15_000;

/// Every command line of the README's `sh` blocks (continuations joined), by how it is checked.
const COMMANDS: &[(&str, &str)] = &[
    ("cargo dev", "crates/dev/tests/quick_start.rs runs what the alias runs and waits for the examples"),
    ("cargo test", ".ci/run runs it on a clean clone"),
    ("KUBECTL=", "a shell variable: the path `cargo dev` prints"),
    (
        "$KUBECTL --kubeconfig target/dev-cluster/kubeconfig get forge -A",
        "typed while `cargo dev` runs; quick_start reads the same objects",
    ),
    (
        "$KUBECTL --kubeconfig target/dev-cluster/kubeconfig explain",
        "typed while `cargo dev` runs; every field's description is checked by api::reference's tests",
    ),
    (
        "curl -s localhost:9464/metrics",
        "tests/deploy.rs reads /metrics on port 9464 of the operator run as the Deployment runs it",
    ),
    (
        "$KUBECTL --kubeconfig target/dev-cluster/kubeconfig delete namespace forge-demo",
        "typed while `cargo dev` runs; finalizing is end-to-end tested",
    ),
    (
        "helm install forgeops charts/forgeops -n forgeops-system --create-namespace",
        "tests/helm_chart.rs installs the chart with the real helm into the real kube-apiserver",
    ),
    ("docker build", "no container runtime on test machines"),
    ("docker push", "needs a registry"),
    (
        "kubectl apply --server-side -k my-forgeops/",
        "tests/deploy.rs applies deploy/ with the README's images: overlay",
    ),
    (
        "kubectl -n forgeops-system create secret generic forgeops-credentials",
        "tests/deploy.rs creates the same Secret",
    ),
    (
        "kubectl -n forgeops-system rollout status deploy/forgeops-operator",
        "needs a kubelet (the test control plane has none); tests/deploy.rs checks /readyz",
    ),
    (
        "kubectl label namespace forge-demo forgeops.dev/default-credentials=granted",
        "tests/tenancy.rs grants by this label",
    ),
    ("kubectl get fbu insights-1-to-2 -w", "the printer columns; tests/bulk_upgrade.rs waits on the same states"),
    ("kubectl get fbu insights-1-to-2 -o jsonpath=", "tests/bulk_upgrade.rs reads status.analyses"),
    (
        "kubectl annotate fbu insights-1-to-2 forgeops.dev/approve-step-2=",
        "tests/bulk_upgrade.rs approves by this annotation",
    ),
    (
        "kubectl annotate fbu insights-1-to-2 forgeops.dev/emergency-stop=",
        "tests/bulk_upgrade.rs stops by this annotation",
    ),
    ("kubectl wait fbu insights-1-to-2 --for=condition=Complete", "tests/bulk_upgrade.rs waits for the same state"),
    ("cargo install --locked --path . --bin kubectl-forge", "cargo builds the same binary for tests/bulk_upgrade.rs"),
    ("kubectl forge preview", "tests/bulk_upgrade.rs runs kubectl-forge preview"),
    ("kubectl forge resume", "tests/bulk_upgrade.rs runs kubectl-forge resume"),
    ("kubectl forge status fbu/", "tests/bulk_upgrade.rs runs kubectl-forge status -w to Complete and to Cancelled"),
    ("kubectl forge approve", "tests/bulk_upgrade.rs runs kubectl-forge approve"),
    ("kubectl forge stop", "tests/bulk_upgrade.rs runs kubectl-forge stop --reason"),
    ("kubectl forge status issue-tracker-insights", "tests/bulk_upgrade.rs runs kubectl-forge status APP"),
    ("kubectl forge refresh", "tests/bulk_upgrade.rs runs kubectl-forge refresh and waits for the operator"),
    ("source <(kubectl forge completion bash)", "kubectl_forge's unit test generates the bash script"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<unreadable {}: {e}>", path.display()))
}

/// The command lines of the `sh` blocks, comments dropped and `\` continuations joined.
fn commands(markdown: &str) -> Vec<String> {
    let (mut out, mut in_sh, mut pending) = (Vec::new(), false, String::new());
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        pending.push_str(line.trim_end_matches('\\').trim_end());
        if line.ends_with('\\') {
            pending.push(' ');
        } else {
            out.push(std::mem::take(&mut pending));
        }
    }
    out
}

/// The relative link targets of a Markdown text (without their `#anchor`).
fn links(markdown: &str) -> Vec<String> {
    // Code spans and blocks hold no links (a regex's `](` is not one).
    let mut prose = String::new();
    let mut in_code = false;
    for c in markdown.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            prose.push(c);
        }
    }
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with('#') && !target.starts_with("mailto:") {
            out.push(target.split('#').next().unwrap_or_default().to_string());
        }
    }
    out
}

#[test]
fn the_readme_is_a_front_door_of_at_most_15000_characters() {
    let readme = read(&root().join("README.md"));
    let chars = readme.chars().count();
    assert!(chars <= README_MAX_CHARS, "README.md has {chars} characters; move detail into docs/");
    for section in
        ["## Quick start", "## Install in a cluster", "## Connecting to the real Forge platform", "## GitOps"]
    {
        assert!(readme.contains(section), "the README lost its section {section}");
    }
}

#[test]
fn every_readme_command_is_run_by_a_test_or_says_why_not() {
    let readme = read(&root().join("README.md"));
    let found = commands(&readme);
    assert!(found.len() >= 10, "{found:?}");
    for command in &found {
        assert!(
            COMMANDS.iter().any(|(prefix, _)| command.starts_with(prefix)),
            "README command `{command}` is neither run by a test nor listed in tests/docs.rs with why"
        );
    }
    for (prefix, _) in COMMANDS {
        assert!(
            found.iter().any(|c| c.starts_with(prefix)),
            "tests/docs.rs lists `{prefix}`, which the README no longer has"
        );
    }
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).into_iter().flatten().flatten() {
        pages.push(entry.path());
    }
    assert!(pages.len() > 8, "docs/ has its pages");
    for page in pages {
        let dir = page.parent().map(Path::to_path_buf).unwrap_or_else(root);
        for link in links(&read(&page)) {
            assert!(dir.join(&link).exists(), "{} links to {link}, which does not exist", page.display());
        }
    }
}

#[test]
fn commands_and_links_are_read_as_written() {
    let md = "text [a](docs/a.md#x) [b](https://x.test) [c](#here) `[x](not/a/link)`\n```sh\n# note\nkubectl a \\\n  --b\ncargo test\n```\n```yaml\nnot: a command\n```\n";
    assert_eq!(commands(md), ["kubectl a --b", "cargo test"]);
    assert_eq!(links(md), ["docs/a.md"]);
}
