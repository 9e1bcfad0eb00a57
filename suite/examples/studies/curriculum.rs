//! The class curriculum of the forgetting and diffing studies: classes
//! 0–4, then 5, 6, 7, 8 and 9 added one at a time, then 9 removed, then 9
//! added again. Each stage trains on the training images of its classes
//! only; the head keeps all ten logits throughout, so a class not yet (or
//! no longer) trained is pushed down by the softmax like any wrong class.

use std::error::Error;
use std::path::Path;

use super::data::Images;
use super::train::{self, Checkpoint, Config, Stage};

/// The stages' classes, in order.
pub fn classes() -> Vec<Vec<usize>> {
    let upto = |last: usize| (0..=last).collect::<Vec<_>>();
    let mut out: Vec<Vec<usize>> = (4..=9).map(upto).collect();
    out.push(upto(8));
    out.push(upto(9));
    out
}

/// Short names of the stages, as the figures show them.
pub fn names() -> Vec<&'static str> {
    vec!["0-4", "+5", "+6", "+7", "+8", "+9", "-9", "+9 again"]
}

/// The curriculum, `steps` optimiser steps per stage.
pub fn stages(steps: usize) -> Vec<Stage> {
    classes()
        .into_iter()
        .zip(names())
        .map(|(classes, name)| Stage {
            name: name.to_owned(),
            classes,
            steps,
            poison: None,
        })
        .collect()
}

/// Trains the curriculum model (`steps` per stage) from the seeded initial
/// weights and writes its checkpoints to `dir`: step 0, then
/// `per_stage` evenly spaced in every stage, the last at its end. The
/// forgetting and diffing studies both call this with the same settings
/// and so train the same model.
pub fn run(
    cfg: &Config,
    train_images: &Images,
    steps: usize,
    per_stage: usize,
    dir: &Path,
    show: bool,
) -> Result<(Vec<Stage>, Vec<Checkpoint>), Box<dyn Error>> {
    let stages = stages(steps);
    let schedule = train::schedule(&stages, per_stage, true);
    let saved = train::run_with_checkpoints(
        cfg,
        train_images,
        &stages,
        &schedule,
        dir,
        "curriculum",
        show,
    )?;
    Ok((stages, saved))
}

/// The index of the stage that adds class 9 for the first time, the one
/// that removes it and the one that adds it again.
pub const ADD_9: usize = 5;
/// See [`ADD_9`].
pub const REMOVE_9: usize = 6;
/// See [`ADD_9`].
pub const READD_9: usize = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curriculum_adds_one_class_at_a_time_then_removes_and_readds_nine() {
        let c = classes();
        assert_eq!(c.len(), names().len());
        assert_eq!(c[0], vec![0, 1, 2, 3, 4]);
        for k in 1..=ADD_9 {
            assert_eq!(c[k][..c[k - 1].len()], c[k - 1][..]);
            assert_eq!(c[k].len(), c[k - 1].len() + 1);
        }
        assert_eq!(c[ADD_9].last(), Some(&9));
        assert!(!c[REMOVE_9].contains(&9) && c[REMOVE_9].len() == 9);
        assert_eq!(c[READD_9], c[ADD_9]);
    }
}
