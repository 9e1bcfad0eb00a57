//! What the three digits studies share (`backdoor`, `forgetting`,
//! `diffing`; docs/studies.md): the data, the classifier and its training
//! in stages, the class curriculum, the similarity matrices and their
//! statistics, the output files and the figures.
//!
//! Each study's `main.rs` includes this directory with
//! `#[path = "../studies/mod.rs"]`. The modules' unit tests (the gradient
//! check among them) and a short run of each study are the suite's
//! `studies` test (`suite/tests/studies/`), which includes the same
//! sources.

#[cfg(test)]
pub mod checks;
pub mod curriculum;
pub mod data;
pub mod files;
pub mod metrics;
pub mod model;
#[cfg(test)]
pub mod oracle;
pub mod plot;
pub mod progress;
pub mod train;

use std::error::Error;

use tensor_similarity::{Model, io};

/// The models of the checkpoint files, read back with the library as a
/// user would read them.
pub fn load_all(checkpoints: &[train::Checkpoint]) -> Result<Vec<Model<f64>>, Box<dyn Error>> {
    Ok(checkpoints
        .iter()
        .map(|c| io::load(&c.path))
        .collect::<Result<_, _>>()?)
}

/// The figure's bands of `stages`.
pub fn bands(stages: &[train::Stage]) -> Vec<plot::Band> {
    let b = train::bounds(stages);
    stages
        .iter()
        .enumerate()
        .map(|(k, s)| plot::Band {
            name: s.name.clone(),
            start: b[k],
            end: b[k + 1],
        })
        .collect()
}
