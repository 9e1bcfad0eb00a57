//! The research language model's normalisations ([SPEC §8](crate::spec#8-sequence-model-files)):
//! what each `norm_type` computes at eval, where it sits, the tensors that
//! hold it, and the exact fold of the two that are constant at eval into
//! the maps around them.
//!
//! At eval a `tok0_batch` norm (with its running statistic) and a
//! `batchnorm` are one fixed affine map `N(x) = g ⊙ x + h`, so a model
//! with them is as polynomial as one without: `N` after a map `W x + b` is
//! `diag(g) W x + (g ⊙ b + h)` ([`fold_after`]), before one it is
//! `W diag(g) x + (b + W h)` ([`fold_before`]). The others divide by a
//! statistic of their input and are refused by name, unless the caller
//! asks for the model without its norms
//! ([`LoadOptions::ignore_norms`](crate::io::LoadOptions::ignore_norms)).

use core::fmt;

use nalgebra::{DMatrix, DVector};

/// A normalisation as the research code's `norm_type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormType {
    /// `x · (running_mean_energy + eps)^(−1/2)`: constant at eval.
    Tok0Batch,
    /// `BatchNorm1d` over the flattened positions: constant at eval.
    BatchNorm,
    /// `x / √(mean x² + eps) ⊙ weight`.
    RmsNorm,
    /// `(x − mean x) / √(var x + eps) ⊙ weight + bias`.
    LayerNorm,
    /// `x` divided by the largest per-position RMS of the sequence.
    MaxRmsNorm,
    /// `x_t` divided by the largest per-position RMS up to `t`.
    CausalMaxRmsNorm,
    /// `x` divided by the RMS of position 0 of its own sequence.
    Tok0,
}

impl NormType {
    /// Every type, in the research code's order.
    pub(crate) const ALL: [NormType; 7] = [
        NormType::RmsNorm,
        NormType::LayerNorm,
        NormType::MaxRmsNorm,
        NormType::CausalMaxRmsNorm,
        NormType::Tok0,
        NormType::Tok0Batch,
        NormType::BatchNorm,
    ];

    /// The config's name (`"tok0_batch"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            NormType::Tok0Batch => "tok0_batch",
            NormType::BatchNorm => "batchnorm",
            NormType::RmsNorm => "rmsnorm",
            NormType::LayerNorm => "layernorm",
            NormType::MaxRmsNorm => "maxrmsnorm",
            NormType::CausalMaxRmsNorm => "causal_maxrmsnorm",
            NormType::Tok0 => "tok0",
        }
    }

    /// The type `name` names, if any.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Why the norm is not a fixed function at eval; `None` for the two
    /// that are.
    pub(crate) fn input_dependent(self) -> Option<&'static str> {
        match self {
            NormType::Tok0Batch | NormType::BatchNorm => None,
            NormType::RmsNorm => Some("it divides each position by its own RMS"),
            NormType::LayerNorm => {
                Some("it subtracts each position's mean and divides by its own standard deviation")
            }
            NormType::MaxRmsNorm => Some("it divides by the largest RMS of the sequence"),
            NormType::CausalMaxRmsNorm => {
                Some("it divides each position by the largest RMS up to it")
            }
            NormType::Tok0 => Some("it divides by the RMS of the sequence's first position"),
        }
    }

    /// The `eps` of the research code's constructor.
    pub(crate) fn default_eps(self) -> f64 {
        match self {
            NormType::BatchNorm | NormType::LayerNorm => 1e-5,
            _ => 1e-6,
        }
    }

    /// The `norm_kwargs` the research code passes to this type's
    /// constructor (any other would fail there).
    pub(crate) fn kwargs(self) -> &'static [&'static str] {
        match self {
            NormType::Tok0Batch => &["eps", "momentum", "use_running_stats"],
            NormType::BatchNorm => &["eps", "momentum", "affine", "track_running_stats"],
            NormType::Tok0 => &["eps"],
            // Built without norm_kwargs.
            NormType::RmsNorm
            | NormType::LayerNorm
            | NormType::MaxRmsNorm
            | NormType::CausalMaxRmsNorm => &[],
        }
    }

    /// The state-dict names under `prefix` (`final_norm`) of this type's
    /// parameters and buffers, by role; `affine`: batchnorm has a weight
    /// and bias.
    pub(crate) fn tensors(self, prefix: &str, affine: bool) -> Vec<(&'static str, String)> {
        let at = |role: &'static str, name: &str| (role, format!("{prefix}.{name}"));
        match self {
            NormType::Tok0Batch => vec![
                at("energy", "running_mean_energy"),
                at("norm_counter", "num_batches_tracked"),
            ],
            NormType::BatchNorm => {
                let mut t = vec![
                    at("norm_mean", "bn.running_mean"),
                    at("norm_var", "bn.running_var"),
                    at("norm_counter", "bn.num_batches_tracked"),
                ];
                if affine {
                    t.push(at("norm_weight", "bn.weight"));
                    t.push(at("norm_bias", "bn.bias"));
                }
                t
            }
            NormType::RmsNorm => vec![at("norm_weight", "weight")],
            NormType::LayerNorm => vec![at("norm_weight", "weight"), at("norm_bias", "bias")],
            NormType::MaxRmsNorm | NormType::CausalMaxRmsNorm | NormType::Tok0 => Vec::new(),
        }
    }
}

impl fmt::Display for NormType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a normalisation sits in the research language model
/// ([SPEC §8](crate::spec#8-sequence-model-files)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NormPlace {
    /// After the embedding (`embed_norm`): the stream itself is normed.
    PostEmbed,
    /// Before layer `i` (`layer_norms.{i}`): the layer reads the normed
    /// stream, the residual carries the unnormed one.
    PreLayer(usize),
    /// Before the unembedding (`final_norm`).
    PreUnembed,
}

impl NormPlace {
    /// The research code's module name (`"layer_norms.1"`), the prefix of
    /// its state-dict names.
    pub fn module(self) -> String {
        match self {
            NormPlace::PostEmbed => "embed_norm".into(),
            NormPlace::PreLayer(i) => format!("layer_norms.{i}"),
            NormPlace::PreUnembed => "final_norm".into(),
        }
    }
}

impl fmt::Display for NormPlace {
    /// `post_embed`, `pre_layer 1`, `pre_unembed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NormPlace::PostEmbed => f.write_str("post_embed"),
            NormPlace::PreLayer(i) => write!(f, "pre_layer {i}"),
            NormPlace::PreUnembed => f.write_str("pre_unembed"),
        }
    }
}

/// A normalisation of a file's model and how it was read
/// ([`ModelFile::norms`](crate::io::ModelFile::norms)); `tensor-similarity
/// inspect` prints each.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FileNorm {
    /// The research code's `norm_type` (`"tok0_batch"`, `"batchnorm"`,
    /// `"rmsnorm"`, …).
    pub kind: &'static str,
    /// Where it sits.
    pub place: NormPlace,
    /// Its `eps` (`norm_kwargs.eps`, or the type's default).
    pub eps: f64,
    /// Folded or removed.
    pub reading: NormReading,
}

/// How a file's normalisation was read.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum NormReading {
    /// Constant at eval, `N(x) = g ⊙ x + h`, and folded exactly into the
    /// maps around it: the smallest and largest entries of `g` and of `h`
    /// (`None`: no shift).
    Folded {
        /// The range of the scale `g`.
        scale: (f64, f64),
        /// The range of the shift `h`, if there is one.
        shift: Option<(f64, f64)>,
    },
    /// Removed, as [`LoadOptions::ignore_norms`](crate::io::LoadOptions::ignore_norms)
    /// asks: the model is read without it.
    Removed,
}

impl fmt::Display for FileNorm {
    /// `tok0_batch at pre_unembed (eps 1e-6): folded, scale 0.42`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {} (eps {:e}): ", self.kind, self.place, self.eps)?;
        let range = |f: &mut fmt::Formatter<'_>, (lo, hi): (f64, f64)| {
            if lo == hi {
                write!(f, "{lo:.6}")
            } else {
                write!(f, "{lo:.6} to {hi:.6}")
            }
        };
        match &self.reading {
            NormReading::Folded { scale, shift } => {
                f.write_str("folded, scale ")?;
                range(f, *scale)?;
                if let Some(shift) = shift {
                    f.write_str(", shift ")?;
                    range(f, *shift)?;
                }
                Ok(())
            }
            NormReading::Removed => f.write_str("removed (ignore_norms): the model without it"),
        }
    }
}

/// One normalisation of a file, as its layout reads it: the type, the
/// place, the tensors that hold it (by role), its `eps`, and whether it is
/// folded or removed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NormSpec {
    pub(crate) kind: NormType,
    pub(crate) place: NormPlace,
    /// `(role, tensor)`: `energy`, `norm_mean`, `norm_var`, `norm_weight`,
    /// `norm_bias`, `norm_counter`; each present in the file.
    pub(crate) tensors: Vec<(&'static str, String)>,
    pub(crate) eps: f64,
    /// Where `eps` is the type's default (no `norm_kwargs.eps` said it).
    pub(crate) eps_assumed: bool,
    /// Read and dropped: the model without its norms.
    pub(crate) removed: bool,
}

impl NormSpec {
    /// The tensor of `role`, if the norm has one.
    pub(crate) fn tensor(&self, role: &str) -> Option<&str> {
        (self.tensors.iter())
            .find(|(r, _)| *r == role)
            .map(|(_, t)| t.as_str())
    }
}

/// A constant norm at eval, `N(x) = scale ⊙ x + shift`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Affine {
    pub(crate) scale: DVector<f64>,
    /// `None`: no shift (`tok0_batch`, or a batchnorm whose shift is 0).
    pub(crate) shift: Option<DVector<f64>>,
}

impl Affine {
    /// `tok0_batch`: `(energy + eps)^(−1/2)` on every coordinate of a
    /// stream of width `d`; `None` if `energy + eps` is not positive.
    pub(crate) fn tok0_batch(energy: f64, eps: f64, d: usize) -> Option<Self> {
        let denominator = energy + eps;
        (denominator > 0.0).then(|| Self {
            scale: DVector::from_element(d, 1.0 / denominator.sqrt()),
            shift: None,
        })
    }

    /// `batchnorm`: `weight ⊙ (x − mean)/√(var + eps) + bias`, weight 1
    /// and bias 0 without affine parameters; `Err(i)` if `var_i + eps` is
    /// not positive.
    pub(crate) fn batchnorm(
        mean: &DVector<f64>,
        var: &DVector<f64>,
        weight: Option<&DVector<f64>>,
        bias: Option<&DVector<f64>>,
        eps: f64,
    ) -> Result<Self, usize> {
        // Values are finite (the readers refuse others), so `<=` is the negation.
        if let Some(i) = var.iter().position(|&v| v + eps <= 0.0) {
            return Err(i);
        }
        let scale = DVector::from_fn(mean.len(), |i, _| {
            weight.map_or(1.0, |w| w[i]) / (var[i] + eps).sqrt()
        });
        let shift = DVector::from_fn(mean.len(), |i, _| {
            bias.map_or(0.0, |b| b[i]) - scale[i] * mean[i]
        });
        let shift = shift.iter().any(|&s| s != 0.0).then_some(shift);
        Ok(Self { scale, shift })
    }

    /// The smallest and largest entry of the scale.
    pub(crate) fn scale_range(&self) -> (f64, f64) {
        range(&self.scale)
    }

    /// The smallest and largest entry of the shift, if there is one.
    pub(crate) fn shift_range(&self) -> Option<(f64, f64)> {
        self.shift.as_ref().map(range)
    }
}

fn range(v: &DVector<f64>) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The map `x ↦ W N(x) + b` as one affine map: `(W diag(g), b + W h)`.
/// A bias appears only where there was one or the shift makes one.
pub(crate) fn fold_before(
    w: DMatrix<f64>,
    b: Option<DVector<f64>>,
    norm: &Affine,
) -> (DMatrix<f64>, Option<DVector<f64>>) {
    let moved = norm.shift.as_ref().map(|h| &w * h);
    let mut w = w;
    for (j, mut column) in w.column_iter_mut().enumerate() {
        column *= norm.scale[j];
    }
    let b = match (b, moved) {
        (Some(b), Some(m)) => Some(b + m),
        (b, m) => b.or(m),
    };
    (w, b)
}

/// The map `x ↦ N(W x + b)` as one affine map: `(diag(g) W, g ⊙ b + h)`.
pub(crate) fn fold_after(
    w: DMatrix<f64>,
    b: Option<DVector<f64>>,
    norm: &Affine,
) -> (DMatrix<f64>, Option<DVector<f64>>) {
    let mut w = w;
    for (i, mut row) in w.row_iter_mut().enumerate() {
        row *= norm.scale[i];
    }
    let b = b.map(|b| b.component_mul(&norm.scale));
    let b = match (b, &norm.shift) {
        (Some(b), Some(h)) => Some(b + h),
        (b, h) => b.or_else(|| h.clone()),
    };
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `N(x)` applied as written, coordinate by coordinate.
    fn apply(norm: &Affine, x: &DVector<f64>) -> DVector<f64> {
        DVector::from_fn(x.len(), |i, _| {
            norm.scale[i] * x[i] + norm.shift.as_ref().map_or(0.0, |h| h[i])
        })
    }

    fn affine_map(w: &DMatrix<f64>, b: &Option<DVector<f64>>, x: &DVector<f64>) -> DVector<f64> {
        let y = w * x;
        match b {
            Some(b) => y + b,
            None => y,
        }
    }

    fn norm() -> Affine {
        let mean = DVector::from_vec(vec![0.3, -1.0, 2.0]);
        let var = DVector::from_vec(vec![0.5, 2.0, 0.25]);
        let weight = DVector::from_vec(vec![1.5, -0.5, 2.0]);
        let bias = DVector::from_vec(vec![0.1, 0.2, -0.3]);
        Affine::batchnorm(&mean, &var, Some(&weight), Some(&bias), 1e-5).unwrap()
    }

    #[test]
    fn batchnorm_is_its_formula() {
        let n = norm();
        let x = DVector::from_vec(vec![1.0, 2.0, -3.0]);
        let by_formula = [
            1.5 * (1.0 - 0.3) / (0.5f64 + 1e-5).sqrt() + 0.1,
            -0.5 * (2.0 + 1.0) / (2.0f64 + 1e-5).sqrt() + 0.2,
            2.0 * (-3.0 - 2.0) / (0.25f64 + 1e-5).sqrt() - 0.3,
        ];
        for (got, want) in apply(&n, &x).iter().zip(by_formula) {
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
        let var = DVector::from_vec(vec![0.5, -1.0, 0.25]);
        assert_eq!(Affine::batchnorm(&var, &var, None, None, 1e-5), Err(1));
    }

    #[test]
    fn folds_equal_the_norm_applied() {
        let n = norm();
        let w = DMatrix::from_fn(2, 3, |i, j| (i as f64) - 0.7 * j as f64 + 0.2);
        let b = Some(DVector::from_vec(vec![0.5, -0.25]));
        let x = DVector::from_vec(vec![0.3, -1.2, 0.8]);
        for bias in [None, b] {
            let (fw, fb) = fold_before(w.clone(), bias.clone(), &n);
            let want = affine_map(&w, &bias, &apply(&n, &x));
            assert!((affine_map(&fw, &fb, &x) - want).norm() < 1e-13);
            let wt = w.transpose();
            let z = DVector::from_vec(vec![0.4, 1.1]);
            let bias_t = bias
                .as_ref()
                .map(|_| DVector::from_vec(vec![0.2, -0.1, 0.3]));
            let (fw, fb) = fold_after(wt.clone(), bias_t.clone(), &n);
            let want = apply(&n, &affine_map(&wt, &bias_t, &z));
            assert!((affine_map(&fw, &fb, &z) - want).norm() < 1e-13);
        }
        let scalar = Affine::tok0_batch(3.0, 1.0, 3).unwrap();
        assert_eq!(scalar.scale_range(), (0.5, 0.5));
        assert!(Affine::tok0_batch(-1.0, 1e-6, 3).is_none());
    }
}
