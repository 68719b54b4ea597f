//! The App metrics API (`ecosystem { forgeMetrics(appId) { invocationsValue, errorsValue,
//! successRateValue } }`): how often an app's functions ran and failed, per version and per
//! installation context, over an interval.
//!
//! The platform measures real traffic; the emulator has none, so it answers from a traffic model
//! that the admin API sets (`PUT /admin/traffic`): for an app, a version (`M.m.p`, or `M` for every
//! version of the major) and optionally one site, so many invocations a minute with such a success
//! rate. An installation is counted on the version whose code runs there (its compute version)
//! from the moment it moved to it, so the sites a rollout moved are measured on the new version
//! only after they moved. Without a rule an installation has no traffic.
//!
//! The limits of the documented API ("Export app metrics"), all enforced: the calling account must
//! own the app; at most five calls a minute per user (each metric field asked is a call: the
//! platform's limit is on calls to the API, and the emulator counts the stricter way); at most 15
//! minutes of data per call; nothing older than 14 days; the `X-ExperimentalApi` header.
//!
//! Group keys: the platform's documentation does not show the labels of a grouped series; the
//! emulator names them as the `groupBy` dimension (`VERSION`, `CONTEXT_ARI`) and a version by its
//! `M.m.p` string.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::model::{Installation, Millis, Model, PlatformError, error_type as et};

/// Calls a user may make in a minute.
pub const CALLS_PER_MINUTE: usize = 5;
/// The longest interval one call may ask for.
pub const MAX_INTERVAL_MS: Millis = 15 * 60_000;
/// How far back data is kept.
pub const MAX_AGE_MS: Millis = 14 * 24 * 3_600_000;
/// The header the API requires (any value).
pub const EXPERIMENTAL_HEADER: &str = "x-experimentalapi";

/// One traffic rule of the model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRule {
    pub app_id: String,
    /// `M.m.p`, or `M`: every version of that major.
    pub version: String,
    /// A host name or cloud id; none: every site (a site's own rule comes first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub invocations_per_minute: u32,
    /// Between 0 and 1.
    pub success_rate: f64,
}

impl TrafficRule {
    /// Why the rule cannot be used, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        if !(0.0..=1.0).contains(&self.success_rate) {
            return Some(format!("successRate {} is not between 0 and 1", self.success_rate));
        }
        if self.version.is_empty() || self.version.split('.').any(|p| p.parse::<u32>().is_err()) {
            return Some(format!("version {:?} is not M or M.m.p", self.version));
        }
        None
    }

    fn matches_version(&self, version: &str) -> bool {
        version == self.version || version.split('.').next() == Some(self.version.as_str())
    }
}

/// The traffic model: rules, the last one set for the same app, version and site replacing the
/// one before.
#[derive(Default, Debug, Clone)]
pub struct Traffic {
    rules: Vec<TrafficRule>,
}

impl Traffic {
    pub fn set(&mut self, rule: TrafficRule) {
        self.rules.retain(|r| !(r.app_id == rule.app_id && r.version == rule.version && r.site == rule.site));
        self.rules.push(rule);
    }

    pub fn rules(&self) -> &[TrafficRule] {
        &self.rules
    }

    /// Invocations a minute and success rate of `app_id`'s `version` on the site with this host
    /// name and cloud id: the site's own rule, else the rule for every site; an exact version
    /// before a major's.
    pub fn rate(&self, app_id: &str, version: &str, host: &str, cloud_id: &str) -> Option<(u32, f64)> {
        let on_site = |r: &&TrafficRule| match &r.site {
            Some(s) => s.eq_ignore_ascii_case(host) || s == cloud_id,
            None => false,
        };
        let candidates = || self.rules.iter().filter(|r| r.app_id == app_id && r.matches_version(version));
        let exact = |r: &&TrafficRule| r.version == version;
        candidates()
            .filter(on_site)
            .find(exact)
            .or_else(|| candidates().find(on_site))
            .or_else(|| candidates().filter(|r| r.site.is_none()).find(exact))
            .or_else(|| candidates().find(|r| r.site.is_none()))
            .map(|r| (r.invocations_per_minute, r.success_rate))
    }
}

impl Model {
    /// Sets one rule of the traffic model (refused: a rule out of range, or for no app).
    pub fn set_traffic(&mut self, rule: TrafficRule) -> Result<(), PlatformError> {
        if let Some(why) = rule.invalid() {
            return Err(PlatformError::new(et::BAD_REQUEST, 400, why));
        }
        if self.app(&rule.app_id).is_none() {
            return Err(PlatformError::new(et::APP_NOT_FOUND, 404, format!("no app {}", rule.app_id)));
        }
        self.traffic.set(rule);
        Ok(())
    }
}

/// Calls to the API per user, for the limit of [`CALLS_PER_MINUTE`].
#[derive(Default, Debug, Clone)]
pub struct CallLog {
    calls: HashMap<String, VecDeque<Millis>>,
}

impl CallLog {
    /// Counts one call by `account` at `now`, or refuses it: then the milliseconds until a call
    /// would be admitted.
    pub fn admit(&mut self, account: &str, now: Millis) -> Result<(), Millis> {
        let calls = self.calls.entry(account.to_string()).or_default();
        while calls.front().is_some_and(|t| *t <= now - 60_000) {
            calls.pop_front();
        }
        if calls.len() >= CALLS_PER_MINUTE {
            return Err(calls.front().map_or(0, |t| t + 60_000 - now).max(1));
        }
        calls.push_back(now);
        Ok(())
    }
}

/// Why an interval is refused, if it is.
pub fn interval_refused(start: Millis, end: Millis, now: Millis) -> Option<String> {
    if end <= start {
        return Some("interval.end must be after interval.start".into());
    }
    if end - start > MAX_INTERVAL_MS {
        return Some(format!("the interval is {} s; at most 15 minutes of data per call", (end - start) / 1000));
    }
    if start < now - MAX_AGE_MS {
        return Some("interval.start is more than 14 days ago".into());
    }
    None
}

/// The measure of one (version, installation context) over an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    pub version: String,
    pub context: String,
    pub invocations: u64,
    pub errors: u64,
}

/// What the traffic model makes of `app_id`'s installations (in environment `environment_id`, or
/// every one) over `[start, end)`, as of `now`: one entry per (compute version, context) with
/// traffic.
pub fn measure(
    model: &Model,
    traffic: &Traffic,
    app_id: &str,
    environment_id: Option<&str>,
    start: Millis,
    end: Millis,
    now: Millis,
) -> Vec<Measured> {
    let Some(app) = model.app(app_id) else { return Vec::new() };
    let env_key = environment_id.map(|id| app.environments.iter().find(|e| e.id == id).map(|e| e.key.as_str()));
    let mut out: Vec<Measured> = Vec::new();
    for i in model.installations.of_app(app_id) {
        if let Some(key) = env_key
            && Some(i.environment_key.as_str()) != key
        {
            continue;
        }
        let Some(m) = measure_one(model, traffic, app_id, i, start, end, now) else { continue };
        match out.iter_mut().find(|o| o.version == m.version && o.context == m.context) {
            Some(o) => {
                o.invocations += m.invocations;
                o.errors += m.errors;
            }
            None => out.push(m),
        }
    }
    out
}

fn measure_one(
    model: &Model,
    traffic: &Traffic,
    app_id: &str,
    i: &Installation,
    start: Millis,
    end: Millis,
    now: Millis,
) -> Option<Measured> {
    let (_, _, version) = model.version(i.compute_version())?;
    let site = model.sites.by_cloud_id(&i.cloud_id)?;
    let (per_minute, success) = traffic.rate(app_id, &version.version, &site.host_name, &site.cloud_id)?;
    let from = start.max(i.code_since());
    let to = end.min(now);
    if to <= from || per_minute == 0 {
        return None;
    }
    let invocations = (u64::from(per_minute) * u64::try_from(to - from).ok()?) / 60_000;
    if invocations == 0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let errors = ((invocations as f64) * (1.0 - success)).round() as u64;
    Some(Measured { version: version.version.clone(), context: i.context.clone(), invocations, errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(version: &str, site: Option<&str>, per_minute: u32, success: f64) -> TrafficRule {
        TrafficRule {
            app_id: "a".into(),
            version: version.into(),
            site: site.map(str::to_string),
            invocations_per_minute: per_minute,
            success_rate: success,
        }
    }

    #[test]
    fn a_sites_own_rule_comes_before_the_rule_for_every_site_and_an_exact_version_before_its_major() {
        let mut t = Traffic::default();
        t.set(rule("2", None, 10, 1.0));
        t.set(rule("2.1.0", None, 20, 0.9));
        t.set(rule("2", Some("bad.atlassian.net"), 30, 0.5));
        assert_eq!(t.rate("a", "2.1.0", "x.atlassian.net", "c1"), Some((20, 0.9)));
        assert_eq!(t.rate("a", "2.0.0", "x.atlassian.net", "c1"), Some((10, 1.0)));
        assert_eq!(t.rate("a", "2.1.0", "BAD.atlassian.net", "c2"), Some((30, 0.5)));
        assert_eq!(t.rate("a", "1.0.0", "x.atlassian.net", "c1"), None);
        assert_eq!(t.rate("b", "2.1.0", "x.atlassian.net", "c1"), None);
        // The same rule again replaces it.
        t.set(rule("2", None, 5, 1.0));
        assert_eq!(t.rate("a", "2.0.0", "x.atlassian.net", "c1"), Some((5, 1.0)));
        assert_eq!(t.rules().len(), 3);
    }

    #[test]
    fn a_rule_with_a_rate_out_of_range_or_a_bad_version_is_refused() {
        assert!(rule("2", None, 1, 1.5).invalid().is_some());
        assert!(rule("two", None, 1, 1.0).invalid().is_some());
        assert!(rule("2.1.0", None, 1, 0.0).invalid().is_none());
    }

    #[test]
    fn five_calls_a_minute_per_user_then_refused_until_the_oldest_is_a_minute_old() {
        let mut log = CallLog::default();
        for t in 0..5 {
            assert_eq!(log.admit("u", t * 1000), Ok(()));
        }
        assert_eq!(log.admit("u", 10_000), Err(50_000));
        assert_eq!(log.admit("other", 10_000), Ok(()));
        assert_eq!(log.admit("u", 60_000), Ok(()));
        assert_eq!(log.admit("u", 60_500), Err(500));
    }

    #[test]
    fn intervals_longer_than_15_minutes_older_than_14_days_or_empty_are_refused() {
        let now = 100 * 24 * 3_600_000;
        assert!(interval_refused(now - MAX_INTERVAL_MS, now, now).is_none());
        assert!(interval_refused(now - MAX_INTERVAL_MS - 1, now, now).is_some());
        assert!(interval_refused(now, now, now).is_some());
        assert!(interval_refused(now - MAX_AGE_MS - 1, now - MAX_AGE_MS + 1000, now).is_some());
    }
}
