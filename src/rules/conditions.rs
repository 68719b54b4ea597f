//! Kubernetes conditions with the API conventions' semantics: `lastTransitionTime` moves only when
//! the status changes, and every condition carries the generation it describes.

use crate::api::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{FALSE, TRUE};

/// A typed name (a condition type or a reason): its text is what the API shows.
pub trait Name: Copy + Eq + std::fmt::Debug + 'static {
    fn as_str(self) -> &'static str;
}

/// The condition types every kind reports for kstatus: `Ready`, `Reconciling`, `Stalled`.
pub trait SummaryTypes: Name {
    const READY: Self;
    const RECONCILING: Self;
    const STALLED: Self;
}

/// The reason a `Reconciling` or `Stalled` condition that is `False` gives.
pub trait SummaryReasons: Name {
    const AS_EXPECTED: Self;
}

/// Makes a kind's condition-type enum (with `Ready`, `Reconciling`, `Stalled`) and reason enum
/// (with `AsExpected`) what [`summary`] derives kstatus conditions with.
#[macro_export]
macro_rules! summarized {
    ($types:ident, $reasons:ident) => {
        impl $crate::rules::conditions::SummaryTypes for $types {
            const READY: $types = $types::Ready;
            const RECONCILING: $types = $types::Reconciling;
            const STALLED: $types = $types::Stalled;
        }

        impl $crate::rules::conditions::SummaryReasons for $reasons {
            const AS_EXPECTED: $reasons = $reasons::AsExpected;
        }
    };
}

/// A condition as a rule decides it, before timestamps and generations are attached: typed until
/// [`merge`] makes it a Kubernetes condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided<T, R> {
    pub type_: T,
    pub status: bool,
    pub reason: R,
    pub message: String,
}

impl<T, R> Decided<T, R> {
    pub fn new(type_: T, status: bool, reason: R, message: impl Into<String>) -> Self {
        Decided { type_, status, reason, message: message.into() }
    }
}

/// Declares an enum of names (condition types, reasons) whose text is the variant's name, so
/// conditions are built from typed values rather than string literals. `FromStr` reads a name
/// back (from a condition of a previous status) into the enum.
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

        impl $crate::rules::conditions::Name for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| {
                    format!("{text} is not a {}", stringify!($name))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Where an object stands, as every kind's decision ends: the one input of [`summary`]. Each
/// carries the reason and the message the summary conditions show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Nothing left to do: `Ready` True.
    Done(R, String),
    /// Work is under way: `Reconciling` True.
    InProgress(R, String),
    /// A failure is retried: `Reconciling` True.
    Retrying(R, String),
    /// Only a change (of the spec, a related object or a Secret) lets it go on: `Stalled` True.
    Stalled(R, String),
    /// Held on purpose, or waiting for something the user is expected to do (a paused upgrade,
    /// an app whose installations are being deleted): neither `Reconciling` nor `Stalled`.
    Waiting(R, String),
}

impl<R: Copy> Outcome<R> {
    pub fn reason(&self) -> R {
        match self {
            Outcome::Done(r, _)
            | Outcome::InProgress(r, _)
            | Outcome::Retrying(r, _)
            | Outcome::Stalled(r, _)
            | Outcome::Waiting(r, _) => *r,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Done(_, m)
            | Outcome::InProgress(_, m)
            | Outcome::Retrying(_, m)
            | Outcome::Stalled(_, m)
            | Outcome::Waiting(_, m) => m,
        }
    }

    pub fn is_stalled(&self) -> bool {
        matches!(self, Outcome::Stalled(..))
    }
}

/// The kstatus summary of every kind, `[Ready, Reconciling, Stalled]`, from its [`Outcome`]
/// (Flux's `summarize`): `Ready` is True when done, and otherwise False with the outcome's reason
/// and message; `Reconciling` is True while in progress or retrying; `Stalled` is True when
/// stalled. `serving` is for a kind whose object serves as it is while it works toward the rest
/// of its spec (an installed Installation, upgrading or waiting for consent): `Ready` is then True
/// with that reason and message whatever the outcome.
pub fn summary<T: SummaryTypes, R: SummaryReasons>(
    outcome: &Outcome<R>,
    serving: Option<&(R, String)>,
) -> [Decided<T, R>; 3] {
    let (reason, message) = (outcome.reason(), outcome.message());
    let ready = match (outcome, serving) {
        (Outcome::Done(..), _) => Decided::new(T::READY, true, reason, message),
        (_, Some((r, m))) => Decided::new(T::READY, true, *r, m.as_str()),
        _ => Decided::new(T::READY, false, reason, message),
    };
    let on = |type_: T, on: bool| {
        if on { Decided::new(type_, true, reason, message) } else { Decided::new(type_, false, R::AS_EXPECTED, "") }
    };
    let reconciling = on(T::RECONCILING, matches!(outcome, Outcome::InProgress(..) | Outcome::Retrying(..)));
    let stalled = on(T::STALLED, outcome.is_stalled());
    [ready, reconciling, stalled]
}

fn status_str(status: bool) -> &'static str {
    if status { TRUE } else { FALSE }
}

/// Builds the condition list for a status from what the rules decided, keeping each condition's
/// `lastTransitionTime` from `previous` when its status did not change. The one place typed
/// conditions become Kubernetes conditions.
pub fn merge<T: Name, R: Name>(
    previous: &[Condition],
    decided: &[Decided<T, R>],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    decided
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_.as_str() && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.as_str().into(),
                status: status.into(),
                reason: d.reason.as_str().into(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Finds a condition by type.
pub fn find(conditions: &[Condition], type_: impl Name) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether a condition of this type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: impl Name) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// A condition of a previous status, read back into typed values once: its status, and its reason
/// if it is one of `R` (a status written by another version may hold another).
pub fn read<R: std::str::FromStr>(conditions: &[Condition], type_: impl Name) -> Option<(bool, Option<R>, &str)> {
    find(conditions, type_).map(|c| (c.status == TRUE, c.reason.parse().ok(), c.message.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::named! {
        pub enum T { Ready, Reconciling, Stalled, Other }
    }
    crate::named! {
        pub enum R { Ok, A, B, Busy, AsExpected }
    }
    impl SummaryTypes for T {
        const READY: T = T::Ready;
        const RECONCILING: T = T::Reconciling;
        const STALLED: T = T::Stalled;
    }
    impl SummaryReasons for R {
        const AS_EXPECTED: R = R::AsExpected;
    }

    fn summarized(outcome: Outcome<R>, serving: Option<(R, String)>) -> Vec<(T, bool, R, String)> {
        summary::<T, R>(&outcome, serving.as_ref())
            .into_iter()
            .map(|d| (d.type_, d.status, d.reason, d.message))
            .collect()
    }

    #[test]
    fn done_is_ready_and_nothing_else() {
        assert_eq!(
            summarized(Outcome::Done(R::Ok, "fine".into()), None),
            [
                (T::Ready, true, R::Ok, "fine".into()),
                (T::Reconciling, false, R::AsExpected, String::new()),
                (T::Stalled, false, R::AsExpected, String::new())
            ]
        );
    }

    #[test]
    fn in_progress_and_retrying_are_reconciling_and_not_ready() {
        for outcome in [Outcome::InProgress(R::Busy, "working".into()), Outcome::Retrying(R::Busy, "working".into())] {
            let s = summarized(outcome, None);
            assert_eq!(s[0], (T::Ready, false, R::Busy, "working".into()));
            assert_eq!(s[1], (T::Reconciling, true, R::Busy, "working".into()));
            assert_eq!(s[2], (T::Stalled, false, R::AsExpected, String::new()));
        }
    }

    #[test]
    fn stalled_is_stalled_and_not_ready() {
        let s = summarized(Outcome::Stalled(R::A, "fix a".into()), None);
        assert_eq!(s[0], (T::Ready, false, R::A, "fix a".into()));
        assert_eq!(s[1], (T::Reconciling, false, R::AsExpected, String::new()));
        assert_eq!(s[2], (T::Stalled, true, R::A, "fix a".into()));
    }

    #[test]
    fn waiting_is_neither_reconciling_nor_stalled_nor_ready() {
        let s = summarized(Outcome::Waiting(R::B, "paused".into()), None);
        assert_eq!(s[0], (T::Ready, false, R::B, "paused".into()));
        assert!(!s[1].1 && !s[2].1);
    }

    #[test]
    fn an_object_that_serves_stays_ready_while_it_works_or_is_stalled() {
        let serving = Some((R::Ok, "serving".to_string()));
        let s = summarized(Outcome::Stalled(R::A, "fix a".into()), serving.clone());
        assert_eq!(s[0], (T::Ready, true, R::Ok, "serving".into()));
        assert_eq!(s[2], (T::Stalled, true, R::A, "fix a".into()));
        let s = summarized(Outcome::InProgress(R::Busy, "upgrading".into()), serving);
        assert_eq!((s[0].1, s[1].1), (true, true));
    }

    #[test]
    fn names_read_back_from_their_text() {
        assert_eq!("Busy".parse::<R>(), Ok(R::Busy));
        assert!("Nope".parse::<R>().is_err());
        let out = merge(&[], &[Decided::new(T::Other, false, R::B, "b")], None, &at(1));
        assert_eq!(read::<R>(&out, T::Other), Some((false, Some(R::B), "b")));
        assert_eq!(read::<R>(&out, T::Ready), None);
    }

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn new_condition_transitions_now() {
        let out = merge(&[], &[Decided::new(T::Ready, true, R::Ok, "fine")], Some(3), &at(100));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(out[0].last_transition_time, at(100));
    }

    #[test]
    fn unchanged_status_keeps_transition_time_even_if_reason_changes() {
        let first = merge(&[], &[Decided::new(T::Ready, false, R::A, "a")], Some(1), &at(100));
        let second = merge(&first, &[Decided::new(T::Ready, false, R::B, "b")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "B");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge(&[], &[Decided::new(T::Ready, false, R::A, "a")], Some(1), &at(100));
        let second = merge(&first, &[Decided::new(T::Ready, true, R::Ok, "ok")], Some(1), &at(200));
        assert_eq!(second[0].last_transition_time, at(200));
        assert!(is_true(&second, T::Ready));
        assert!(!is_true(&second, T::Other));
    }
}
