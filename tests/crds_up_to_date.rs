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
