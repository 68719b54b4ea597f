//! forgeops' development tooling. The binaries are `forgeops-dev` (the quick start and the
//! platform emulator server, `src/main.rs`), `forgeops-bench` (the scale benchmark, [`bench`]) and
//! `forgeops-emulator-bench` (the emulator's own: batch seeding and request latency at scale,
//! `src/bin/forgeops-emulator-bench.rs`).

pub mod bench;
