//! The metrics and what they compute: similarities, inner products,
//! matrices and tiles of matrices.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tensor_similarity::matrix::{
    pairwise_tile, similarity_matrix, similarity_tile, squared_norms as core_norms,
};
use tensor_similarity::nalgebra;
use tensor_similarity::{
    FamilySimilarity, GaussianMonteCarlo, GaussianSimilarity, HeadPathSimilarity, LogScaled,
    MemoryLimit, Model, MonteCarloEstimate, RecursiveSimilarity, TensorSimilarity, weight_cosine,
};

use crate::model::NativeModel;
use crate::{Array, invalid, to_bytes, to_py};

/// How a metric computes.
enum Kernel {
    Tensor(TensorSimilarity),
    /// `"gaussian"` or the closure by name, `"gaussian-closure"`.
    Gaussian(GaussianSimilarity),
    /// `"gaussian-mc"`: Monte Carlo estimates.
    MonteCarlo(GaussianMonteCarlo),
    /// The weight cosine: not the cosine of a model inner product.
    Weight,
    /// The tensor metric on one head path or one path family (SPEC §9):
    /// `head=` or `family=`.
    Part(Box<dyn RecursiveSimilarity<f64> + Send + Sync>),
}

/// A metric with its options (`"tensor"`, `"gaussian"`,
/// `"gaussian-closure"`, `"gaussian-mc"` or `"weight"`), checked once.
#[pyclass(frozen, module = "tensor_similarity._native")]
pub struct Metric {
    kernel: Kernel,
    name: &'static str,
    /// `context=`, if given: refused on models none of which reads
    /// sequences (see [`Metric::check_context`]).
    context: Option<usize>,
}

/// `⟨A, B⟩` in log scale, as Python sees it: `(sign, ln |⟨A, B⟩|)`.
type Log = (f64, f64);

fn log(x: LogScaled) -> Log {
    (x.signum(), x.ln_abs())
}

fn unlog((sign, ln): Log) -> LogScaled {
    LogScaled::from_ln(sign, ln)
}

impl Metric {
    /// `context=` on models none of which is a sequence model is an
    /// [`OptionError`](crate::errors::OptionError), as `--context` is on
    /// the command line: it would change nothing, and the user meant it to.
    /// No models (an empty list) say nothing either way.
    fn check_context<'a>(&self, models: impl IntoIterator<Item = &'a Model<f64>>) -> PyResult<()> {
        let Some(n) = self.context else {
            return Ok(());
        };
        let mut any = false;
        for m in models {
            if m.is_sequence() {
                return Ok(());
            }
            any = true;
        }
        if !any {
            return Ok(());
        }
        Err(invalid(format!(
            "context={n}: none of the models is a sequence model (the option would change nothing)"
        )))
    }

    /// The metric as an inner-product cosine, or the error that it is not.
    fn recursive(&self, what: &str) -> PyResult<&(dyn RecursiveSimilarity<f64> + Sync)> {
        match &self.kernel {
            Kernel::Tensor(m) => Ok(m),
            Kernel::Gaussian(m) => Ok(m),
            Kernel::MonteCarlo(m) => Ok(m),
            Kernel::Part(m) => Ok(&**m),
            Kernel::Weight => Err(invalid(format!(
                "{what} needs an inner product: metric \"tensor\" or \"gaussian\", not \"weight\""
            ))),
        }
    }

    /// The Monte Carlo metric, or the error that this is another.
    fn monte_carlo(&self, what: &str) -> PyResult<&GaussianMonteCarlo> {
        match &self.kernel {
            Kernel::MonteCarlo(m) => Ok(m),
            _ => Err(invalid(format!(
                "{what} is the Monte Carlo metric's (\"gaussian-mc\"), not \"{}\"'s",
                self.name
            ))),
        }
    }
}

#[pymethods]
impl Metric {
    #[new]
    #[pyo3(signature = (kind, *, context=None, input_metric=None, input_mean=None, input_covariance=None, outputs=None, output_weights=None, positions=None, max_memory=None, max_work=None, samples=None, seed=None, head=None, family=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &str,
        context: Option<usize>,
        input_metric: Option<Array<'_>>,
        input_mean: Option<Array<'_>>,
        input_covariance: Option<Array<'_>>,
        outputs: Option<Vec<usize>>,
        output_weights: Option<Array<'_>>,
        positions: Option<Vec<usize>>,
        max_memory: Option<u64>,
        max_work: Option<f64>,
        samples: Option<usize>,
        seed: Option<u64>,
        head: Option<(usize, usize)>,
        family: Option<Vec<usize>>,
    ) -> PyResult<Self> {
        // The options each metric takes; anything else given is refused,
        // so that an option never silently changes nothing.
        let given = [
            ("context", context.is_some()),
            ("input_metric", input_metric.is_some()),
            ("input_mean", input_mean.is_some()),
            ("input_covariance", input_covariance.is_some()),
            ("outputs", outputs.is_some()),
            ("output_weights", output_weights.is_some()),
            ("positions", positions.is_some()),
            ("max_memory", max_memory.is_some()),
            ("max_work", max_work.is_some()),
            ("samples", samples.is_some()),
            ("seed", seed.is_some()),
            ("head", head.is_some()),
            ("family", family.is_some()),
        ];
        let takes: &[&str] = match kind {
            "tensor" => &[
                "context",
                "input_metric",
                "input_mean",
                "input_covariance",
                "outputs",
                "output_weights",
                "positions",
                "max_memory",
                "max_work",
                "head",
                "family",
            ],
            "gaussian" | "gaussian-closure" => {
                &["context", "input_mean", "input_covariance", "max_memory"]
            }
            "gaussian-mc" => &[
                "context",
                "input_mean",
                "input_covariance",
                "samples",
                "seed",
            ],
            "weight" => &[],
            _ => {
                return Err(invalid(format!(
                    "metric {kind:?}: expected \"tensor\", \"gaussian\", \"gaussian-closure\", \
                     \"gaussian-mc\" or \"weight\""
                )));
            }
        };
        if let Some((option, _)) = given.iter().find(|(o, g)| *g && !takes.contains(o)) {
            return Err(invalid(format!(
                "metric {kind:?} does not take {option}= (its options: {})",
                if takes.is_empty() {
                    "none".to_owned()
                } else {
                    takes.join(", ")
                }
            )));
        }
        let mean = input_mean
            .as_ref()
            .map(|m| m.to_vector("input_mean"))
            .transpose()?;
        let covariance = input_covariance
            .as_ref()
            .map(|c| c.to_matrix("input_covariance"))
            .transpose()?;
        let limit = max_memory.map_or(MemoryLimit::Machine, MemoryLimit::Bytes);
        let (kernel, name) = match kind {
            "tensor" => {
                let mut m = TensorSimilarity::new().with_max_memory(limit);
                if let Some(w) = max_work {
                    m = m.with_max_work(w);
                }
                if let Some(n) = context {
                    m = m.with_context(n).map_err(to_py)?;
                }
                if let Some(metric) = &input_metric {
                    if mean.is_some() || covariance.is_some() {
                        return Err(invalid(
                            "give input_metric= or input_mean=/input_covariance=, not both",
                        ));
                    }
                    m = m
                        .with_input_metric(metric.to_matrix("input_metric")?)
                        .map_err(to_py)?;
                }
                if mean.is_some() || covariance.is_some() {
                    let d = mean
                        .as_ref()
                        .map(|v| v.len())
                        .or(covariance.as_ref().map(|c| c.nrows()))
                        .unwrap_or(0);
                    let mean = mean.unwrap_or_else(|| nalgebra::DVector::zeros(d));
                    let covariance =
                        covariance.unwrap_or_else(|| nalgebra::DMatrix::identity(d, d));
                    m = m.with_input_gaussian(&mean, &covariance).map_err(to_py)?;
                }
                if outputs.is_some() && output_weights.is_some() {
                    return Err(invalid("give outputs= or output_weights=, not both"));
                }
                if let Some(outputs) = outputs {
                    m = m.with_output_selection(outputs);
                }
                if let Some(w) = &output_weights {
                    m = m
                        .with_output_weights(w.to_matrix("output_weights")?)
                        .map_err(to_py)?;
                }
                if let Some(positions) = positions {
                    m = m.with_position_selection(positions);
                }
                match (head, family) {
                    (Some(_), Some(_)) => {
                        return Err(invalid("give head= or family=, not both"));
                    }
                    (Some((block, h)), None) => (
                        Kernel::Part(Box::new(HeadPathSimilarity::new(m, block, h))),
                        "tensor",
                    ),
                    (None, Some(family)) => (
                        Kernel::Part(Box::new(FamilySimilarity::new(m, family))),
                        "tensor",
                    ),
                    (None, None) => (Kernel::Tensor(m), "tensor"),
                }
            }
            "gaussian" | "gaussian-closure" => {
                let (mut m, name) = match kind {
                    "gaussian" => (GaussianSimilarity::new(), "gaussian"),
                    _ => (GaussianSimilarity::closure(), "gaussian-closure"),
                };
                m = m.with_max_memory(limit);
                if let Some(n) = context {
                    m = m.with_context(n).map_err(to_py)?;
                }
                match (mean, covariance) {
                    (Some(mean), Some(cov)) => m = m.with_input(mean, cov).map_err(to_py)?,
                    (Some(mean), None) => m = m.with_mean(mean).map_err(to_py)?,
                    (None, Some(cov)) => m = m.with_covariance(cov).map_err(to_py)?,
                    (None, None) => {}
                }
                (Kernel::Gaussian(m), name)
            }
            "gaussian-mc" => {
                let defaults = GaussianMonteCarlo::default();
                let mut m = GaussianMonteCarlo::new(
                    samples.unwrap_or(defaults.samples()),
                    seed.unwrap_or(defaults.seed()),
                )
                .map_err(to_py)?;
                if let Some(n) = context {
                    m = m.with_context(n).map_err(to_py)?;
                }
                match (mean, covariance) {
                    (Some(mean), Some(cov)) => m = m.with_input(mean, cov).map_err(to_py)?,
                    (Some(mean), None) => m = m.with_mean(mean).map_err(to_py)?,
                    (None, Some(cov)) => m = m.with_covariance(cov).map_err(to_py)?,
                    (None, None) => {}
                }
                (Kernel::MonteCarlo(m), "gaussian-mc")
            }
            _ => (Kernel::Weight, "weight"),
        };
        Ok(Self {
            kernel,
            name,
            context,
        })
    }

    /// `"tensor"`, `"gaussian"`, `"gaussian-closure"`, `"gaussian-mc"` or
    /// `"weight"`.
    #[getter]
    fn name(&self) -> &'static str {
        self.name
    }

    fn __repr__(&self) -> String {
        format!("Metric({:?})", self.name)
    }
}

/// The models of Python objects, cloned (each clone shares its blocks) so
/// that the computation can run without the GIL.
fn models(list: &[PyRef<'_, NativeModel>]) -> Vec<Model<f64>> {
    list.iter().map(|m| m.model.clone()).collect()
}

/// A progress callback for worker threads: calls `callback()` with the GIL
/// (an exception it raises is reported as unraisable, never lost silently,
/// and does not stop the computation).
fn ticker(callback: Option<Py<PyAny>>) -> impl Fn() + Sync {
    move || {
        if let Some(cb) = &callback {
            Python::attach(|py| {
                if let Err(e) = cb.call0(py) {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            });
        }
    }
}

/// The similarity of `a` and `b`.
#[pyfunction]
pub fn similarity(
    py: Python<'_>,
    metric: PyRef<'_, Metric>,
    a: PyRef<'_, NativeModel>,
    b: PyRef<'_, NativeModel>,
) -> PyResult<f64> {
    metric.check_context([&a.model, &b.model])?;
    let (a, b) = (a.model.clone(), b.model.clone());
    let kernel = &metric.kernel;
    py.detach(|| match kernel {
        Kernel::Tensor(m) => m.similarity(&a, &b),
        Kernel::Gaussian(m) => m.similarity(&a, &b),
        Kernel::MonteCarlo(m) => m.similarity(&a, &b),
        Kernel::Part(m) => m.similarity(&a, &b),
        Kernel::Weight => weight_cosine(&a, &b),
    })
    .map_err(to_py)
}

/// A Monte Carlo estimate as a dict of its fields.
fn estimate_dict<'py>(py: Python<'py>, e: &MonteCarloEstimate) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("similarity", e.similarity)?;
    d.set_item("standard_error", e.standard_error)?;
    d.set_item("inner_product", e.inner_product)?;
    d.set_item("squared_norm_a", e.squared_norm_a)?;
    d.set_item("squared_norm_b", e.squared_norm_b)?;
    d.set_item(
        "product_standard_errors",
        e.product_standard_errors.to_vec(),
    )?;
    d.set_item("samples", e.samples)?;
    d.set_item("batches", e.batches)?;
    Ok(d)
}

/// The Monte Carlo estimate of the similarity of `a` and `b`, as a dict.
#[pyfunction]
pub fn monte_carlo_estimate<'py>(
    py: Python<'py>,
    metric: PyRef<'py, Metric>,
    a: PyRef<'py, NativeModel>,
    b: PyRef<'py, NativeModel>,
) -> PyResult<Bound<'py, PyDict>> {
    let m = metric.monte_carlo("estimate")?;
    metric.check_context([&a.model, &b.model])?;
    let (a, b) = (a.model.clone(), b.model.clone());
    let e = py.detach(|| m.estimate(&a, &b)).map_err(to_py)?;
    estimate_dict(py, &e)
}

/// The Monte Carlo estimate of the similarity of the directions `A1 − A0`
/// and `B1 − B0`, as a dict.
#[pyfunction]
pub fn monte_carlo_difference<'py>(
    py: Python<'py>,
    metric: PyRef<'py, Metric>,
    a0: PyRef<'py, NativeModel>,
    a1: PyRef<'py, NativeModel>,
    b0: PyRef<'py, NativeModel>,
    b1: PyRef<'py, NativeModel>,
) -> PyResult<Bound<'py, PyDict>> {
    let m = metric.monte_carlo("difference_estimate")?;
    metric.check_context([&a0.model, &a1.model, &b0.model, &b1.model])?;
    let [a0, a1, b0, b1] = [&a0, &a1, &b0, &b1].map(|x| x.model.clone());
    let e = py
        .detach(|| m.difference(&a0, &a1, &b0, &b1))
        .map_err(to_py)?;
    estimate_dict(py, &e)
}

/// A Monte Carlo matrix for Python: the similarities, standard errors and
/// inner products as bytes of row-major `float64` arrays, the samples and
/// the batches.
type MonteCarloBytes<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    usize,
    usize,
);

/// The Monte Carlo matrix of `models` from one set of draws: the
/// similarities, their standard errors and the inner products, each as
/// bytes of a row-major `float64` array, and the samples and batches.
#[pyfunction]
pub fn monte_carlo_matrix<'py>(
    py: Python<'py>,
    metric: PyRef<'py, Metric>,
    models: Vec<PyRef<'py, NativeModel>>,
) -> PyResult<MonteCarloBytes<'py>> {
    let m = metric.monte_carlo("matrix_estimate")?;
    let models = self::models(&models);
    metric.check_context(&models)?;
    let out = py.detach(|| m.matrix(&models)).map_err(to_py)?;
    Ok((
        to_bytes(py, &out.similarity),
        to_bytes(py, &out.standard_error),
        to_bytes(py, &out.inner_products),
        out.samples,
        out.batches,
    ))
}

/// `⟨A, B⟩` as `(sign, ln |⟨A, B⟩|)`.
#[pyfunction]
pub fn inner_product(
    py: Python<'_>,
    metric: PyRef<'_, Metric>,
    a: PyRef<'_, NativeModel>,
    b: PyRef<'_, NativeModel>,
) -> PyResult<Log> {
    let m = metric.recursive("inner_product")?;
    metric.check_context([&a.model, &b.model])?;
    let (a, b) = (a.model.clone(), b.model.clone());
    py.detach(|| m.inner_product(&a, &b))
        .map(log)
        .map_err(to_py)
}

/// The cosine of the directions `A1 − A0` and `B1 − B0`.
#[pyfunction]
pub fn difference_similarity(
    py: Python<'_>,
    metric: PyRef<'_, Metric>,
    a0: PyRef<'_, NativeModel>,
    a1: PyRef<'_, NativeModel>,
    b0: PyRef<'_, NativeModel>,
    b1: PyRef<'_, NativeModel>,
) -> PyResult<f64> {
    let m = metric.recursive("difference_similarity")?;
    metric.check_context([&a0.model, &a1.model, &b0.model, &b1.model])?;
    let [a0, a1, b0, b1] = [&a0, &a1, &b0, &b1].map(|x| x.model.clone());
    py.detach(|| m.difference_similarity(&a0, &a1, &b0, &b1))
        .map_err(to_py)
}

/// Whether the Gaussian similarity of `a` and `b` is exact (not a closure).
#[pyfunction]
pub fn gaussian_is_exact(
    metric: PyRef<'_, Metric>,
    a: PyRef<'_, NativeModel>,
    b: PyRef<'_, NativeModel>,
) -> PyResult<bool> {
    metric.check_context([&a.model, &b.model])?;
    match &metric.kernel {
        Kernel::Gaussian(m) => Ok(m.is_exact(&a.model, &b.model)),
        _ => Err(invalid(
            "exactness is a property of the \"gaussian\" and \"gaussian-closure\" metrics",
        )),
    }
}

/// Whether every Gaussian value among `rows` (with themselves, or with
/// `cols`) is exact: every pair, and each model with itself (its norm).
/// `True` for the other metrics, which are exact or estimates.
#[pyfunction]
#[pyo3(signature = (metric, rows, cols=None))]
pub fn gaussian_all_exact(
    metric: PyRef<'_, Metric>,
    rows: Vec<PyRef<'_, NativeModel>>,
    cols: Option<Vec<PyRef<'_, NativeModel>>>,
) -> bool {
    let Kernel::Gaussian(m) = &metric.kernel else {
        return true;
    };
    let (rows, cols) = (models(&rows), cols.as_deref().map(models));
    let mut all = rows.iter().chain(cols.iter().flatten());
    let exact_with_itself = all.all(|a| m.is_exact(a, a));
    exact_with_itself
        && match &cols {
            Some(cols) => rows.iter().all(|a| cols.iter().all(|b| m.is_exact(a, b))),
            None => rows
                .iter()
                .enumerate()
                .all(|(i, a)| rows[i + 1..].iter().all(|b| m.is_exact(a, b))),
        }
}

/// Each model's squared norm, `(sign, ln |⟨A, A⟩|)`.
#[pyfunction]
pub fn squared_norms(
    py: Python<'_>,
    metric: PyRef<'_, Metric>,
    models: Vec<PyRef<'_, NativeModel>>,
) -> PyResult<Vec<Log>> {
    let m = metric.recursive("squared_norms")?;
    let models = self::models(&models);
    metric.check_context(&models)?;
    py.detach(|| core_norms(&m, &models))
        .map(|v| v.into_iter().map(log).collect())
        .map_err(to_py)
}

/// The `N × N` similarity matrix, as bytes of a row-major `float64` array.
#[pyfunction]
#[pyo3(signature = (metric, models, progress=None))]
pub fn matrix<'py>(
    py: Python<'py>,
    metric: PyRef<'py, Metric>,
    models: Vec<PyRef<'py, NativeModel>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let models = self::models(&models);
    metric.check_context(&models)?;
    let tick = ticker(progress);
    let kernel = &metric.kernel;
    let m = py
        .detach(|| match kernel {
            Kernel::Tensor(m) => similarity_matrix(m, &models, &tick),
            Kernel::Gaussian(m) => similarity_matrix(m, &models, &tick),
            Kernel::Part(m) => similarity_matrix(&&**m, &models, &tick),
            // One set of draws through every model.
            Kernel::MonteCarlo(m) => m.matrix(&models).map(|out| {
                let n = models.len();
                for _ in 0..n * n.saturating_sub(1) / 2 {
                    tick();
                }
                out.similarity
            }),
            Kernel::Weight => pairwise_tile(models.len(), None, &tick, |i, j| {
                weight_cosine(&models[i], &models[j])
            }),
        })
        .map_err(to_py)?;
    Ok(to_bytes(py, &m))
}

/// One tile of the similarity matrix (`cols = None`: the rows with
/// themselves), as bytes of a row-major `float64` array. The norms are
/// `(sign, ln)` pairs from `squared_norms`, or `None` to compute them here;
/// the weight metric takes none.
#[pyfunction]
#[pyo3(signature = (metric, rows, row_norms=None, cols=None, col_norms=None, progress=None))]
pub fn tile<'py>(
    py: Python<'py>,
    metric: PyRef<'py, Metric>,
    rows: Vec<PyRef<'py, NativeModel>>,
    row_norms: Option<Vec<Log>>,
    cols: Option<Vec<PyRef<'py, NativeModel>>>,
    col_norms: Option<Vec<Log>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    if cols.is_none() && col_norms.is_some() {
        return Err(invalid("col_norms given without cols"));
    }
    let rows = models(&rows);
    let cols = cols.as_deref().map(models);
    metric.check_context(rows.iter().chain(cols.iter().flatten()))?;
    let tick = ticker(progress);
    let m = match &metric.kernel {
        Kernel::MonteCarlo(_) => {
            return Err(invalid(
                "tiles of the \"gaussian-mc\" metric would each draw their own samples, so \
                 they would not assemble into one matrix: use matrix (one set of draws through \
                 every model)",
            ));
        }
        Kernel::Weight => {
            if row_norms.is_some() || col_norms.is_some() {
                return Err(invalid(
                    "the weight metric takes no norms (it is not the cosine of a model inner product)",
                ));
            }
            py.detach(|| match &cols {
                Some(c) => pairwise_tile(rows.len(), Some(c.len()), &tick, |i, j| {
                    weight_cosine(&rows[i], &c[j])
                }),
                None => pairwise_tile(rows.len(), None, &tick, |i, j| {
                    weight_cosine(&rows[i], &rows[j])
                }),
            })
        }
        _ => {
            let m = metric.recursive("tile")?;
            let norms = |given: Option<Vec<Log>>, models: &[Model<f64>]| match given {
                Some(v) => Ok(v.into_iter().map(unlog).collect::<Vec<_>>()),
                None => core_norms(&m, models),
            };
            py.detach(|| {
                let rn = norms(row_norms, &rows)?;
                match &cols {
                    Some(c) => {
                        let cn = norms(col_norms, c)?;
                        similarity_tile(&m, &rows, &rn, Some((c, &cn)), &tick)
                    }
                    None => similarity_tile(&m, &rows, &rn, None, &tick),
                }
            })
        }
    }
    .map_err(to_py)?;
    Ok(to_bytes(py, &m))
}

/// The tensor metric of `metric`, or the error that `what` is its alone.
fn tensor_only<'m>(metric: &'m Metric, what: &str) -> PyResult<&'m TensorSimilarity> {
    match &metric.kernel {
        Kernel::Tensor(m) => Ok(m),
        Kernel::Part(_) => Err(invalid(format!(
            "{what} takes the whole models: a metric without head= or family="
        ))),
        _ => Err(invalid(format!(
            "{what} is the tensor metric's (SPEC §9), not \"{}\"'s",
            metric.name
        ))),
    }
}

/// Inner products as rows of `(sign, ln |x|)` pairs.
fn log_rows(m: &nalgebra::DMatrix<LogScaled>) -> Vec<Vec<Log>> {
    (0..m.nrows())
        .map(|i| (0..m.ncols()).map(|j| log(m[(i, j)])).collect())
        .collect()
}

/// The head paths of `a` and `b` (tensor or Gaussian metric): per
/// attention block, a dict of `block`, `shape`, `cosine` (row-major bytes,
/// NaN where undefined), `inner` (rows of `(sign, ln |x|)`), `norms_a` and
/// `norms_b` (lists of pairs), `exact`.
#[pyfunction]
pub fn heads<'py>(
    py: Python<'py>,
    metric: PyRef<'_, Metric>,
    a: PyRef<'_, NativeModel>,
    b: PyRef<'_, NativeModel>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    metric.check_context([&a.model, &b.model])?;
    let (a, b) = (a.model.clone(), b.model.clone());
    let found = match &metric.kernel {
        Kernel::Gaussian(g) => py.detach(|| g.heads(&a, &b)),
        _ => {
            let m = tensor_only(&metric, "heads")?;
            py.detach(|| m.heads(&a, &b))
        }
    }
    .map_err(to_py)?;
    found
        .iter()
        .map(|p| {
            let d = PyDict::new(py);
            d.set_item("block", p.block)?;
            d.set_item("shape", p.cosine.shape())?;
            d.set_item("cosine", to_bytes(py, &p.cosine))?;
            d.set_item("inner", log_rows(&p.inner))?;
            d.set_item(
                "norms_a",
                p.norms_a.iter().map(|&x| log(x)).collect::<Vec<_>>(),
            )?;
            d.set_item(
                "norms_b",
                p.norms_b.iter().map(|&x| log(x)).collect::<Vec<_>>(),
            )?;
            d.set_item("exact", p.exact)?;
            Ok(d)
        })
        .collect()
}

/// The path families of `a` and `b`: a dict of `blocks`, `families`,
/// `cosine` (row-major bytes, NaN where undefined), `inner` (rows of
/// `(sign, ln |x|)`), `total` (`(sign, ln |⟨A,B⟩|)`) and `similarity`.
#[pyfunction]
pub fn paths<'py>(
    py: Python<'py>,
    metric: PyRef<'_, Metric>,
    a: PyRef<'_, NativeModel>,
    b: PyRef<'_, NativeModel>,
) -> PyResult<Bound<'py, PyDict>> {
    let m = tensor_only(&metric, "paths")?;
    metric.check_context([&a.model, &b.model])?;
    let (a, b) = (a.model.clone(), b.model.clone());
    let found = py.detach(|| m.paths(&a, &b)).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("blocks", &found.blocks)?;
    d.set_item("families", &found.families)?;
    d.set_item("cosine", to_bytes(py, &found.cosine))?;
    d.set_item("inner", log_rows(&found.inner))?;
    d.set_item("total", log(found.total))?;
    d.set_item("similarity", found.similarity)?;
    Ok(d)
}

/// Which head became which across a run: per attention block, a dict of
/// `block`, `mean` (row-major `N × N` bytes: the mean cosine of each pair's
/// best head matching) and `matching` (`[i][j][h]`: the head of model `j`
/// that head `h` of model `i` is matched with, or `None`).
#[pyfunction]
#[pyo3(signature = (metric, models, progress=None))]
pub fn head_matching<'py>(
    py: Python<'py>,
    metric: PyRef<'py, Metric>,
    models: Vec<PyRef<'py, NativeModel>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let m = tensor_only(&metric, "head_matching")?;
    let models = self::models(&models);
    metric.check_context(&models)?;
    let tick = ticker(progress);
    let found = py
        .detach(|| m.head_matching(&models, &tick))
        .map_err(to_py)?;
    found
        .iter()
        .map(|f| {
            let d = PyDict::new(py);
            d.set_item("block", f.block)?;
            d.set_item("mean", to_bytes(py, &f.mean))?;
            d.set_item("matching", &f.matching)?;
            Ok(d)
        })
        .collect()
}
