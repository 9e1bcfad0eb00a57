//! The metrics the command line offers, dispatched in one place
//! ([`Metric::kernel`]): a new metric is one match arm.

use std::borrow::Cow;
use std::sync::Arc;

use nalgebra::DMatrix;
use tensor_similarity::matrix::{pairwise_matrix, similarity_matrix};
use tensor_similarity::{
    CpBlock, CpFactors, Error, FamilySimilarity, Full, GaussianMonteCarlo, GaussianSimilarity,
    HeadPathSimilarity, Linear, MemoryLimit, Model, Real, RecursiveSimilarity, Result,
    TensorSimilarity, weight_cosine,
};

/// The one line on stderr (and the note in a matrix's CSV header) whenever
/// a Gaussian value is a closure, not the exact expectation.
pub const CLOSURE_NOTE: &str =
    "Gaussian closure (approximate); --metric gaussian-mc for an unbiased estimate";

/// Which similarity to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// Tensor similarity (SPEC §2): cosine of the symmetrised end-to-end tensors.
    Tensor,
    /// Gaussian functional similarity (SPEC §3, §7): E[f_A·f_B] over x ~ N(0, I) (rows of a sequence i.i.d.); exact where computable, else the Gaussian closure (said on stderr).
    Gaussian,
    /// The Gaussian closure by name (SPEC §3): moment propagation even where the exact value is computable.
    GaussianClosure,
    /// Monte Carlo estimate of the Gaussian similarity with its standard error (SPEC §3): --samples draws from --seed.
    GaussianMc,
    /// Cosine of all parameters concatenated (SPEC §4 baseline).
    Weight,
}

/// The metrics that are the cosine of an inner product of models, which
/// `difference` needs (bilinearity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InnerMetric {
    /// Tensor similarity (SPEC §2).
    Tensor,
    /// Gaussian functional similarity (SPEC §3, §7).
    Gaussian,
    /// The Gaussian closure by name (SPEC §3).
    GaussianClosure,
    /// Monte Carlo estimate of the Gaussian similarity (SPEC §3), one set of draws through the four models.
    GaussianMc,
}

impl From<InnerMetric> for Metric {
    fn from(m: InnerMetric) -> Self {
        match m {
            InnerMetric::Tensor => Metric::Tensor,
            InnerMetric::Gaussian => Metric::Gaussian,
            InnerMetric::GaussianClosure => Metric::GaussianClosure,
            InnerMetric::GaussianMc => Metric::GaussianMc,
        }
    }
}

/// The Monte Carlo settings: `--samples` and `--seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    /// The number of samples `N`.
    pub samples: usize,
    /// The seed of the draws.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            samples: tensor_similarity::gaussian::monte_carlo::DEFAULT_SAMPLES,
            seed: 0,
        }
    }
}

/// What a comparison runs with besides the metric.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings<'a> {
    /// Positions compared, for sequence models.
    pub context: Option<usize>,
    /// The memory a comparison may use.
    pub limit: MemoryLimit,
    /// The most multiply–adds the tensor metric may take.
    pub work: f64,
    /// The outputs compared (SPEC §2's selection `Q`), checked against the
    /// models' output width; `None`: every output.
    pub outputs: Option<&'a [usize]>,
    /// The draws of `gaussian-mc`.
    pub sampling: Sampling,
    /// The part of the models compared (tensor metric).
    pub part: Part<'a>,
}

/// What of the models a comparison reads (SPEC §9).
#[derive(Clone, Copy, Debug, Default)]
pub enum Part<'a> {
    /// The whole models.
    #[default]
    Whole,
    /// One head path: the attention block's chain index, the head.
    Head(usize, usize),
    /// One path family: the splitting blocks' chain indices.
    Family(&'a [usize]),
}

impl std::fmt::Display for Part<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Whole => write!(f, "whole models"),
            Part::Head(block, head) => write!(f, "head path {block}:{head}"),
            Part::Family([]) => write!(f, "family ∅"),
            Part::Family(s) => {
                let inside: Vec<String> = s.iter().map(usize::to_string).collect();
                write!(f, "family {{{}}}", inside.join(","))
            }
        }
    }
}

/// A value the command line reports: a similarity, with its standard error
/// where it is a Monte Carlo estimate.
#[derive(Clone, Copy, Debug)]
pub struct Value {
    /// The similarity (or its estimate).
    pub similarity: f64,
    /// Its standard error (`gaussian-mc` only).
    pub standard_error: Option<f64>,
}

/// A matrix the command line reports: similarities, with their standard
/// errors where they are Monte Carlo estimates.
#[derive(Clone, Debug)]
pub struct Values {
    /// The similarities (or their estimates).
    pub similarity: DMatrix<f64>,
    /// Their standard errors (`gaussian-mc` only).
    pub standard_error: Option<DMatrix<f64>>,
}

/// How a metric computes: as the cosine of an inner product (so a matrix
/// computes each norm once), pair by pair, or by Monte Carlo (one set of
/// draws through every model, with standard errors).
enum Kernel<T: Real> {
    Recursive(Box<dyn RecursiveSimilarity<T> + Sync>),
    Pairwise(fn(&Model<T>, &Model<T>) -> Result<f64>),
    MonteCarlo(GaussianMonteCarlo),
}

impl Metric {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Tensor => "tensor",
            Metric::Gaussian => "gaussian",
            Metric::GaussianClosure => "gaussian-closure",
            Metric::GaussianMc => "gaussian-mc",
            Metric::Weight => "weight",
        }
    }

    /// Whether the metric reads the models' Gaussian functions, so that a
    /// selection of outputs restricts the models ([`restricted`]).
    fn is_gaussian(self) -> bool {
        matches!(
            self,
            Metric::Gaussian | Metric::GaussianClosure | Metric::GaussianMc
        )
    }

    /// Whether the metric compares selected outputs (`--outputs`): the
    /// tensor metric by its output selection, the Gaussian metric on the
    /// models restricted to those outputs; the weight cosine compares
    /// parameters, not outputs.
    pub fn takes_outputs(self) -> bool {
        !matches!(self, Metric::Weight)
    }

    fn kernel<T: Real>(self, settings: &Settings) -> Result<Kernel<T>> {
        let Settings {
            context,
            limit,
            work,
            outputs,
            sampling,
            part,
        } = *settings;
        if !matches!(part, Part::Whole) && self != Metric::Tensor {
            return Err(Error::InvalidOption {
                what: "--head / --family",
                reason: format!(
                    "head paths and path families are the tensor metric's (SPEC §9), not {}'s",
                    self.name()
                ),
            });
        }
        if outputs.is_some() && !self.takes_outputs() {
            return Err(Error::InvalidOption {
                what: "--outputs",
                reason: format!(
                    "the {} metric compares parameters, not outputs (use --metric tensor or \
                     gaussian)",
                    self.name()
                ),
            });
        }
        Ok(match self {
            Metric::Tensor => {
                let mut metric = TensorSimilarity::new()
                    .with_max_memory(limit)
                    .with_max_work(work);
                if let Some(n) = context {
                    metric = metric.with_context(n)?;
                }
                if let Some(outputs) = outputs {
                    metric = metric.with_output_selection(outputs.to_vec());
                }
                match part {
                    Part::Whole => Kernel::Recursive(Box::new(metric)),
                    Part::Head(block, head) => {
                        Kernel::Recursive(Box::new(HeadPathSimilarity::new(metric, block, head)))
                    }
                    Part::Family(family) => {
                        Kernel::Recursive(Box::new(FamilySimilarity::new(metric, family.to_vec())))
                    }
                }
            }
            Metric::Gaussian | Metric::GaussianClosure => {
                let metric = self.gaussian().with_max_memory(limit);
                Kernel::Recursive(Box::new(match context {
                    Some(n) => metric.with_context(n)?,
                    None => metric,
                }))
            }
            Metric::GaussianMc => {
                let metric = GaussianMonteCarlo::new(sampling.samples, sampling.seed)?;
                Kernel::MonteCarlo(match context {
                    Some(n) => metric.with_context(n)?,
                    None => metric,
                })
            }
            Metric::Weight => Kernel::Pairwise(weight_cosine::<T>),
        })
    }

    /// The models the kernel compares: the Gaussian metric reads a
    /// selection of outputs as the models restricted to them
    /// ([`restricted`]); the others take `models` as they are.
    fn prepared<'m, T: Real>(
        self,
        models: &'m [Model<T>],
        settings: &Settings,
    ) -> Result<Cow<'m, [Model<T>]>> {
        Ok(match (self.is_gaussian(), settings.outputs) {
            (true, Some(outputs)) => Cow::Owned(
                models
                    .iter()
                    .map(|m| restricted(m, outputs))
                    .collect::<Result<_>>()?,
            ),
            _ => Cow::Borrowed(models),
        })
    }

    /// The Gaussian metric this one computes with: the exact value where
    /// computable, or the closure by name.
    fn gaussian(self) -> GaussianSimilarity {
        match self {
            Metric::GaussianClosure => GaussianSimilarity::closure(),
            _ => GaussianSimilarity::new(),
        }
    }

    /// Whether the value for `a` and `b` is exact: `Some(false)` where the
    /// Gaussian metric (or the closure by name) is a Gaussian closure,
    /// `None` for metrics that are always exact and for Monte Carlo (an
    /// estimate with its standard error). (A selection of outputs changes
    /// no block's order, so not this.)
    pub fn exact<T: Real>(self, a: &Model<T>, b: &Model<T>) -> Option<bool> {
        match self {
            Metric::Gaussian | Metric::GaussianClosure => Some(self.gaussian().is_exact(a, b)),
            Metric::Tensor | Metric::Weight | Metric::GaussianMc => None,
        }
    }

    /// The similarity of `a` and `b` under `settings`.
    pub fn compare<T: Real>(
        self,
        a: &Model<T>,
        b: &Model<T>,
        settings: &Settings,
    ) -> Result<Value> {
        let kernel = self.kernel(settings)?;
        // Models share their blocks: a copy is a few pointers.
        let pair = [a.clone(), b.clone()];
        let models = self.prepared(&pair, settings)?;
        let [a, b] = &models[..] else {
            unreachable!("two models")
        };
        match kernel {
            Kernel::Recursive(metric) => metric.similarity(a, b).map(Value::exact),
            Kernel::Pairwise(f) => f(a, b).map(Value::exact),
            Kernel::MonteCarlo(mc) => mc.estimate(a, b).map(|e| Value {
                similarity: e.similarity,
                standard_error: Some(e.standard_error),
            }),
        }
    }

    /// The cosine of the directions `A1 − A0` and `B1 − B0` of
    /// `[a1, a0, b1, b0]` (the command line's order; the library's
    /// [`difference_similarity`](RecursiveSimilarity::difference_similarity)
    /// takes `a0, a1, b0, b1`). A zero direction (two models of the same
    /// function) is [`Error::ZeroNorm`] of its side; the weight metric has no
    /// inner product to take differences of.
    pub fn difference<T: Real>(self, models: [&Model<T>; 4], settings: &Settings) -> Result<Value> {
        let kernel = self.kernel::<T>(settings)?;
        let four = models.map(Model::clone);
        let m = self.prepared(&four, settings)?;
        let [a1, a0, b1, b0] = &m[..] else {
            unreachable!("four models")
        };
        match kernel {
            Kernel::Recursive(metric) => metric
                .difference_similarity(a0, a1, b0, b1)
                .map(Value::exact),
            Kernel::MonteCarlo(mc) => mc.difference(a0, a1, b0, b1).map(|e| Value {
                similarity: e.similarity,
                standard_error: Some(e.standard_error),
            }),
            Kernel::Pairwise(_) => Err(Error::InvalidOption {
                what: "--metric",
                reason: format!(
                    "the {} metric has no inner product to take differences of (use tensor or \
                     gaussian)",
                    self.name()
                ),
            }),
        }
    }

    /// The matrix of all pairwise similarities, calling `progress` per pair.
    ///
    /// Monte Carlo runs one set of draws through every model (each model's
    /// forward pass once per sample) and reports every pair at once.
    pub fn matrix<T: Real>(
        self,
        models: &[Model<T>],
        settings: &Settings,
        progress: impl Fn() + Sync,
    ) -> Result<Values> {
        let kernel = self.kernel(settings)?;
        let models = self.prepared(models, settings)?;
        let exact = |similarity| Values {
            similarity,
            standard_error: None,
        };
        match kernel {
            Kernel::Recursive(metric) => similarity_matrix(&&*metric, &models, progress).map(exact),
            Kernel::Pairwise(f) => {
                pairwise_matrix(&models, progress, |i, j| f(&models[i], &models[j])).map(exact)
            }
            Kernel::MonteCarlo(mc) => {
                let m = mc.matrix(&models)?;
                let n = models.len();
                for _ in 0..n * n.saturating_sub(1) / 2 {
                    progress();
                }
                Ok(Values {
                    similarity: m.similarity,
                    standard_error: Some(m.standard_error),
                })
            }
        }
    }
}

impl Value {
    /// A value without a standard error.
    fn exact(similarity: f64) -> Self {
        Self {
            similarity,
            standard_error: None,
        }
    }
}

/// `model` restricted to `outputs` (0-based, checked against its output
/// width): its function followed by the projection onto those outputs, so
/// that the Gaussian inner product of two restricted models is
/// `E[Σ_{o∈Q} f_A,o · f_B,o]`, SPEC §2's selection `Q` for the Gaussian
/// metric.
///
/// A position-wise last block in CP form keeps only the selected rows of its
/// padded output (the output factor `D̃`, or every input factor where the
/// output factor is the identity), so the model is no larger and a last
/// linear block stays the cheap readout it was; any other last block is
/// followed by a linear block that selects. The symmetry group of the last
/// block is dropped, which the Gaussian metric never reads (it compares
/// functions); the tensor metric selects outputs itself and never sees this.
pub fn restricted<T: Real>(model: &Model<T>, outputs: &[usize]) -> Result<Model<T>> {
    let width = model.output_width();
    if let Some(o) = outputs.iter().find(|&&o| o >= width) {
        return Err(Error::InvalidOption {
            what: "--outputs",
            reason: format!("output {o} does not exist: the models have {width} outputs"),
        });
    }
    // Rows of the padded output kept: the constant, then the selection.
    let rows: Vec<usize> = std::iter::once(0)
        .chain(outputs.iter().map(|o| o + 1))
        .collect();
    let (last, rest) = model.blocks().split_last().ok_or(Error::EmptyModel)?;
    let mut builder = Model::builder();
    for block in rest {
        builder = builder.shared_block(Arc::clone(block));
    }
    builder = match last.as_cp().filter(|_| !last.mixes_positions()) {
        Some(f) => {
            let inputs: Vec<DMatrix<T>> = (0..f.order()).map(|j| f.input(j).into_owned()).collect();
            let factors = match f.output() {
                Some(d) => CpFactors::new(&inputs, Some(d.select_rows(&rows)))?,
                None => {
                    let inputs: Vec<DMatrix<T>> =
                        inputs.iter().map(|u| u.select_rows(&rows)).collect();
                    CpFactors::new(&inputs, None)?
                }
            };
            builder.block(CpBlock::from_factors(factors, Arc::new(Full))?)
        }
        None => {
            let mut select = DMatrix::zeros(outputs.len(), width);
            for (row, &o) in outputs.iter().enumerate() {
                select[(row, o)] = T::one();
            }
            builder
                .shared_block(Arc::clone(last))
                .block(Linear::new(select, None)?)
        }
    };
    if model.is_sequence() {
        builder = builder.sequence();
    }
    builder.build()
}
