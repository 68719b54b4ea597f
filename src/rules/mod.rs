//! Pure decision logic: no client, no I/O. Controllers observe, call these, act and report.

pub mod analysis;
pub mod bulk_upgrade;
pub mod conditions;
pub mod distribution;
pub mod forge_app;
pub mod installation;
pub mod notify;
pub mod permissions;
pub mod versions;
pub mod windows;

#[cfg(test)]
pub(crate) mod fixtures;
