//! forgeops: a Kubernetes operator that distributes Atlassian Forge apps declaratively.
//!
//! - [`api`]: the four custom resources (the user's contract).
//! - [`rules`]: pure decision logic, unit-tested without a server.
//! - [`controllers`]: observe, decide (via `rules`), act, report status.
//! - [`operator`]: the process around the controllers.
//! - [`localcluster`]: a real etcd + kube-apiserver on loopback for tests and the quick start.

pub mod api;
pub mod bench;
pub mod controllers;
pub mod emulator;
pub mod health;
pub mod leases;
pub mod localcluster;
pub mod manifests;
pub mod operator;
pub mod platform;
pub mod rules;
pub mod telemetry;
