//! `crds/` is generated from the Rust types; this fails when the two drift apart.

#[test]
fn crds_directory_matches_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/forgeops.dev.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/forgeops.dev.yaml exists");
    assert!(
        committed == forgeops::api::crds_yaml(),
        "crds/ is stale: regenerate it with `cargo run --package forgeops -- crd -o crds/forgeops.dev.yaml`"
    );
}
