//! The conditions of every kind: Kubernetes' `Condition`, the same on the wire and in the CRD
//! schema, held compactly. A condition's type, status and reason are one of a few dozen names, so
//! each is a shared [`Name`] (one pointer, no allocation of its own) instead of a `String` each:
//! an Installation has five conditions, and there are thousands of Installations in the cache.
//!
//! Written here: k8s-openapi's `Condition` has `String` fields, and the interning crates looked at
//! (internment 0.8) intern sized values only, not `str`. The interner is a bounded set; a name
//! beyond its bound is kept on its own (correct, only not shared).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many distinct names are shared at most (the operator writes a few dozen).
const SHARED_NAMES: usize = 1024;
/// Longer strings are never shared (names are short CamelCase words).
const SHARED_LEN: usize = 128;

static NAMES: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);

/// A condition's type, status or reason: a string shared by every condition that has it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    pub fn new(text: &str) -> Name {
        if text.len() > SHARED_LEN {
            return Name(Arc::from(text));
        }
        let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let names = names.get_or_insert_with(HashSet::new);
        if let Some(shared) = names.get(text) {
            return Name(shared.clone());
        }
        let name: Arc<str> = Arc::from(text);
        if names.len() < SHARED_NAMES {
            names.insert(name.clone());
        }
        Name(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::new(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name::new(&text)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Name;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name::new(v))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Condition contains details for one aspect of the current state of this API Resource
/// (Kubernetes' `meta/v1` Condition, whose schema it has).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// lastTransitionTime is the last time the condition transitioned from one status to another.
    pub last_transition_time: Time,
    /// message is a human readable message indicating details about the transition. This may be an empty string.
    pub message: String,
    /// observedGeneration represents the .metadata.generation that the condition was set based upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// reason contains a programmatic identifier indicating the reason for the condition's last transition.
    pub reason: Name,
    /// status of the condition, one of True, False, Unknown.
    pub status: Name,
    /// type of condition in CamelCase or in foo.example.com/CamelCase.
    #[serde(rename = "type")]
    pub type_: Name,
}

/// The schema is Kubernetes' own, so the CRDs are as they were with k8s-openapi's type.
impl schemars::JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <K8sCondition as schemars::JsonSchema>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <K8sCondition as schemars::JsonSchema>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_condition_reads_and_writes_as_kubernetes_condition_and_shares_its_names() -> Result<(), serde_json::Error> {
        let wire = json!({"lastTransitionTime": "2026-01-01T00:00:00Z", "message": "", "observedGeneration": 3,
            "reason": "Installed", "status": "True", "type": "Ready"});
        let ours: Condition = serde_json::from_value(wire.clone())?;
        let theirs: K8sCondition = serde_json::from_value(wire.clone())?;
        assert_eq!(serde_json::to_value(&ours)?, wire);
        assert_eq!(serde_json::to_value(&ours)?, serde_json::to_value(&theirs)?);
        let again: Condition = serde_json::from_value(wire)?;
        assert!(Arc::ptr_eq(&ours.reason.0, &again.reason.0), "one allocation for every Installed");
        assert!(ours.type_ == "Ready" && "True" == ours.status && ours.reason.as_str() == "Installed");
        let long = "x".repeat(SHARED_LEN + 1);
        assert_eq!(Name::new(&long).as_str(), long, "a long name is kept, unshared");
        let bare = json!({"lastTransitionTime": "2026-01-01T00:00:00Z", "message": "m", "reason": "R",
            "status": "False", "type": "T"});
        assert_eq!(serde_json::to_value(serde_json::from_value::<Condition>(bare.clone())?)?, bare);
        Ok(())
    }
}
