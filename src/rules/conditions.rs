//! Kubernetes conditions with the API conventions' semantics: `lastTransitionTime` moves only when
//! the status changes, and every condition carries the generation it describes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{FALSE, TRUE};

/// A condition as a rule decides it, before timestamps and generations are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Decided {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Decided { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Declares an enum of names (condition types, reasons) whose text is the variant's name, so
/// conditions are built from typed values rather than string literals.
#[macro_export]
macro_rules! named {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name as it appears in a condition.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// kstatus: the object is being worked on.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the object cannot make progress without a change.
pub const STALLED: &str = "Stalled";

/// The kstatus conditions `Reconciling` and `Stalled` (each `False` unless given), with the
/// reason and message of what is under way, or of what only a change can fix.
pub fn kstatus(in_progress: Option<(&str, &str)>, stalled: Option<(&str, &str)>) -> [Decided; 2] {
    let one = |type_, given: Option<(&str, &str)>| match given {
        Some((reason, message)) => Decided::new(type_, true, reason, message),
        None => Decided::new(type_, false, "AsExpected", ""),
    };
    [one(RECONCILING, in_progress), one(STALLED, stalled)]
}

fn status_str(status: bool) -> &'static str {
    if status { TRUE } else { FALSE }
}

/// Builds the condition list for a status from what the rules decided, keeping each condition's
/// `lastTransitionTime` from `previous` when its status did not change.
pub fn merge(previous: &[Condition], decided: &[Decided], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    decided
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status: status.to_string(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of this type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn new_condition_transitions_now() {
        let out = merge(&[], &[Decided::new("Ready", true, "Ok", "fine")], Some(3), &at(100));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(out[0].last_transition_time, at(100));
    }

    #[test]
    fn unchanged_status_keeps_transition_time_even_if_reason_changes() {
        let first = merge(&[], &[Decided::new("Ready", false, "A", "a")], Some(1), &at(100));
        let second = merge(&first, &[Decided::new("Ready", false, "B", "b")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "B");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge(&[], &[Decided::new("Ready", false, "A", "a")], Some(1), &at(100));
        let second = merge(&first, &[Decided::new("Ready", true, "Ok", "ok")], Some(1), &at(200));
        assert_eq!(second[0].last_transition_time, at(200));
        assert!(is_true(&second, "Ready"));
        assert!(!is_true(&second, "Missing"));
    }
}
