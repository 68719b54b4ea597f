//! The workspace's shape, checked where a change would quietly break it: every integration test
//! (in `tests/` and in each member crate's `tests/`) is in exactly one test tier of `.cargo/config.toml`, and the operator crate's own dependencies hold
//! none of the tooling's (the emulator's GraphQL server, the control plane's certificates and
//! syscalls).

use std::collections::BTreeMap;
use std::path::Path;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `alias name` -> the `--test` targets it names, for every `test-*` alias.
fn tiers() -> BTreeMap<String, Vec<String>> {
    let config = repo_file(".cargo/config.toml");
    let mut tiers = BTreeMap::new();
    for line in config.lines().filter(|l| l.starts_with("test-")) {
        let (name, command) = line.split_once('=').expect("an alias line is `name = \"command\"`");
        let words: Vec<&str> = command.trim().trim_matches('"').split_whitespace().collect();
        let targets = words.windows(2).filter(|w| w[0] == "--test").map(|w| w[1].to_string()).collect();
        tiers.insert(name.trim().to_string(), targets);
    }
    tiers
}

#[test]
fn every_integration_test_is_in_exactly_one_tier() {
    let tiers = tiers();
    assert_eq!(tiers.keys().collect::<Vec<_>>(), ["test-drills", "test-e2e", "test-fast"], "the three tiers");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("tests")];
    for member in std::fs::read_dir(root.join("crates")).unwrap().filter_map(|e| e.ok()) {
        dirs.push(member.path().join("tests"));
    }
    let mut files: Vec<String> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let unique: std::collections::BTreeSet<&String> = files.iter().collect();
    assert_eq!(unique.len(), files.len(), "two crates have an integration test of the same name: {files:?}");
    assert!(files.len() >= 10, "tests/ was read: {files:?}");
    for file in &files {
        let holders: Vec<&String> = tiers.iter().filter(|(_, t)| t.contains(file)).map(|(n, _)| n).collect();
        assert_eq!(
            holders.len(),
            1,
            "integration test {file} is in {holders:?}: add it to one tier in .cargo/config.toml"
        );
    }
    for (tier, targets) in &tiers {
        for target in targets {
            assert!(files.contains(target), "{tier} names --test {target}, which no tests/ directory holds");
        }
    }
}

#[test]
fn the_operator_depends_on_none_of_the_tooling() {
    let manifest = repo_file("Cargo.toml");
    let deps = manifest.split("\n[dependencies]\n").nth(1).expect("the operator has a [dependencies] table");
    let deps = deps.split("\n[").next().unwrap_or_default();
    let names: Vec<&str> = deps
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['=', '.']).next().map(str::trim))
        .collect();
    assert!(names.contains(&"kube"), "the table was read: {names:?}");
    for tooling in ["async-graphql", "rcgen", "libc", "forgeops-emulator", "forgeops-testenv", "forgeops-dev"] {
        assert!(!names.contains(&tooling), "the operator crate depends on {tooling}");
    }
    assert!(manifest.contains("[lints.rust]\nunsafe_code = \"forbid\""), "the operator forbids unsafe code");
}
