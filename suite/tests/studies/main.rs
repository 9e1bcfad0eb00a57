//! The digits studies end to end (`suite/examples/{backdoor,forgetting,
//! diffing}/`, docs/studies.md): a short run of each, a few hundred steps,
//! checked for files that exist and agree with one another, with the
//! library, with a dense oracle and with the command line run on the
//! checkpoints as a user would; and the unit tests of the code the studies
//! share (`suite/examples/studies/`: the gradient check among them), once.
//!
//! The examples' own sources are compiled in here by `#[path]`, so that
//! these tests run exactly the code `cargo run --example …` runs; the
//! examples are `test = false` (suite/Cargo.toml) so that nothing runs
//! twice.

// Each study uses part of the shared code, and these tests part of each study.
#[allow(dead_code)]
#[path = "../../examples/studies/mod.rs"]
mod studies;

#[allow(dead_code)]
#[path = "../../examples/backdoor/study.rs"]
mod backdoor;

#[allow(dead_code)]
#[path = "../../examples/forgetting/study.rs"]
mod forgetting;

#[allow(dead_code)]
#[path = "../../examples/diffing/study.rs"]
mod diffing;

mod cli;

mod backdoor_run;
mod diffing_run;
mod forgetting_run;
