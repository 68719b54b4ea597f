//! Version ordering and per-major summaries of what an environment has deployed.

use std::collections::BTreeMap;
use std::fmt;

use crate::api::AppVersion;

/// A `major.minor` app version. Ordered by major, then minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub fn of(v: &AppVersion) -> Self {
        Version { major: v.major, minor: v.minor }
    }

    /// The major and minor of a dotted version string: the platform's (`2.1.0` is 2.1; `3` is 3.0)
    /// and the operator's own `major.minor` records alike. The one version parser of the crate.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = match parts.next() {
            Some(m) => m.parse().ok()?,
            None => 0,
        };
        Some(Version { major, minor })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The newest deployed version, if any.
pub fn latest(versions: &[AppVersion]) -> Option<&AppVersion> {
    versions.iter().max_by_key(|v| Version::of(v))
}

/// The newest minor of one major, if that major is deployed.
pub fn latest_of_major(versions: &[AppVersion], major: u32) -> Option<&AppVersion> {
    versions.iter().filter(|v| v.major == major).max_by_key(|v| v.minor)
}

/// The versions grouped by major, each group sorted by minor; majors in ascending order.
pub fn by_major(versions: &[AppVersion]) -> BTreeMap<u32, Vec<&AppVersion>> {
    let mut groups: BTreeMap<u32, Vec<&AppVersion>> = BTreeMap::new();
    for v in versions {
        groups.entry(v.major).or_default().push(v);
    }
    for group in groups.values_mut() {
        group.sort_by_key(|v| v.minor);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_major_then_minor_numerically() {
        let vs = vec![AppVersion::test(1, 10), AppVersion::test(2, 0), AppVersion::test(1, 9), AppVersion::test(10, 1)];
        assert_eq!(Version::of(latest(&vs).unwrap()).to_string(), "10.1");
        assert_eq!(latest_of_major(&vs, 1).unwrap().minor, 10);
        assert!(latest_of_major(&vs, 3).is_none());
        assert!(Version { major: 1, minor: 10 } > Version { major: 1, minor: 9 });
        assert!(Version { major: 2, minor: 0 } > Version { major: 1, minor: 99 });
    }

    #[test]
    fn versions_parse_from_dotted_strings() {
        let parse = |t: &str| Version::parse(t).map(|v| (v.major, v.minor));
        assert_eq!(parse("2.13"), Some((2, 13)));
        assert_eq!(parse("2.1.0"), Some((2, 1)));
        assert_eq!(parse(" 10.22.4 "), Some((10, 22)));
        assert_eq!(parse("2"), Some((2, 0)), "a missing minor is 0");
        assert_eq!(parse("x.1"), None);
        assert_eq!(parse("2.x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(Version::parse(&Version { major: 4, minor: 7 }.to_string()), Some(Version { major: 4, minor: 7 }));
    }

    #[test]
    fn no_versions_has_no_latest() {
        assert!(latest(&[]).is_none());
        assert!(by_major(&[]).is_empty());
    }

    #[test]
    fn groups_are_sorted() {
        let vs = vec![AppVersion::test(2, 1), AppVersion::test(1, 3), AppVersion::test(2, 0)];
        let groups = by_major(&vs);
        assert_eq!(groups.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(groups[&2].iter().map(|v| v.minor).collect::<Vec<_>>(), vec![0, 1]);
    }
}
