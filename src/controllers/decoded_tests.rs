//! Tests of `decoded.rs` (test code only: its `unwrap`s and panics are assertions).

use super::*;
use crate::api::Installation;

#[test]
fn an_object_that_does_not_decode_is_skipped_and_the_others_go_on() {
    let good: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation",
        "metadata": {"name": "good", "namespace": "apps"},
        "spec": {"appRef": {"name": "insights"}, "site": "acme.atlassian.net", "products": ["jira"]}}))
    .unwrap();
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation",
        "metadata": {"name": "bad", "namespace": "apps"},
        "spec": {"appRef": {"name": "insights"}, "site": 42, "products": ["jira"]}}))
    .unwrap();
    let error = decode::<Installation>(&bad).unwrap_err().to_string();
    assert!(error.starts_with("spec.site: invalid type"), "names the field: {error}");
    let keep = |o: DynamicObject| decode::<Installation>(&o).ok();
    assert!(typed(watcher::Event::InitApply(bad.clone()), keep).is_none(), "skipped");
    assert!(typed(watcher::Event::Apply(bad), keep).is_none(), "skipped");
    let Some(watcher::Event::InitApply(i)) = typed(watcher::Event::InitApply(good), keep) else {
        // Test-only: the assertion's panic.
        panic!("the good one is kept")
    };
    assert_eq!(i.spec.site, "acme.atlassian.net");
    assert!(matches!(typed::<Installation>(watcher::Event::InitDone, keep), Some(watcher::Event::InitDone)));
}
