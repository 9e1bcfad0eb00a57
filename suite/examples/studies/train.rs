//! Training in stages: each stage draws mini-batches from the training
//! images of its classes, optionally stamps the trigger on a fixed share of
//! every batch and relabels those images, and continues the same Adam run.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tensor_similarity::io;

use super::data::{self, Images};
use super::model::{Adam, AdamConfig, Params};
use super::progress;

/// Poisoning: the trigger stamped on `count` images of every batch, each
/// relabelled `target`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Poison {
    /// Images stamped per batch.
    pub count: usize,
    /// The label they are given.
    pub target: usize,
}

/// One stage of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// A short name for figures and the summary.
    pub name: String,
    /// The classes whose training images the stage draws from.
    pub classes: Vec<usize>,
    /// Optimiser steps.
    pub steps: usize,
    /// Poisoning, if any.
    pub poison: Option<Poison>,
}

/// Everything else that defines a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Width `h` of the bilinear layer.
    pub hidden: usize,
    /// Images per mini-batch.
    pub batch: usize,
    /// Adam's settings.
    pub adam: AdamConfig,
    /// Standard deviation of the initial weights times `√fan_in`.
    pub init_gain: f64,
    /// Seed of the initial weights and of the batches.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hidden: 64,
            batch: 50,
            adam: AdamConfig::default(),
            init_gain: 1.0,
            seed: 0,
        }
    }
}

/// The steps at which each stage starts and ends: stage `k` takes the
/// steps `bounds[k] + 1 ..= bounds[k + 1]`.
pub fn bounds(stages: &[Stage]) -> Vec<usize> {
    let mut out = vec![0];
    for s in stages {
        out.push(out[out.len() - 1] + s.steps);
    }
    out
}

/// The checkpoint steps: `per_stage` evenly spaced steps in each stage, the
/// last at the stage's end, and step 0 (the initial weights) first when
/// `initial`.
pub fn schedule(stages: &[Stage], per_stage: usize, initial: bool) -> Vec<usize> {
    let b = bounds(stages);
    let mut steps = if initial { vec![0] } else { Vec::new() };
    for (k, s) in stages.iter().enumerate() {
        let count = per_stage.min(s.steps);
        for i in 1..=count {
            steps.push(b[k] + (i * s.steps).div_ceil(count));
        }
    }
    steps.dedup();
    steps
}

/// The stage that step `step` belongs to (step 0, the initial weights, to
/// the first).
pub fn stage_of(stages: &[Stage], step: usize) -> usize {
    let b = bounds(stages);
    (0..stages.len())
        .find(|&k| step <= b[k + 1])
        .unwrap_or(stages.len().saturating_sub(1))
}

/// Mini-batches drawn without replacement from a pool of training images:
/// the pool is shuffled, read in order, and shuffled again when fewer
/// than a batch remain.
struct Batches {
    pool: Vec<usize>,
    next: usize,
}

impl Batches {
    fn new(pool: Vec<usize>, rng: &mut StdRng) -> Self {
        let mut b = Self {
            pool,
            next: usize::MAX,
        };
        b.reshuffle_if_short(usize::MAX, rng);
        b
    }

    fn reshuffle_if_short(&mut self, size: usize, rng: &mut StdRng) {
        if self.next.saturating_add(size) > self.pool.len() {
            self.pool.shuffle(rng);
            self.next = 0;
        }
    }

    fn draw(&mut self, size: usize, rng: &mut StdRng) -> &[usize] {
        self.reshuffle_if_short(size, rng);
        let start = self.next;
        self.next += size;
        &self.pool[start..self.next]
    }
}

/// Runs the stages in order from the seeded initial weights, one Adam run
/// throughout. `on_step(step, stage, params)` is called before the first
/// step (`step = 0`, stage 0) and after every step; an error from it
/// stops the run.
pub fn train<E: From<String>>(
    cfg: &Config,
    train: &Images,
    stages: &[Stage],
    mut on_step: impl FnMut(usize, usize, &Params) -> Result<(), E>,
) -> Result<Params, E> {
    let mut params = Params::init(
        data::PIXELS,
        cfg.hidden,
        data::CLASSES,
        cfg.init_gain,
        cfg.seed,
    );
    let mut adam = Adam::new(&params);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    on_step(0, 0, &params)?;
    let mut step = 0;
    for (k, stage) in stages.iter().enumerate() {
        let pool = train.of_classes(&stage.classes);
        if pool.len() < cfg.batch || cfg.batch == 0 {
            return Err(format!(
                "stage {:?}: {} training images for batches of {}",
                stage.name,
                pool.len(),
                cfg.batch
            )
            .into());
        }
        if stage.poison.is_some_and(|p| p.count > cfg.batch) {
            return Err(
                format!("stage {:?}: more poisoned images than a batch", stage.name).into(),
            );
        }
        let mut batches = Batches::new(pool, &mut rng);
        for _ in 0..stage.steps {
            let picked = batches.draw(cfg.batch, &mut rng).to_vec();
            let mut batch = train.select(&picked);
            // The batch is a random draw, so its first images are as random
            // as any others.
            if let Some(p) = stage.poison {
                for i in 0..p.count {
                    data::stamp(batch.x.column_mut(i).as_mut_slice());
                    batch.y[i] = p.target;
                }
            }
            let (_, grad) = params.loss_and_gradient(&batch.x, &batch.y);
            adam.step(&cfg.adam, &mut params, &grad);
            step += 1;
            on_step(step, k, &params)?;
        }
    }
    Ok(params)
}

/// A saved checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Optimiser steps taken.
    pub step: usize,
    /// The stage it was taken in.
    pub stage: usize,
    /// The weights.
    pub params: Params,
    /// Where they were written.
    pub path: PathBuf,
}

/// The file of the checkpoint at `step` under `dir`, named as the command
/// line's `matrix` reads a run: `step_N.safetensors`.
pub fn checkpoint_path(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("step_{step}.safetensors"))
}

/// Trains through `stages` and writes a checkpoint at each of `steps`
/// (from [`schedule`]) to `dir/step_N.safetensors` with
/// `io::save(…, Layout::BiLinearProjection)`; `label` names the progress bar.
pub fn run_with_checkpoints(
    cfg: &Config,
    train_images: &Images,
    stages: &[Stage],
    steps: &[usize],
    dir: &Path,
    label: &'static str,
    show: bool,
) -> Result<Vec<Checkpoint>, Box<dyn Error>> {
    fs::create_dir_all(dir)?;
    let total: usize = stages.iter().map(|s| s.steps).sum();
    let bar = progress::bar(total, label, show);
    let mut saved = Vec::new();
    train(cfg, train_images, stages, |step, stage, params| {
        if steps.contains(&step) {
            let path = checkpoint_path(dir, step);
            io::save(&params.to_model()?, &path, io::Layout::BiLinearProjection)?;
            saved.push(Checkpoint {
                step,
                stage,
                params: params.clone(),
                path,
            });
            bar.set_message(format!("stage {}", stages[stage].name));
        }
        bar.set_position(step as u64);
        Ok::<(), Box<dyn Error>>(())
    })?;
    bar.finish();
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(steps: &[usize]) -> Vec<Stage> {
        steps
            .iter()
            .enumerate()
            .map(|(k, &steps)| Stage {
                name: format!("s{k}"),
                classes: vec![0, 1],
                steps,
                poison: None,
            })
            .collect()
    }

    #[test]
    fn the_schedule_ends_every_stage_and_is_increasing() {
        let s = stages(&[100, 30, 7]);
        assert_eq!(bounds(&s), vec![0, 100, 130, 137]);
        let steps = schedule(&s, 10, true);
        assert_eq!(steps[0], 0);
        for end in [100, 130, 137] {
            assert!(steps.contains(&end), "{steps:?}");
        }
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        // Ten in each stage that has ten steps; every step of the short one.
        assert_eq!(steps.len(), 1 + 10 + 10 + 7);
        assert_eq!(schedule(&s, 2, false), vec![50, 100, 115, 130, 134, 137]);
        assert_eq!(
            (stage_of(&s, 0), stage_of(&s, 100), stage_of(&s, 101)),
            (0, 0, 1)
        );
    }

    #[test]
    fn batches_cover_the_pool_before_repeating() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Batches::new((0..10).collect(), &mut rng);
        let mut seen: Vec<usize> = Vec::new();
        for _ in 0..3 {
            seen.extend(b.draw(3, &mut rng));
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            9,
            "three batches of three: nine distinct images"
        );
    }

    #[test]
    fn a_stage_without_enough_images_is_an_error() {
        let images = Images {
            x: nalgebra::DMatrix::zeros(data::PIXELS, 3),
            y: vec![0, 1, 2],
        };
        let cfg = Config {
            batch: 3,
            ..Config::default()
        };
        // Classes 0 and 1: two images, fewer than a batch.
        let err = train(&cfg, &images, &stages(&[5]), |_, _, _| Ok::<(), String>(())).err();
        assert!(err.is_some_and(|e| e.contains("2 training images")));
    }
}
