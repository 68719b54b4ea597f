//! `crds/` and `docs/reference.md` are generated from the Rust types; this fails when they drift apart.

#[test]
fn crds_directory_matches_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/forgeops.dev.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/forgeops.dev.yaml exists");
    assert!(
        committed == forgeops::api::crds_yaml(),
        "crds/ is stale: regenerate it with `cargo run --package forgeops -- crd -o crds/forgeops.dev.yaml`"
    );
}

#[test]
fn the_api_reference_matches_the_crds() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == forgeops::api::reference::markdown(),
        "docs/reference.md is stale: regenerate it with `cargo run --package forgeops -- reference -o docs/reference.md`"
    );
}

#[test]
fn the_helm_charts_crd_template_matches_the_crds() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/forgeops/templates/crds.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_forgeops"))
        .args(["crd", "--helm"])
        .output()
        .expect("running forgeops crd --helm");
    assert!(out.status.success(), "forgeops crd --helm: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "charts/forgeops/templates/crds.yaml is stale: regenerate it with `cargo run --package forgeops -- crd --helm -o charts/forgeops/templates/crds.yaml`"
    );
}
