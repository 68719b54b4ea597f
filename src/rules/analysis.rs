//! Health analysis of a bulk-upgrade step: after a step's rollout completes and its bake time
//! passed, the cohort the step moved (measured on the target version) is compared with the
//! baseline (the sites still on the source version) over the same window, from the App metrics
//! API's counts per version and installation context.
//!
//! Pure: [`figures`] sorts the platform's values into the two cohorts, [`judge`] gives the verdict
//! with a message that says what was measured and which threshold decided. Too little traffic is
//! `Inconclusive`, which never passes.

use std::collections::BTreeSet;

use super::versions::Version;
use crate::platform::MetricsValue;

/// What the moved cohort must show.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// The least success rate, in percent, of the cohort on the target version.
    pub min_success_percent: Option<f64>,
    /// The most the cohort's success rate may be below the baseline's, in percentage points.
    pub max_drop_percent: Option<f64>,
    /// Fewer invocations of the cohort than this: `Inconclusive` (at least 1).
    pub min_invocations: u64,
}

/// Counts of one cohort over the analysis window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Sites (installation contexts) with any invocation.
    pub sites: u32,
    pub invocations: u64,
    pub errors: u64,
}

impl Figures {
    /// The share of invocations that succeeded, in percent; none without invocations.
    pub fn success_percent(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.invocations > 0)
            .then(|| 100.0 * (self.invocations - self.errors.min(self.invocations)) as f64 / self.invocations as f64)
    }
}

/// A step's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    /// Too few invocations to tell: the upgrade pauses (a person looks), it never passes.
    Inconclusive,
}

/// The moved cohort (the contexts in `moved`, on `target`) and the baseline (every other context,
/// on `source`) from the platform's invocation and error counts. Versions match by major and
/// minor (the platform's `2.1.0` is the `2.1` of the operator's records).
pub fn figures(
    invocations: &[MetricsValue],
    errors: &[MetricsValue],
    moved: &BTreeSet<String>,
    source: Version,
    target: Version,
) -> (Figures, Figures) {
    let cohort_of = |v: &MetricsValue| {
        let version = Version::parse(&v.version)?;
        let in_moved = moved.contains(&v.context);
        match (in_moved, version) {
            (true, x) if x == target => Some(true),
            (false, x) if x == source => Some(false),
            _ => None,
        }
    };
    let (mut cohort, mut baseline) = (Figures::default(), Figures::default());
    let (mut cohort_sites, mut baseline_sites) = (BTreeSet::new(), BTreeSet::new());
    for v in invocations {
        match cohort_of(v) {
            Some(true) => {
                cohort.invocations += v.count;
                if v.count > 0 {
                    cohort_sites.insert(v.context.as_str());
                }
            }
            Some(false) => {
                baseline.invocations += v.count;
                if v.count > 0 {
                    baseline_sites.insert(v.context.as_str());
                }
            }
            None => {}
        }
    }
    for v in errors {
        match cohort_of(v) {
            Some(true) => cohort.errors += v.count,
            Some(false) => baseline.errors += v.count,
            None => {}
        }
    }
    cohort.sites = u32::try_from(cohort_sites.len()).unwrap_or(u32::MAX);
    baseline.sites = u32::try_from(baseline_sites.len()).unwrap_or(u32::MAX);
    (cohort, baseline)
}

/// The verdict on a step, and a message that says why (the figures and the threshold).
pub fn judge(t: &Thresholds, cohort: &Figures, baseline: &Figures) -> (Verdict, String) {
    let min = t.min_invocations.max(1);
    let Some(rate) = cohort.success_percent().filter(|_| cohort.invocations >= min) else {
        return (
            Verdict::Inconclusive,
            format!(
                "the moved cohort made {} invocations on {} sites in the window, fewer than minInvocations {min}: \
                 too little traffic to judge; approve to go on, or lower minInvocations or lengthen the window",
                cohort.invocations, cohort.sites
            ),
        );
    };
    if let Some(floor) = t.min_success_percent
        && rate < floor
    {
        return (
            Verdict::Failed,
            format!(
                "the moved cohort's success rate is {rate:.2}% ({} of {} invocations failed), below minSuccessRate {floor}%",
                cohort.errors, cohort.invocations
            ),
        );
    }
    match (t.max_drop_percent, baseline.success_percent()) {
        (Some(drop), Some(base)) if rate < base - drop => (
            Verdict::Failed,
            format!(
                "the moved cohort's success rate is {rate:.2}%, {:.2} points below the baseline's {base:.2}% (sites still \
                 on the source version), more than maxDropFromBaseline {drop}",
                base - rate
            ),
        ),
        (Some(_), None) => (
            Verdict::Inconclusive,
            format!(
                "the moved cohort's success rate is {rate:.2}%, but the sites still on the source version made no \
                 invocations in the window: no baseline to compare with"
            ),
        ),
        _ => (
            Verdict::Passed,
            format!(
                "the moved cohort's success rate is {rate:.2}% over {} invocations on {} sites{}",
                cohort.invocations,
                cohort.sites,
                baseline.success_percent().map(|b| format!(" (baseline {b:.2}%)")).unwrap_or_default()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(version: &str, context: &str, count: u64) -> MetricsValue {
        MetricsValue { version: version.into(), context: context.into(), count }
    }

    fn thresholds() -> Thresholds {
        Thresholds { min_success_percent: Some(99.0), max_drop_percent: Some(1.0), min_invocations: 100 }
    }

    fn figures_of(invocations: u64, errors: u64) -> Figures {
        Figures { sites: 3, invocations, errors }
    }

    const V1: Version = Version { major: 1, minor: 2 };
    const V2: Version = Version { major: 2, minor: 0 };

    #[test]
    fn the_moved_sites_on_the_target_are_the_cohort_and_the_others_on_the_source_the_baseline() {
        let moved: BTreeSet<String> = ["ctx-a".to_string(), "ctx-b".to_string()].into();
        let invocations = [
            value("2.0.0", "ctx-a", 100),
            value("2.0.0", "ctx-b", 50),
            // Before it moved, a moved site ran the source: neither cohort.
            value("1.2.0", "ctx-a", 70),
            value("1.2.0", "ctx-c", 300),
            value("1.2.0", "ctx-d", 0),
            // Another version (an older minor, or a site moved by its admin): not compared.
            value("1.1.0", "ctx-e", 40),
            value("2.0.0", "ctx-f", 40),
        ];
        let errors = [value("2.0.0", "ctx-a", 5), value("1.2.0", "ctx-c", 3), value("1.2.0", "ctx-a", 9)];
        let (cohort, baseline) = figures(&invocations, &errors, &moved, V1, V2);
        assert_eq!(cohort, Figures { sites: 2, invocations: 150, errors: 5 });
        assert_eq!(baseline, Figures { sites: 1, invocations: 300, errors: 3 });
    }

    #[test]
    fn a_healthy_cohort_passes_and_says_its_figures() {
        let (verdict, message) = judge(&thresholds(), &figures_of(1000, 2), &figures_of(5000, 10));
        assert_eq!(verdict, Verdict::Passed);
        assert!(message.contains("99.80%") && message.contains("1000 invocations"), "{message}");
        assert!(message.contains("baseline 99.80%"), "{message}");
    }

    #[test]
    fn a_cohort_below_the_absolute_floor_fails() {
        let (verdict, message) = judge(&thresholds(), &figures_of(1000, 20), &figures_of(5000, 10));
        assert_eq!(verdict, Verdict::Failed);
        assert!(message.contains("98.00%") && message.contains("minSuccessRate 99%"), "{message}");
    }

    #[test]
    fn a_cohort_further_below_the_baseline_than_allowed_fails_even_above_the_floor() {
        let t = Thresholds { min_success_percent: Some(90.0), ..thresholds() };
        let (verdict, message) = judge(&t, &figures_of(1000, 50), &figures_of(5000, 0));
        assert_eq!(verdict, Verdict::Failed);
        assert!(message.contains("5.00 points below the baseline's 100.00%"), "{message}");
        // Within the allowed drop: passes.
        let (verdict, _) = judge(&t, &figures_of(1000, 5), &figures_of(5000, 0));
        assert_eq!(verdict, Verdict::Passed);
    }

    #[test]
    fn too_few_invocations_is_inconclusive_never_passed() {
        let (verdict, message) = judge(&thresholds(), &figures_of(99, 0), &figures_of(5000, 0));
        assert_eq!(verdict, Verdict::Inconclusive);
        assert!(message.contains("fewer than minInvocations 100"), "{message}");
        let none = Thresholds { min_invocations: 0, ..thresholds() };
        assert_eq!(judge(&none, &Figures::default(), &figures_of(5000, 0)).0, Verdict::Inconclusive);
    }

    #[test]
    fn a_relative_threshold_without_baseline_traffic_is_inconclusive() {
        let (verdict, message) = judge(&thresholds(), &figures_of(1000, 0), &Figures::default());
        assert_eq!(verdict, Verdict::Inconclusive);
        assert!(message.contains("no baseline"), "{message}");
        // Only an absolute floor: no baseline needed.
        let t = Thresholds { max_drop_percent: None, ..thresholds() };
        assert_eq!(judge(&t, &figures_of(1000, 0), &Figures::default()).0, Verdict::Passed);
    }
}
