//! forgeops' development tooling. The binaries are `forgeops-dev` (the quick start and the
//! platform emulator server, `src/main.rs`) and `forgeops-bench` (the scale benchmark, [`bench`]).

pub mod bench;
