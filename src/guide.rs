//! The guide: how the crate computes what it computes, and how to use it.
//!
//! Each page is one of the repository's `docs/*.md` files, shipped as
//! rustdoc so that it can be read where the API is (docs.rs). The exact
//! definitions they build on are in [`spec`](crate::spec).
//!
//! | page | what |
//! |---|---|
//! | [`recursion`] | the Gram recursion, its step and its cost |
//! | [`attention`] | sequences and bilinear attention: the exact Gram step |
//! | [`symmetry`] | why the tensor is symmetrised, and what is invariant |
//! | [`stability`] | per-layer normalisation, log scales, and their limits |
//! | [`metrics`] | which metric to use, how they relate, what each misses |
//! | [`format`](mod@format) | model files: safetensors with a small JSON layout |
//! | [`cli`] | the `tensor-similarity` command (feature `cli`) |
//! | [`performance`] | measured speed against GEMM, and how it grows |
//! | [`security`] | hostile input: what is refused, what is checked before it is allocated |
//! | [`architecture`] | the modules, which way they depend, the life of one comparison |

#[doc = include_str!("../docs/recursion.md")]
pub mod recursion {}

#[doc = include_str!("../docs/attention.md")]
pub mod attention {}

#[doc = include_str!("../docs/symmetry.md")]
pub mod symmetry {}

#[doc = include_str!("../docs/stability.md")]
pub mod stability {}

#[doc = include_str!("../docs/metrics.md")]
pub mod metrics {}

#[doc = include_str!("../docs/format.md")]
pub mod format {}

#[doc = include_str!("../docs/cli.md")]
pub mod cli {}

#[doc = include_str!("../docs/performance.md")]
pub mod performance {}

#[doc = include_str!("../docs/security.md")]
pub mod security {}

#[doc = include_str!("../docs/architecture.md")]
pub mod architecture {}
