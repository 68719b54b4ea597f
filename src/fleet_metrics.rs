//! Gauges of the objects forgeops manages, computed at each scrape from what the watch caches
//! already hold (no request is sent for a scrape, and no series outlives its object):
//!
//! - `forgeops_objects{kind, ready}`: objects per kind by their `Ready` status (`True`, `False`,
//!   `Unknown`; an object without the condition yet counts as `Unknown`), every combination present
//!   so a dashboard shows zeros;
//! - `forgeops_objects_stalled{kind}`: objects whose `Stalled` condition is `True`;
//! - `forgeops_installation_not_ready_seconds{namespace, name, site}`: for each Installation that
//!   is not `Ready`, for how long (since `Ready` last changed, or since it was created); Ready ones
//!   have no series, so the family stays small when all is well;
//! - per BulkUpgrade: `forgeops_bulk_upgrade_state{namespace, name, state}` (1 for its state),
//!   `forgeops_bulk_upgrade_installations{namespace, name, outcome}` (total, upgraded, failed,
//!   pending, unprocessed: the status' figures), `forgeops_bulk_upgrade_step` and
//!   `forgeops_bulk_upgrade_steps` (the step in progress and how many there are), and
//!   `forgeops_bulk_upgrade_stalled` (0 or 1).
//!
//! Only the leader reports them: a standby has no caches. [`gauges`] is the pure part.

use std::sync::{Arc, RwLock, Weak};

use crate::api::Condition;
use jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::api::{BulkUpgrade, BulkUpgradeState, DistributionPolicy, ForgeApp, Installation, TRUE};
use crate::controllers::caches::Caches;
use crate::rules::conditions::SummaryTypes;

/// One sample: its labels and value.
pub type Sample = (Vec<(&'static str, String)>, f64);

/// A gauge family as it is exposed (without the `forgeops_` prefix the registry adds).
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

/// What the gauges are computed from.
#[derive(Default)]
pub struct Objects {
    pub apps: Vec<Arc<ForgeApp>>,
    pub policies: Vec<Arc<DistributionPolicy>>,
    pub installations: Vec<Arc<Installation>>,
    pub bulk_upgrades: Vec<Arc<BulkUpgrade>>,
}

/// The `Ready` and `Stalled` conditions of one object.
struct Summary<'a> {
    ready: Option<&'a Condition>,
    stalled: bool,
}

fn summary<'a, T: SummaryTypes>(conditions: &'a [Condition]) -> Summary<'a> {
    let find = |t: T| conditions.iter().find(|c| c.type_ == t.as_str());
    Summary { ready: find(T::READY), stalled: find(T::STALLED).is_some_and(|c| c.status == TRUE) }
}

const READY_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

fn ready_status(s: &Summary) -> &'static str {
    match s.ready.map(|c| c.status.as_str()) {
        Some("True") => "True",
        Some("False") => "False",
        _ => "Unknown",
    }
}

/// The text of a bulk upgrade state, as the status shows it.
fn state_name(state: BulkUpgradeState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The gauges for `objects` at `now`.
pub fn gauges(objects: &Objects, now: Timestamp) -> Vec<GaugeFamily> {
    let app = objects.apps.iter().map(|o| summary::<crate::rules::forge_app::Type>(conditions(&o.status)));
    let policy = objects
        .policies
        .iter()
        .map(|o| summary::<crate::rules::distribution::Type>(o.status.as_ref().map_or(&[][..], |s| &s.conditions)));
    let installation = objects
        .installations
        .iter()
        .map(|o| summary::<crate::rules::installation::Type>(o.status.as_ref().map_or(&[][..], |s| &s.conditions)));
    let bulk = objects
        .bulk_upgrades
        .iter()
        .map(|o| summary::<crate::rules::bulk_upgrade::Type>(o.status.as_ref().map_or(&[][..], |s| &s.conditions)));
    let kinds: [(&str, Vec<Summary>); 4] = [
        ("ForgeApp", app.collect()),
        ("DistributionPolicy", policy.collect()),
        ("Installation", installation.collect()),
        ("BulkUpgrade", bulk.collect()),
    ];

    let mut by_ready = Vec::new();
    let mut stalled = Vec::new();
    for (kind, summaries) in &kinds {
        for status in READY_STATUSES {
            let n = summaries.iter().filter(|s| ready_status(s) == status).count();
            by_ready.push((vec![("kind", kind.to_string()), ("ready", status.to_string())], n as f64));
        }
        let n = summaries.iter().filter(|s| s.stalled).count();
        stalled.push((vec![("kind", kind.to_string())], n as f64));
    }

    let mut not_ready = Vec::new();
    for (i, s) in objects.installations.iter().zip(&kinds[2].1) {
        if ready_status(s) == "True" {
            continue;
        }
        let since = s.ready.map(|c| c.last_transition_time.0).or(i.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let seconds = since.map_or(0.0, |t| now.duration_since(t).as_secs_f64().max(0.0));
        not_ready.push((object_labels(&i.metadata, vec![("site", i.spec.site.clone())]), seconds));
    }

    let (mut state, mut installations, mut step, mut steps, mut bulk_stalled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (b, s) in objects.bulk_upgrades.iter().zip(&kinds[3].1) {
        let status = b.status.clone().unwrap_or_default();
        let current = state_name(status.state.unwrap_or_default());
        state.push((object_labels(&b.metadata, vec![("state", current)]), 1.0));
        for (outcome, n) in [
            ("total", status.total),
            ("upgraded", status.upgraded),
            ("failed", status.failed),
            ("pending", status.pending),
            ("unprocessed", status.unprocessed),
        ] {
            installations.push((object_labels(&b.metadata, vec![("outcome", outcome.to_string())]), f64::from(n)));
        }
        step.push((object_labels(&b.metadata, vec![]), f64::from(status.step.unwrap_or(0))));
        steps.push((object_labels(&b.metadata, vec![]), b.spec.steps.len().max(1) as f64));
        bulk_stalled.push((object_labels(&b.metadata, vec![]), if s.stalled { 1.0 } else { 0.0 }));
    }

    vec![
        GaugeFamily { name: "objects", help: "forgeops objects by kind and Ready status", samples: by_ready },
        GaugeFamily {
            name: "objects_stalled",
            help: "forgeops objects whose Stalled condition is True (a change is needed), by kind",
            samples: stalled,
        },
        GaugeFamily {
            name: "installation_not_ready_seconds",
            help: "For each Installation that is not Ready: seconds since Ready last changed (or since creation)",
            samples: not_ready,
        },
        GaugeFamily { name: "bulk_upgrade_state", help: "1 for each BulkUpgrade's state", samples: state },
        GaugeFamily {
            name: "bulk_upgrade_installations",
            help: "A BulkUpgrade's installations by outcome (total, upgraded, failed, pending, unprocessed)",
            samples: installations,
        },
        GaugeFamily {
            name: "bulk_upgrade_step",
            help: "A BulkUpgrade's step in progress, or the last one run (from 1; 0 before the first)",
            samples: step,
        },
        GaugeFamily { name: "bulk_upgrade_steps", help: "How many steps a BulkUpgrade has", samples: steps },
        GaugeFamily {
            name: "bulk_upgrade_stalled",
            help: "1 when a BulkUpgrade's Stalled condition is True",
            samples: bulk_stalled,
        },
    ]
}

fn conditions(status: &Option<crate::api::ForgeAppStatus>) -> &[Condition] {
    status.as_ref().map_or(&[][..], |s| &s.conditions)
}

fn object_labels(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    mut extra: Vec<(&'static str, String)>,
) -> Vec<(&'static str, String)> {
    let mut labels = vec![
        ("namespace", meta.namespace.clone().unwrap_or_default()),
        ("name", meta.name.clone().unwrap_or_default()),
    ];
    labels.append(&mut extra);
    labels
}

/// Where the collector reads the objects: the running controllers' caches, once they exist.
#[derive(Debug, Default)]
pub struct FleetSource {
    caches: RwLock<Option<Weak<Caches>>>,
    bulk_upgrades: RwLock<Option<Store<BulkUpgrade>>>,
}

impl FleetSource {
    /// The shared caches (held weakly: when the controllers stop, their gauges go).
    pub fn watch(&self, caches: &Arc<Caches>) {
        *self.caches.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::downgrade(caches));
    }

    /// The BulkUpgrade controller's store.
    pub fn watch_bulk_upgrades(&self, store: Store<BulkUpgrade>) {
        *self.bulk_upgrades.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
    }

    /// Forgets the caches (the controllers stopped).
    pub fn clear(&self) {
        *self.caches.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        *self.bulk_upgrades.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn objects(&self) -> Option<Objects> {
        let caches = self.caches.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()?.upgrade()?;
        let bulk_upgrades = self
            .bulk_upgrades
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(Store::state)
            .unwrap_or_default();
        Some(Objects {
            apps: caches.apps.state(),
            policies: caches.policies.state(),
            installations: caches.installations.state(),
            bulk_upgrades,
        })
    }
}

/// Encodes [`gauges`] of the [`FleetSource`] at each scrape.
#[derive(Debug)]
pub struct FleetCollector(pub Arc<FleetSource>);

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(objects) = self.0.objects() else { return Ok(()) };
        encode(&gauges(&objects, Timestamp::now()), &mut encoder)
    }
}

fn encode(families: &[GaugeFamily], encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    for family in families {
        let mut metric = encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
        for (labels, value) in &family.samples {
            ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BulkUpgradeStatus, FALSE, InstallationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("a valid second")
    }

    fn condition(type_: &str, status: &str, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            last_transition_time: Time(at(since)),
            observed_generation: Some(1),
        }
    }

    fn installation(name: &str, ready: Option<(&str, i64)>, created: i64) -> Arc<Installation> {
        let mut i = Installation::test(name);
        i.metadata.namespace = Some("team".into());
        i.metadata.creation_timestamp = Some(Time(at(created)));
        if let Some((status, since)) = ready {
            i.status = Some(InstallationStatus {
                conditions: vec![condition("Ready", status, since)],
                ..InstallationStatus::default()
            });
        }
        Arc::new(i)
    }

    fn family<'a>(families: &'a [GaugeFamily], name: &str) -> &'a [Sample] {
        &families.iter().find(|f| f.name == name).expect("the family is there").samples
    }

    fn value(samples: &[Sample], labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(l, _)| labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, v)| *v)
    }

    #[derive(Debug)]
    struct Fixed(Vec<GaugeFamily>);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            super::encode(&self.0, &mut encoder)
        }
    }

    #[test]
    fn the_gauges_are_exposed_with_the_registrys_prefix_and_their_labels() {
        let objects =
            Objects { installations: vec![installation("failing", Some((FALSE, 400)), 50)], ..Objects::default() };
        let mut registry = prometheus_client::registry::Registry::with_prefix("forgeops");
        registry.register_collector(Box::new(Fixed(gauges(&objects, at(1000)))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding into a String");
        assert!(text.contains("# TYPE forgeops_objects gauge\n"), "{text}");
        assert!(text.contains("forgeops_objects{kind=\"Installation\",ready=\"False\"} 1"), "{text}");
        assert!(
            text.contains(
                "forgeops_installation_not_ready_seconds{namespace=\"team\",name=\"failing\",site=\"failing.atlassian.net\"} 600"
            ),
            "{text}"
        );
    }

    #[test]
    fn objects_are_counted_by_kind_and_ready_status_with_zeros_for_the_rest() {
        let objects = Objects {
            installations: vec![
                installation("a", Some((TRUE, 100)), 50),
                installation("b", Some((FALSE, 100)), 50),
                installation("c", None, 50),
            ],
            ..Objects::default()
        };
        let g = gauges(&objects, at(1000));
        let objects = family(&g, "objects");
        assert_eq!(objects.len(), 12, "four kinds by three statuses");
        for (status, n) in [("True", 1.0), ("False", 1.0), ("Unknown", 1.0)] {
            assert_eq!(value(objects, &[("kind", "Installation"), ("ready", status)]), Some(n));
        }
        assert_eq!(value(objects, &[("kind", "BulkUpgrade"), ("ready", "True")]), Some(0.0));
        assert_eq!(value(family(&g, "objects_stalled"), &[("kind", "Installation")]), Some(0.0));
    }

    #[test]
    fn only_installations_that_are_not_ready_say_for_how_long() {
        let objects = Objects {
            installations: vec![
                installation("ready", Some((TRUE, 100)), 50),
                installation("failing", Some((FALSE, 400)), 50),
                installation("new", None, 900),
            ],
            ..Objects::default()
        };
        let g = gauges(&objects, at(1000));
        let not_ready = family(&g, "installation_not_ready_seconds");
        assert_eq!(not_ready.len(), 2);
        assert_eq!(value(not_ready, &[("name", "failing"), ("namespace", "team")]), Some(600.0));
        assert_eq!(value(not_ready, &[("name", "new")]), Some(100.0), "since creation, without a Ready condition");
        assert_eq!(value(not_ready, &[("name", "ready")]), None);
    }

    #[test]
    fn a_bulk_upgrade_reports_its_state_progress_step_and_stall() {
        let mut b = BulkUpgrade::test("to-v3").in_namespace("team").in_steps(3);
        b.status = Some(BulkUpgradeStatus {
            state: Some(BulkUpgradeState::Failed),
            step: Some(2),
            total: 100,
            upgraded: 40,
            failed: 7,
            conditions: vec![condition("Stalled", TRUE, 10), condition("Ready", FALSE, 10)],
            ..BulkUpgradeStatus::default()
        });
        let g = gauges(&Objects { bulk_upgrades: vec![Arc::new(b)], ..Objects::default() }, at(1000));
        assert_eq!(
            family(&g, "bulk_upgrade_state"),
            &[(vec![("namespace", "team".into()), ("name", "to-v3".into()), ("state", "Failed".into())], 1.0)]
        );
        let installations = family(&g, "bulk_upgrade_installations");
        assert_eq!(value(installations, &[("outcome", "total")]), Some(100.0));
        assert_eq!(value(installations, &[("outcome", "upgraded")]), Some(40.0));
        assert_eq!(value(installations, &[("outcome", "failed")]), Some(7.0));
        assert_eq!(value(family(&g, "bulk_upgrade_step"), &[("name", "to-v3")]), Some(2.0));
        assert_eq!(value(family(&g, "bulk_upgrade_steps"), &[("name", "to-v3")]), Some(3.0));
        assert_eq!(value(family(&g, "bulk_upgrade_stalled"), &[("name", "to-v3")]), Some(1.0));
        assert_eq!(value(family(&g, "objects_stalled"), &[("kind", "BulkUpgrade")]), Some(1.0));
        assert_eq!(value(family(&g, "objects"), &[("kind", "BulkUpgrade"), ("ready", "False")]), Some(1.0));
    }

    #[test]
    fn a_bulk_upgrade_without_status_is_pending_at_step_zero_of_one() {
        let b = BulkUpgrade::test("fresh").in_namespace("team");
        let g = gauges(&Objects { bulk_upgrades: vec![Arc::new(b)], ..Objects::default() }, at(0));
        assert_eq!(value(family(&g, "bulk_upgrade_state"), &[("state", "Pending")]), Some(1.0));
        assert_eq!(value(family(&g, "bulk_upgrade_step"), &[]), Some(0.0));
        assert_eq!(value(family(&g, "bulk_upgrade_steps"), &[]), Some(1.0));
    }
}
