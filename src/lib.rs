//! Exact, symmetry-invariant similarity of tensor-based neural networks.
//!
//! Linear layers, bilinear MLPs `D(Lx ∘ Rx)` and other multilinear blocks
//! compose into one multilinear map: the model's **end-to-end tensor** `T`.
//! The cosine of two such tensors compares two networks on every input at
//! once, and is invariant to the symmetries that leave the function alone
//! (hidden-unit permutation, rescaling, swapping a bilinear unit's factors,
//! an affine change of basis of a hidden stream). Forming `T` is exponential
//! in depth; the **Gram recursion** ([`recursion`]) computes its inner
//! products exactly in polynomial time.
//!
//! ```
//! use tensor_similarity::nalgebra::DMatrix;
//! use tensor_similarity::{similarity, Bilinear, Linear, Model};
//!
//! let embed = Linear::new(DMatrix::from_fn(4, 3, |i, j| (i * 3 + j) as f64 * 0.1 - 0.5), None)?;
//! let mlp = Bilinear::new(DMatrix::from_fn(5, 4, |i, j| ((i + j) % 3) as f64 - 1.0),
//!                         DMatrix::from_fn(5, 4, |i, j| ((2 * i + j) % 4) as f64 * 0.5))?;
//! let head = Linear::new(DMatrix::from_fn(2, 5, |i, j| (i + j) as f64 * 0.2), None)?;
//! let a = Model::builder().block(embed).block(mlp).block(head).build()?;
//! assert!((similarity(&a, &a)? - 1.0).abs() < 1e-12);
//! # Ok::<(), tensor_similarity::Error>(())
//! ```
//!
//! Weights are [`nalgebra`] matrices; the crate re-exports the version it
//! is built with, so `tensor_similarity::nalgebra::DMatrix` needs no second
//! dependency line.
//!
//! # Map
//!
//! | module | what |
//! |---|---|
//! | [`block`] | [`TensorBlock`] and the kinds [`Linear`], [`Bilinear`], [`CpBlock`], [`Attention`] |
//! | [`symmetry`] | [`SymmetryGroup`]: [`Full`], [`Trivial`], [`PermutationGroup`] |
//! | [`Model`] | a checked chain of blocks |
//! | [`recursion`] | [`RecursiveSimilarity`], [`TensorSimilarity`], [`cp_gram_step`], [`GramWorkspace`] |
//! | [`gaussian`] | [`GaussianSimilarity`]: `E[f_A·f_B]` under `N(μ, Σ)`, exact or Gaussian closure; [`GaussianMonteCarlo`]: its unbiased estimate with a standard error |
//! | [`baseline`] | weight cosine, empirical output cosines, linear CKA, a `N(μ, Σ)` sampler |
//! | [`matrix`] | pairwise similarity matrices, in parallel |
//! | [`io`] | safetensors model files: [`io::load`], [`io::save`] |
//! | [`spec`] | the specification: the exact definitions cited as "SPEC §n" |
//! | [`guide`] | the recursion, attention, symmetries, stability, metrics, file format, command line, performance, a grokking study |
//!
//! **Transformers** ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)): a model may read sequences of `n` positions,
//! flattened with one shared constant; position-wise blocks act at every
//! position with shared weights, [`Attention`] mixes positions, and
//! [`TensorSimilarity::with_context`] sets the context length compared.
//!
//! The exact definitions ("SPEC §n" throughout these docs) are in [`spec`];
//! [`guide`] explains the recursion, symmetries, numerical stability,
//! metrics, file format and performance.
//!
//! # Features
//!
//! * `cli` (off by default): the `tensor-similarity` binary (`compare`,
//!   `matrix`, `inspect`; see [`guide::cli`]) and its dependencies (clap,
//!   indicatif, plotters, an embedded font):
//!   `cargo install tensor-similarity --features cli`. The library itself,
//!   [`io`] and [`matrix`] included, needs none of them, so
//!   `tensor-similarity = "0.1"` brings the library only.
//!
//! # Debug builds
//!
//! The recursion is dense linear algebra; unoptimised, it is far slower
//! than in a release build. A crate that depends on this one and runs it in
//! debug builds (its tests, `cargo run`) can optimise the dependencies alone
//! in its own `Cargo.toml`, keeping its own code quick to compile:
//!
//! ```toml
//! [profile.dev.package."*"]
//! opt-level = 3
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod baseline;
pub mod block;
mod error;
pub mod gaussian;
pub mod guide;
mod heads;
pub mod io;
mod linalg;
pub mod matrix;
mod model;
mod padded;
mod paths;
pub mod recursion;
mod resources;
mod scalar;
pub mod symmetry;
mod validate;

#[doc = include_str!("../docs/SPEC.md")]
pub mod spec {}

/// The linear-algebra crate the API speaks: weights, inputs and Gram
/// matrices are its `DMatrix` and `DVector`. Re-exported so that
/// `tensor_similarity::nalgebra` is always the version this crate uses.
pub use nalgebra;

/// The JSON values a run config is read as: a config given as content
/// ([`io::ConfigSource::Content`]) is a `serde_json::Value`, and so is each
/// ignored key's value ([`io::IgnoredConfigKey`]). Re-exported so that
/// `tensor_similarity::serde_json` is always the version this crate uses.
pub use serde_json;

pub use baseline::{
    linear_cka, linear_cka_of, mean_sample_cosine, output_cosine, sample_gaussian, weight_cosine,
};
pub use block::{
    Attention, AttentionBuilder, Bilinear, BilinearBuilder, CpBlock, CpFactors, CpKind,
    Description, Linear, Mask, Parameter, Role, Setting, TensorBlock, check_block,
};
pub use error::{Error, ErrorFamily, Incomparable, LoadOption, Result, Side, Spelling};
pub use gaussian::{
    DEFAULT_EXACT_WORK, GaussianMonteCarlo, GaussianReport, GaussianSimilarity, JointMoments,
    MAX_EXACT_DEGREE, Moments, MonteCarloEstimate, MonteCarloMatrix,
};
pub use heads::{HeadMatching, HeadPathSimilarity, HeadPaths};
pub use model::{Model, ModelBuilder};
pub use padded::pad;
pub use paths::{FamilySimilarity, MAX_SPLITTING_BLOCKS, PathFamilies};
#[allow(deprecated)]
pub use recursion::gram_step;
pub use recursion::{
    GramWorkspace, RecursiveSimilarity, ScaledGram, TensorSimilarity, cosine, cp_gram_step,
};
pub use resources::{MemoryLimit, machine_memory};
pub use scalar::{LogScaled, Real};
pub use symmetry::{Full, Permutation, PermutationGroup, SymmetryGroup, Trivial};

// The README's Rust examples are compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The tensor similarity of `a` and `b` ([SPEC §2](crate::spec#2-tensor-similarity-the-default-metric)) with the default options:
/// identity input metric, all outputs. See [`TensorSimilarity`] for more.
///
/// An error if the models cannot be compared (different input or output
/// widths, depths, or block orders) or either has zero norm.
pub fn similarity<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<f64> {
    TensorSimilarity::new().similarity(a, b)
}

/// The raw tensor inner product `⟨A, B⟩` ([SPEC §2](crate::spec#2-tensor-similarity-the-default-metric)), in log scale.
pub fn inner_product<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
    TensorSimilarity::new().inner_product(a, b)
}
