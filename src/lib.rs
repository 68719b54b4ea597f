//! forgeops: a Kubernetes operator that distributes Atlassian Forge apps declaratively.
//!
//! - [`api`]: the four custom resources (the user's contract).
//! - [`rules`]: pure decision logic, unit-tested without a server.
//! - [`controllers`]: observe, decide (via `rules`), act, report status.
//! - [`operator`]: the process around the controllers.
//! - [`cli`]: the `forgeops run` options.
//! - [`check`]: `forgeops check`, the preflight of the cluster and the platform.
//! - [`kubectl_forge`]: the `kubectl forge` plugin.
//! - [`fleet_metrics`]: gauges of the managed objects, read from the caches at each scrape.
//! - [`clock`]: the wall clock the bulk-upgrade rules read, settable in tests.
//!
//! The platform emulator, the local control plane and the development tooling are crates of their
//! own under `crates/`, so none of them is part of the operator's build.

pub mod api;
pub mod check;
pub mod cli;
pub mod clock;
pub mod controllers;
pub mod fleet_metrics;
pub mod health;
pub mod kubectl_forge;
pub mod leases;
pub mod operator;
pub mod ownership;
pub mod platform;
pub mod rules;
pub mod telemetry;
