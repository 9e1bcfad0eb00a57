//! Models: read from files or from a `state_dict`, written back, run
//! forward.

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rayon::prelude::*;
use serde_json::{Map, Number, Value};
use tensor_similarity::io::{
    self, ConfigSource, Dtype, FileNorm, IgnoredConfigKey, Layout, LoadOptions, ModelFile,
    NormReading, TensorData,
};
use tensor_similarity::{Mask, Model, Spelling};

use crate::errors::Family;
use crate::{Array, invalid, to_bytes, to_py};

/// A model and what its source said about it (`tensor_similarity.Model`
/// wraps one).
#[pyclass(frozen, module = "tensor_similarity._native")]
pub struct NativeModel {
    pub(crate) model: Model<f64>,
    layout: Layout,
    tensors: Vec<io::TensorEntry>,
    config: Option<PathBuf>,
    native_context: Option<usize>,
    assumptions: Vec<String>,
    unused_options: Vec<&'static str>,
    /// The values the source stores, in all and per block: the library's
    /// [`ModelFile::parameter_count`], the count `inspect` prints.
    parameters: usize,
    block_parameters: Vec<usize>,
    ignored_config_keys: Vec<IgnoredConfigKey>,
    /// The model's normalisations, each folded or removed
    /// ([`ModelFile::norms`]).
    norms: Vec<FileNorm>,
    /// Whether a norm was removed (`ignore_norms=True`): the model is
    /// the checkpoint's without its norms, another function
    /// ([`ModelFile::norms_removed`]).
    norms_removed: bool,
}

impl From<ModelFile> for NativeModel {
    fn from(f: ModelFile) -> Self {
        let parameters = f.parameter_count();
        let block_parameters = (0..f.model.depth())
            .map(|b| f.block_parameter_count(b))
            .collect();
        let norms_removed = f.norms_removed();
        Self {
            parameters,
            block_parameters,
            model: f.model,
            layout: f.layout,
            tensors: f.tensors,
            config: f.config,
            native_context: f.native_context,
            assumptions: f.assumptions,
            unused_options: f.unused_options,
            ignored_config_keys: f.ignored_config_keys,
            norms: f.norms,
            norms_removed,
        }
    }
}

/// An `OptionError` for an option that none of `files` reads (their
/// layouts have no use for it), as the command line refuses it: docs
/// promise that an option is never silently ignored.
fn check_options_used(files: &[ModelFile]) -> PyResult<()> {
    let Some(first) = files.first() else {
        return Ok(());
    };
    let unread = (first.unused_options.iter())
        .find(|option| files.iter().all(|f| f.unused_options.contains(option)));
    let Some(option) = unread else {
        return Ok(());
    };
    let keyword = tensor_similarity::LoadOption::from_field(option).map_or_else(
        || format!("{option}="),
        |o| o.spelled(Spelling::Python).to_string(),
    );
    let why = match *option {
        "rope_base" => {
            "files with tensor_similarity metadata name every setting; vector layouts have no \
             attention; the research Transformer's rotary base is fixed at 10000"
        }
        "ignore_norms" => {
            "only the attention-only language model's layout has norms to remove; files with \
             tensor_similarity metadata have none"
        }
        _ => {
            "files with tensor_similarity metadata name every setting; vector layouts have no \
             attention"
        }
    };
    let layouts: Vec<&str> = files.iter().map(|f| f.layout.name()).collect();
    Err(invalid(format!(
        "{keyword} applies to none of the models: {} ({why})",
        layouts.join(", ")
    )))
}

/// The Python name of a layout (what `save` takes).
fn layout_key(layout: Layout) -> &'static str {
    match layout {
        Layout::Described => "described",
        Layout::EmbedBodyHead => "embed_body_head",
        Layout::BiLinearProjection => "bi_linear_projection",
        Layout::Transformer => "transformer",
        Layout::AttentionLm => "attention_lm",
        _ => "other",
    }
}

/// A stored dtype by name: a float type, or `"I64"` (an integer tensor,
/// which the core reads only as a norm's counter, `num_batches_tracked`).
fn parse_dtype(name: &str) -> PyResult<Dtype> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "F64" | "FLOAT64" => Dtype::F64,
        "F32" | "FLOAT32" => Dtype::F32,
        "F16" | "FLOAT16" => Dtype::F16,
        "BF16" | "BFLOAT16" => Dtype::BF16,
        "I64" | "INT64" => Dtype::I64,
        _ => {
            return Err(invalid(format!(
                "dtype {name:?}: expected one of \"F64\", \"F32\", \"F16\", \"BF16\", \
                 \"I64\""
            )));
        }
    })
}

#[pymethods]
impl NativeModel {
    #[getter]
    fn input_width(&self) -> usize {
        self.model.input_width()
    }

    #[getter]
    fn output_width(&self) -> usize {
        self.model.output_width()
    }

    #[getter]
    fn is_sequence(&self) -> bool {
        self.model.is_sequence()
    }

    #[getter]
    fn depth(&self) -> usize {
        self.model.depth()
    }

    #[getter]
    fn orders(&self) -> Vec<usize> {
        self.model.orders()
    }

    #[getter]
    fn parameter_count(&self) -> usize {
        self.parameters
    }

    #[getter]
    fn layout(&self) -> &'static str {
        layout_key(self.layout)
    }

    #[getter]
    fn layout_name(&self) -> &'static str {
        self.layout.name()
    }

    #[getter]
    fn config(&self) -> Option<PathBuf> {
        self.config.clone()
    }

    #[getter]
    fn native_context(&self) -> Option<usize> {
        self.native_context
    }

    #[getter]
    fn assumptions(&self) -> Vec<String> {
        self.assumptions.clone()
    }

    #[getter]
    fn unused_options(&self) -> Vec<&'static str> {
        self.unused_options.clone()
    }

    /// The run config's keys that cannot change the function at eval:
    /// `(key, value as JSON text, why)`, sorted by key.
    #[getter]
    fn ignored_config_keys(&self) -> Vec<(String, String, &'static str)> {
        self.ignored_config_keys
            .iter()
            .map(|k| (k.key.clone(), k.value.to_string(), k.why))
            .collect()
    }

    /// One dict per block: kind, order, widths, whether it mixes positions,
    /// its parameter count.
    fn blocks<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.model
            .blocks()
            .iter()
            .zip(&self.block_parameters)
            .map(|(b, &count)| {
                let d = PyDict::new(py);
                d.set_item("kind", b.kind())?;
                d.set_item("order", b.order())?;
                d.set_item("input_width", b.input_width())?;
                d.set_item("output_width", b.output_width())?;
                d.set_item("mixes_positions", b.mixes_positions())?;
                d.set_item("parameters", count)?;
                Ok(d)
            })
            .collect()
    }

    /// Whether a norm was removed (`ignore_norms=True`).
    #[getter]
    fn norms_removed(&self) -> bool {
        self.norms_removed
    }

    /// One dict per normalisation, in block order: kind, place, eps,
    /// whether it was folded, the ranges `(lo, hi)` of its scale and shift
    /// (`None` where it was removed, or has no shift), as `inspect --json`
    /// lists them.
    fn norms<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.norms
            .iter()
            .map(|n| {
                let (folded, scale, shift) = match &n.reading {
                    NormReading::Folded { scale, shift } => (true, Some(*scale), *shift),
                    _ => (false, None, None),
                };
                let d = PyDict::new(py);
                d.set_item("kind", n.kind)?;
                d.set_item("place", n.place.to_string())?;
                d.set_item("eps", n.eps)?;
                d.set_item("folded", folded)?;
                d.set_item("scale", scale)?;
                d.set_item("shift", shift)?;
                Ok(d)
            })
            .collect()
    }

    /// One dict per tensor of the source: name, block, role, stored dtype,
    /// shape.
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.tensors
            .iter()
            .map(|t| {
                let d = PyDict::new(py);
                d.set_item("name", &t.name)?;
                d.set_item("block", t.block)?;
                d.set_item("role", t.role)?;
                d.set_item("dtype", t.dtype.name())?;
                d.set_item("shape", t.shape.clone())?;
                Ok(d)
            })
            .collect()
    }

    /// The model on each row of a `[samples, d]` array (vector models), or
    /// on one sequence `[n, d]` (`sequence = True`); the outputs as bytes
    /// of a `[rows, n_L]` array.
    fn forward<'py>(
        &self,
        py: Python<'py>,
        x: Array<'py>,
        sequence: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let x = x.to_matrix("forward input")?;
        let y = py
            .detach(|| {
                if sequence {
                    self.model.forward_sequence(&x)
                } else {
                    self.model.forward_rows(&x)
                }
            })
            .map_err(to_py)?;
        Ok(to_bytes(py, &y))
    }
}

/// A mask option: `"causal"`, `"none"`, `"diag"`, or a matrix.
#[derive(FromPyObject)]
pub enum MaskArg<'py> {
    Name(String),
    Matrix(Array<'py>),
}

fn parse_mask(mask: Option<MaskArg<'_>>) -> PyResult<Option<Mask>> {
    Ok(match mask {
        None => None,
        Some(MaskArg::Name(name)) => Some(match name.as_str() {
            "causal" => Mask::Causal,
            "none" => Mask::None,
            "diag" | "diagonal" => Mask::Diagonal,
            _ => {
                return Err(invalid(format!(
                    "mask {name:?}: expected \"causal\", \"none\", \"diag\" or a matrix"
                )));
            }
        }),
        Some(MaskArg::Matrix(m)) => Some(Mask::Matrix(m.to_matrix("mask")?)),
    })
}

/// A `config=` option: a path, or the config's content as a dict.
#[derive(FromPyObject)]
pub enum ConfigArg<'py> {
    Path(PathBuf),
    Content(Bound<'py, PyDict>),
}

/// Mappings and lists in a `config=` dict nested deeper than this are
/// refused (as in a config file; a dict that holds itself would never end).
const MAX_CONFIG_DEPTH: usize = 64;

/// A `config=` dict's value as the JSON value a config file holding it
/// would parse to: dicts with string keys, lists and tuples, `None`,
/// booleans, integers, floats (a non-finite one kept as its text, as the
/// YAML reader keeps `.inf`, so that a key that needs a number refuses it)
/// and strings. `at` is the value's place, for errors.
fn config_value(v: &Bound<'_, PyAny>, at: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_CONFIG_DEPTH {
        return Err(invalid(format!(
            "config=: {at} is nested more than {MAX_CONFIG_DEPTH} levels deep"
        )));
    }
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Value::String(v.extract()?));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, item) in d.iter() {
            if !k.is_instance_of::<PyString>() {
                return Err(invalid(format!(
                    "config=: {at} has the key {}, not a string (a config's keys are strings)",
                    k.repr()?
                )));
            }
            let key: String = k.extract()?;
            let value = config_value(&item, &format!("{at}.{key}"), depth + 1)?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items = v
            .try_iter()?
            .enumerate()
            .map(|(i, item)| config_value(&item?, &format!("{at}[{i}]"), depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::Array(items));
    }
    // NumPy's bool is not a Python bool.
    let type_name: String = v.get_type().name()?.extract()?;
    if type_name == "bool" || type_name == "bool_" {
        return Ok(Value::Bool(v.is_truthy()?));
    }
    if v.is_instance_of::<PyInt>() || (!v.is_instance_of::<PyFloat>() && v.hasattr("__index__")?) {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = v.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        // Beyond 64 bits: the nearest float, as the YAML reader reads it.
        let x: f64 = v.extract()?;
        return Ok(Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number));
    }
    if let Ok(x) = v.extract::<f64>() {
        return Ok(Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number));
    }
    Err(invalid(format!(
        "config=: {at} is a {type_name}; a config holds dicts, lists, strings, numbers, booleans \
         and None"
    )))
}

/// The [`LoadOptions`] of the Python keywords, one argument each.
#[allow(clippy::too_many_arguments)]
fn load_options(
    residual_scale: Option<f64>,
    skip: Option<f64>,
    config: Option<ConfigArg<'_>>,
    heads: Option<usize>,
    mask: Option<MaskArg<'_>>,
    attn_scale: Option<f64>,
    rope_base: Option<f64>,
    ignore_norms: bool,
) -> PyResult<LoadOptions> {
    let config = match config {
        None => None,
        Some(ConfigArg::Path(path)) => Some(ConfigSource::File(path)),
        Some(ConfigArg::Content(dict)) => Some(ConfigSource::Content(config_value(
            dict.as_any(),
            "the config",
            0,
        )?)),
    };
    // Options the core adds later keep their defaults until they are bound.
    #[allow(clippy::needless_update)]
    Ok(LoadOptions {
        residual_scale,
        skip,
        config,
        heads,
        mask: parse_mask(mask)?,
        attn_scale,
        rope_base,
        ignore_norms,
        ..LoadOptions::default()
    })
}

/// The model in the file at `path`.
#[pyfunction]
#[pyo3(signature = (path, *, residual_scale=None, skip=None, config=None, heads=None, mask=None, attn_scale=None, rope_base=None, ignore_norms=false))]
// One argument per Python keyword.
#[allow(clippy::too_many_arguments)]
pub fn load(
    py: Python<'_>,
    path: PathBuf,
    residual_scale: Option<f64>,
    skip: Option<f64>,
    config: Option<ConfigArg<'_>>,
    heads: Option<usize>,
    mask: Option<MaskArg<'_>>,
    attn_scale: Option<f64>,
    rope_base: Option<f64>,
    ignore_norms: bool,
) -> PyResult<NativeModel> {
    let options = load_options(
        residual_scale,
        skip,
        config,
        heads,
        mask,
        attn_scale,
        rope_base,
        ignore_norms,
    )?;
    let file = py.detach(|| io::open(&path, &options)).map_err(to_py)?;
    check_options_used(std::slice::from_ref(&file))?;
    Ok(file.into())
}

/// The models in the files at `paths`, read in parallel; the error is the
/// first by path order.
#[pyfunction]
#[pyo3(signature = (paths, *, residual_scale=None, skip=None, config=None, heads=None, mask=None, attn_scale=None, rope_base=None, ignore_norms=false))]
// One argument per Python keyword.
#[allow(clippy::too_many_arguments)]
pub fn load_many(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    residual_scale: Option<f64>,
    skip: Option<f64>,
    config: Option<ConfigArg<'_>>,
    heads: Option<usize>,
    mask: Option<MaskArg<'_>>,
    attn_scale: Option<f64>,
    rope_base: Option<f64>,
    ignore_norms: bool,
) -> PyResult<Vec<NativeModel>> {
    let options = load_options(
        residual_scale,
        skip,
        config,
        heads,
        mask,
        attn_scale,
        rope_base,
        ignore_norms,
    )?;
    let files = py
        .detach(|| {
            paths
                .par_iter()
                .map(|p| io::open(p, &options))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(to_py)?;
    check_options_used(&files)?;
    Ok(files.into_iter().map(NativeModel::from).collect())
}

/// A model from a `state_dict`'s tensors: parallel lists of names, stored
/// dtypes and arrays (C-contiguous `float64` or `float32`, each read in
/// place and copied once); `metadata` the layout JSON, or `None` to infer
/// it from the names.
#[pyfunction]
#[pyo3(signature = (names, dtypes, arrays, metadata=None, *, residual_scale=None, skip=None, config=None, heads=None, mask=None, attn_scale=None, rope_base=None, ignore_norms=false))]
#[allow(clippy::too_many_arguments)]
pub fn from_state_dict(
    py: Python<'_>,
    names: Vec<String>,
    dtypes: Vec<String>,
    arrays: Vec<Array<'_>>,
    metadata: Option<String>,
    residual_scale: Option<f64>,
    skip: Option<f64>,
    config: Option<ConfigArg<'_>>,
    heads: Option<usize>,
    mask: Option<MaskArg<'_>>,
    attn_scale: Option<f64>,
    rope_base: Option<f64>,
    ignore_norms: bool,
) -> PyResult<NativeModel> {
    if dtypes.len() != names.len() || arrays.len() != names.len() {
        return Err(PyTypeError::new_err(
            "from_state_dict: names, dtypes and arrays must have one entry per tensor",
        ));
    }
    let options = load_options(
        residual_scale,
        skip,
        config,
        heads,
        mask,
        attn_scale,
        rope_base,
        ignore_norms,
    )?;
    let mut tensors = HashMap::with_capacity(names.len());
    for ((name, dtype), array) in names.into_iter().zip(dtypes).zip(&arrays) {
        let data = TensorData {
            dtype: parse_dtype(&dtype)?,
            shape: array.shape().to_vec(),
            values: array.to_vec(),
        };
        if tensors.insert(name.clone(), data).is_some() {
            return Err(Family::File.err(format!("state_dict: tensor {name:?} given twice")));
        }
    }
    let file = py
        .detach(|| io::from_state_dict(tensors, metadata.as_deref(), &options))
        .map_err(to_py)?;
    check_options_used(std::slice::from_ref(&file))?;
    Ok(file.into())
}

/// Writes `model` to `path` (safetensors) under `layout`, storing `dtype`.
#[pyfunction]
#[pyo3(signature = (model, path, layout="described", dtype="F64"))]
pub fn save(
    py: Python<'_>,
    model: PyRef<'_, NativeModel>,
    path: PathBuf,
    layout: &str,
    dtype: &str,
) -> PyResult<()> {
    let layout = match layout {
        "described" => Layout::Described,
        "embed_body_head" => Layout::EmbedBodyHead,
        "bi_linear_projection" => Layout::BiLinearProjection,
        _ => {
            return Err(invalid(format!(
                "layout {layout:?}: save writes \"described\", \"embed_body_head\" or \
                 \"bi_linear_projection\""
            )));
        }
    };
    let dtype = parse_dtype(dtype)?;
    if !dtype.is_float() {
        return Err(invalid(format!(
            "dtype {dtype}: save writes weights as a float type, \"F64\", \"F32\", \"F16\" \
             or \"BF16\""
        )));
    }
    let m = model.model.clone();
    py.detach(|| io::save_with_dtype(&m, &path, layout, dtype))
        .map_err(to_py)
}
