//! What moving from one version to another newly asks of a site admin, from the whole permission
//! set the platform returns: scopes, each egress permission's address, type, category and whether
//! it is in scope of end-user data, remotes, content security policies, and licensing. Anything here
//! needs the admin's consent (the "Major version upgrades" section of the Forge docs), so an
//! Installation waits for `approvedMajor` and a bulk-upgrade rollout cannot move it. Removing a
//! permission asks for nothing. The SQL module is reported, not a consent question.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::{AppVersion, EgressPermission};

/// One thing a version newly asks for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Scope(String),
    Egress(String),
    /// The same address, re-categorised (for example to `ANALYTICS`).
    EgressCategory {
        address: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// The same address, another egress type (for example client side instead of back end).
    EgressType {
        address: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// The address becomes in scope of end-user data.
    EgressInScopeOfEndUserData(String),
    Remote(String),
    SecurityPolicy(String),
    Licensing,
}

impl Change {
    /// Whether the change is about egress.
    pub fn is_egress(&self) -> bool {
        matches!(
            self,
            Change::Egress(_)
                | Change::EgressCategory { .. }
                | Change::EgressType { .. }
                | Change::EgressInScopeOfEndUserData(_)
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |c: &Option<String>| c.clone().unwrap_or_else(|| "none".into());
        match self {
            Change::Scope(s) => write!(f, "scope {s}"),
            Change::Egress(a) => write!(f, "egress {a}"),
            Change::EgressCategory { address, from, to } => {
                write!(f, "egress {address} re-categorised from {} to {}", or_none(from), or_none(to))
            }
            Change::EgressType { address, from, to } => {
                write!(f, "egress {address} changes type from {} to {}", or_none(from), or_none(to))
            }
            Change::EgressInScopeOfEndUserData(a) => write!(f, "egress {a} in scope of end-user data"),
            Change::Remote(r) => write!(f, "remote {r}"),
            Change::SecurityPolicy(p) => write!(f, "content security policy {p}"),
            Change::Licensing => f.write_str("licensing (a paid app)"),
        }
    }
}

/// The egress permissions of a version by address; from the plain address list when the status
/// was written before details were recorded.
fn egress_of(v: &AppVersion) -> BTreeMap<&str, EgressPermission> {
    let mut out: BTreeMap<&str, EgressPermission> =
        v.egress.iter().map(|a| (a.as_str(), EgressPermission { address: a.clone(), ..Default::default() })).collect();
    for e in &v.egress_permissions {
        out.insert(e.address.as_str(), e.clone());
    }
    out
}

/// Everything `to` newly asks for compared with `from` (all of `to` when there is no `from`), in a
/// stable order.
pub fn difference(from: Option<&AppVersion>, to: &AppVersion) -> Vec<Change> {
    let mut out = BTreeSet::new();
    let scopes: BTreeSet<&str> = from.map(|f| f.scopes.iter().map(String::as_str).collect()).unwrap_or_default();
    out.extend(to.scopes.iter().filter(|s| !scopes.contains(s.as_str())).map(|s| Change::Scope(s.clone())));
    let had = from.map(egress_of).unwrap_or_default();
    for (address, now) in egress_of(to) {
        let Some(was) = had.get(address) else {
            out.insert(Change::Egress(address.to_string()));
            continue;
        };
        if was.category != now.category {
            out.insert(Change::EgressCategory {
                address: address.to_string(),
                from: was.category.clone(),
                to: now.category.clone(),
            });
        }
        if was.type_.is_some() && now.type_.is_some() && was.type_ != now.type_ {
            out.insert(Change::EgressType {
                address: address.to_string(),
                from: was.type_.clone(),
                to: now.type_.clone(),
            });
        }
        if now.in_scope_eud && !was.in_scope_eud {
            out.insert(Change::EgressInScopeOfEndUserData(address.to_string()));
        }
    }
    let remotes: BTreeSet<&str> = from.map(|f| f.remotes.iter().map(String::as_str).collect()).unwrap_or_default();
    out.extend(to.remotes.iter().filter(|r| !remotes.contains(r.as_str())).map(|r| Change::Remote(r.clone())));
    let policies: BTreeSet<&str> =
        from.map(|f| f.security_policies.iter().map(String::as_str).collect()).unwrap_or_default();
    out.extend(
        to.security_policies
            .iter()
            .filter(|p| !policies.contains(p.as_str()))
            .map(|p| Change::SecurityPolicy(p.clone())),
    );
    if to.licensing && !from.is_some_and(|f| f.licensing) {
        out.insert(Change::Licensing);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::to_string).collect()
    }

    #[test]
    fn new_scopes_egress_remotes_policies_and_licensing_are_told() {
        let from = AppVersion::test(1, 0).scopes(["read"]).egress(["a.example"]);
        let to = AppVersion::test(2, 0)
            .scopes(["read", "write"])
            .egress(["a.example", "b.example"])
            .remotes(["crm https://crm.example"])
            .security_policies(["scripts https://cdn.example"])
            .licensed();
        assert_eq!(
            texts(&difference(Some(&from), &to)),
            [
                "scope write",
                "egress b.example",
                "remote crm https://crm.example",
                "content security policy scripts https://cdn.example",
                "licensing (a paid app)"
            ]
        );
        assert!(difference(Some(&to), &from).is_empty(), "removing asks for nothing");
        assert_eq!(difference(None, &from).len(), 2, "a first install asks for everything");
    }

    #[test]
    fn re_categorising_an_egress_or_putting_it_in_scope_of_end_user_data_needs_consent() {
        let from = AppVersion::test(1, 0).egress(["a.example"]);
        let analytics = AppVersion::test(2, 0).egress(["a.example"]).egress_category("a.example", "ANALYTICS");
        assert_eq!(
            texts(&difference(Some(&from), &analytics)),
            ["egress a.example re-categorised from none to ANALYTICS"]
        );
        assert!(difference(Some(&from), &analytics)[0].is_egress());
        let eud = AppVersion::test(2, 0).egress(["a.example"]).egress_in_scope_of_end_user_data("a.example");
        assert_eq!(texts(&difference(Some(&from), &eud)), ["egress a.example in scope of end-user data"]);
        assert!(difference(Some(&eud), &from).is_empty(), "leaving the scope of end-user data asks for nothing");
    }
}
