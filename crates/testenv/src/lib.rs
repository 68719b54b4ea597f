//! forgeops' test environment, for its tests, its quick start and its benchmark; never part of the
//! operator.
//!
//! - [`localcluster`]: a real etcd, kube-apiserver and kube-controller-manager on loopback, built
//!   from pinned Go modules, whose processes die with their parent.
//! - [`manifests`]: YAML applied the way `kubectl apply --server-side` does.
//! - [`sys`]: signals and `atexit`, behind safe functions.

pub mod localcluster;
pub mod manifests;
pub mod sys;
