//! Models as users write them (issue 27), against the logits PyTorch
//! computed for the same `nn.Module` (`tests/files/torch/make_additive.py`)
//! and against a dense oracle:
//!
//! * bilinear blocks with an output scale `α` and a skip weight `r` (SPEC
//!   §1: `y = α·(D(Lx ∘ Rx) + b_D) + r·x`), such as the additive residual
//!   `x + D(Lx ∘ Rx)` under the embed/body/head names;
//! * the framework prefixes trainers leave on every name (`module.`,
//!   `_orig_mod.`);
//! * explicit layouts for weights stored in other axis orders: per-head
//!   3-D weights (the TransformerLens convention) and `[in, out]` weights
//!   applied as `x @ W` (`tests/files/torch/make_tl_attention.py`), and the
//!   error that names the closest research layout when none fits.

mod common;

use nalgebra::{DMatrix, DVector};
use tensor_similarity::io::{self, Layout, LoadOptions, ModelFile};
use tensor_similarity::{
    Bilinear, Error, Linear, Model, RecursiveSimilarity, TensorBlock, TensorSimilarity,
};

/// The fixture of `depth` additive body blocks and what PyTorch computed.
fn fixture(depth: usize) -> (std::path::PathBuf, Vec<DVector<f64>>, Vec<DVector<f64>>) {
    let dir = common::files::fixtures().join("torch");
    let path = dir.join(format!("ebh_additive_{depth}.pt"));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("ebh_additive_{depth}.json"))).unwrap(),
    )
    .unwrap();
    let rows = |key: &str| -> Vec<DVector<f64>> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                DVector::from_iterator(
                    row.as_array().unwrap().len(),
                    row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()),
                )
            })
            .collect()
    };
    (path, rows("inputs"), rows("logits"))
}

fn open(path: &std::path::Path, options: LoadOptions) -> ModelFile {
    io::open(path, &options).unwrap()
}

/// The largest gap between the model's outputs and PyTorch's logits,
/// relative to the logits' size.
fn gap(model: &Model, inputs: &[DVector<f64>], logits: &[DVector<f64>]) -> f64 {
    inputs
        .iter()
        .zip(logits)
        .map(|(x, y)| (model.forward(x).unwrap() - y).amax() / y.amax().max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn an_additive_residual_mlp_gives_pytorchs_logits_with_skip_1() {
    for depth in [1, 2] {
        let (path, inputs, logits) = fixture(depth);
        let additive = open(
            &path,
            LoadOptions {
                skip: Some(1.0),
                ..LoadOptions::default()
            },
        );
        assert_eq!(additive.layout, Layout::EmbedBodyHead);
        let g = gap(&additive.model, &inputs, &logits);
        assert!(g < 1e-12, "depth {depth}: {g}");
        // α was not given: its default is stated, the residual is not.
        assert!(
            additive.assumptions.iter().any(|a| a.contains("α")),
            "{:?}",
            additive.assumptions
        );
        assert!(
            !additive
                .assumptions
                .iter()
                .any(|a| a.contains("residual absent"))
        );
        for block in &additive.model.blocks()[1..=depth] {
            let d = block.describe();
            assert_eq!((d.real("scale"), d.real("skip")), (Some(1.0), Some(1.0)));
        }

        // Without --skip the names alone cannot say: no residual, and the
        // assumption says how to give one. The function differs.
        let plain = open(&path, LoadOptions::default());
        let assumed = plain
            .assumptions
            .iter()
            .find(|a| a.contains("residual absent"))
            .unwrap_or_else(|| panic!("{:?}", plain.assumptions));
        assert!(
            assumed.contains("--skip 1") && assumed.contains("skip=1"),
            "{assumed}"
        );
        assert!(gap(&plain.model, &inputs, &logits) > 1e-2);

        // The research lerp is another function again.
        let lerp = open(
            &path,
            LoadOptions {
                residual_scale: Some(0.5),
                ..LoadOptions::default()
            },
        );
        assert!(gap(&lerp.model, &inputs, &logits) > 1e-2);
        assert!(lerp.assumptions.iter().all(|a| !a.contains("residual")));
    }
}

#[test]
fn the_additive_mlps_similarity_equals_a_dense_oracles() {
    let (path, _, _) = fixture(1);
    let additive = open(
        &path,
        LoadOptions {
            skip: Some(1.0),
            ..LoadOptions::default()
        },
    )
    .model;
    // α = 0.7 with r = 1: neither the lerp nor the additive residual.
    let other = open(
        &path,
        LoadOptions {
            residual_scale: Some(0.7),
            skip: Some(1.0),
            ..LoadOptions::default()
        },
    )
    .model;
    let n_in = additive.input_width();
    fn f(m: &Model) -> impl Fn(&DVector<f64>) -> DVector<f64> + '_ {
        move |x| m.forward(x).unwrap()
    }
    let metric = TensorSimilarity::new();
    for (a, b) in [
        (&additive, &other),
        (&additive, &additive),
        (&other, &other),
    ] {
        let dense = common::dense_quadratic_inner(&f(a), &f(b), n_in);
        let recursion = metric.inner_product(a, b).unwrap().to_f64();
        assert!(
            (dense - recursion).abs() < 1e-10 * dense.abs().max(1.0),
            "{dense} vs {recursion}"
        );
    }
    let dense_cos = common::dense_quadratic_inner(&f(&additive), &f(&other), n_in)
        / (common::dense_quadratic_inner(&f(&additive), &f(&additive), n_in)
            * common::dense_quadratic_inner(&f(&other), &f(&other), n_in))
        .sqrt();
    let sim = metric.similarity(&additive, &other).unwrap();
    assert!((sim - dense_cos).abs() < 1e-10, "{sim} vs {dense_cos}");
    assert!(sim < 1.0 - 1e-6, "α changes the function: {sim}");
}

/// A block `α·D(Lx ∘ Rx) + r·x` with every part random.
fn block(seed: u64, scale: f64, skip: f64) -> Bilinear {
    let mut rng = common::rng(seed);
    let mut w = |r, c| common::gaussian_matrix(&mut rng, r, c, 0.5);
    Bilinear::builder(w(5, 4), w(5, 4))
        .down(w(4, 5))
        .down_bias(w(4, 1).column(0).into_owned())
        .scale(scale)
        .skip(skip)
        .build()
        .unwrap()
}

#[test]
fn scale_and_skip_are_the_function_and_survive_a_file() {
    let x = DVector::from_vec(vec![0.3, -1.1, 0.8, 0.2]);
    let none = block(1, 1.0, 0.0);
    let core = none.forward(&x).unwrap();
    for (scale, skip) in [(1.0, 1.0), (0.7, 1.0), (0.5, 0.5), (2.0, -0.25)] {
        let b = block(1, scale, skip);
        let expected = &core * scale + &x * skip;
        assert!((b.forward(&x).unwrap() - &expected).amax() < 1e-14);
        // The lerp view exists only for α + r = 1.
        assert_eq!(b.residual(), (skip == 1.0 - scale).then_some(scale));
        // Written with metadata and read back: the same (α, r), the same function.
        let model = Model::builder()
            .block(Linear::new(DMatrix::identity(4, 4), None).unwrap())
            .block(b)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        io::save(&model, &path, Layout::Described).unwrap();
        let back = io::load(&path).unwrap();
        let d = back.blocks()[1].describe();
        assert_eq!((d.real("scale"), d.real("skip")), (Some(scale), Some(skip)));
        assert!((back.forward(&x).unwrap() - &expected).amax() < 1e-14);
    }
    // r ≠ 0 needs the output width to equal the input width.
    let mut rng = common::rng(2);
    let err = Bilinear::builder(
        common::gaussian_matrix(&mut rng, 5, 4, 1.0),
        common::gaussian_matrix(&mut rng, 5, 4, 1.0),
    )
    .skip(1.0)
    .build()
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Residual {
                input: 4,
                output: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn metadata_may_not_give_the_lerp_and_scale_or_skip_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.safetensors");
    let metadata = r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l", "right": "r", "residual": 0.5, "skip": 1.0}]}"#;
    let tensors = [
        common::files::raw("l", &[2, 2], vec![1.0, 0.0, 0.0, 1.0]),
        common::files::raw("r", &[2, 2], vec![1.0, 0.0, 0.0, 1.0]),
    ];
    std::fs::write(
        &path,
        common::files::file_bytes(&tensors, safetensors::Dtype::F64, Some(metadata)),
    )
    .unwrap();
    let err = io::load(&path).unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
}

/// The plain `state_dict` of the PyTorch fixture, as named tensors.
fn state_dict(depth: usize) -> std::collections::HashMap<String, io::TensorData> {
    let (path, _, _) = fixture(depth);
    let file = open(
        &path,
        LoadOptions {
            skip: Some(1.0),
            ..LoadOptions::default()
        },
    );
    // The values come back from the model's own description, by tensor
    // name: every tensor of this layout is one parameter of one block.
    let mut out = std::collections::HashMap::new();
    for entry in &file.tensors {
        let block = &file.model.blocks()[entry.block];
        let d = block.describe();
        let role = entry.role;
        let p = d.parameter(role).unwrap();
        // Parameters are column-major; a state_dict is row-major.
        let m = p.to_matrix();
        let values = m.transpose().as_slice().to_vec();
        out.insert(
            entry.name.clone(),
            io::TensorData {
                dtype: io::Dtype::F64,
                shape: entry.shape.clone(),
                values,
            },
        );
    }
    out
}

#[test]
fn framework_prefixes_are_stripped_and_said_and_a_mixed_state_dict_is_refused() {
    let plain = state_dict(2);
    let options = LoadOptions {
        skip: Some(1.0),
        ..LoadOptions::default()
    };
    let reference = io::from_state_dict(plain.clone(), None, &options).unwrap();
    let (_, inputs, logits) = fixture(2);
    assert!(gap(&reference.model, &inputs, &logits) < 1e-12);
    let other = open(&fixture(1).0, options.clone()).model;
    let metric = TensorSimilarity::new();
    let expected = metric
        .similarity(&reference.model, &reference.model)
        .unwrap();
    for prefix in [
        "module.",
        "_orig_mod.",
        "module._orig_mod.",
        "_orig_mod.module.",
    ] {
        let renamed = plain
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
            .collect();
        let file = io::from_state_dict(renamed, None, &options).unwrap();
        assert!(gap(&file.model, &inputs, &logits) < 1e-12, "{prefix}");
        assert_eq!(
            metric.similarity(&reference.model, &file.model).unwrap(),
            expected,
            "{prefix}"
        );
        let said = file
            .assumptions
            .iter()
            .find(|a| a.contains("framework prefix"))
            .unwrap_or_else(|| panic!("{prefix}: {:?}", file.assumptions));
        assert!(said.contains(prefix), "{said}");
        // Different depths stay incomparable, prefix or not.
        assert!(metric.similarity(&file.model, &other).is_err());
    }
    // A mixed state_dict: one half under module., one without.
    let mixed = plain
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let name = if i % 2 == 0 {
                format!("module.{k}")
            } else {
                k.clone()
            };
            (name, v.clone())
        })
        .collect();
    let err = io::from_state_dict(mixed, None, &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixed") && err.contains("module."), "{err}");
}

/// The TransformerLens-style fixture: its state_dict (values as PyTorch
/// holds them), its layout, token sequences and PyTorch's logits.
struct TlFixture {
    tensors: std::collections::HashMap<String, io::TensorData>,
    layout: serde_json::Value,
    /// One-hot token sequences, one position per row.
    inputs: Vec<DMatrix<f64>>,
    logits: Vec<DMatrix<f64>>,
}

fn tl_fixture() -> TlFixture {
    let path = common::files::fixtures().join("torch/tl_attention.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fn flatten(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
            x => out.push(x.as_f64().unwrap()),
        }
    }
    let tensors = json["state_dict"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| {
            let mut values = Vec::new();
            flatten(value, &mut values);
            let shape = json["shapes"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data = io::TensorData {
                dtype: io::Dtype::F64,
                shape,
                values,
            };
            (name.clone(), data)
        })
        .collect();
    let vocab = json["shapes"]["W_E"][0].as_u64().unwrap() as usize;
    let inputs = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seq| {
            let seq = seq.as_array().unwrap();
            let mut x = DMatrix::zeros(seq.len(), vocab);
            for (s, t) in seq.iter().enumerate() {
                x[(s, t.as_u64().unwrap() as usize)] = 1.0;
            }
            x
        })
        .collect();
    let logits = json["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seq| {
            let rows: Vec<Vec<f64>> = serde_json::from_value(seq.clone()).unwrap();
            DMatrix::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
        })
        .collect();
    TlFixture {
        tensors,
        layout: serde_json::json!({"version": 1, "blocks": json["layout"].clone()}),
        inputs,
        logits,
    }
}

impl TlFixture {
    /// The model with `edit` applied to the layout's blocks.
    fn read(&self, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> Result<ModelFile, Error> {
        let mut layout = self.layout.clone();
        edit(layout["blocks"].as_array_mut().unwrap());
        io::from_state_dict(
            self.tensors.clone(),
            Some(&layout.to_string()),
            &LoadOptions::default(),
        )
    }

    /// The largest gap between `model`'s outputs and PyTorch's logits,
    /// relative to the logits' size.
    fn gap(&self, model: &Model) -> f64 {
        self.inputs
            .iter()
            .zip(&self.logits)
            .map(|(x, y)| (model.forward_sequence(x).unwrap() - y).amax() / y.amax().max(1.0))
            .fold(0.0, f64::max)
    }
}

#[test]
fn a_transformerlens_style_module_through_its_layout_gives_pytorchs_logits() {
    let tl = tl_fixture();
    let file = tl.read(|_| {}).unwrap();
    assert!(file.model.is_sequence());
    // Two attention blocks between the embedding and the unembedding.
    assert_eq!(file.model.blocks().len(), 4);
    let g = tl.gap(&file.model);
    assert!(g < 1e-12, "gap to PyTorch's logits {g:e}");
    // Read canonically and written back, it is the same function and
    // weights: similarity 1 with its own canonical copy.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canonical.safetensors");
    io::save(&file.model, &path, Layout::Described).unwrap();
    let back = io::load(&path).unwrap();
    assert!(tl.gap(&back) < 1e-12);
    let metric = TensorSimilarity::new().with_context(4).unwrap();
    let s = metric.similarity(&file.model, &back).unwrap();
    assert!((s - 1.0).abs() < 1e-12, "{s}");
}

#[test]
fn the_stated_axes_are_what_is_read() {
    let tl = tl_fixture();
    // Layer 1's square [in, out] weights read as [out, in]: another model,
    // which PyTorch's logits refute (the axes are not a no-op).
    let flat = tl
        .read(|blocks| {
            let b = blocks[2].as_object_mut().unwrap();
            b.retain(|k, _| !k.ends_with("_axes"));
        })
        .unwrap();
    assert!(tl.gap(&flat.model) > 1e-2);
    // Layer 0's 3-D weights without axes: an error naming the tensor, its
    // role, and the key that would read it.
    let err = tl
        .read(|blocks| {
            let b = blocks[1].as_object_mut().unwrap();
            b.retain(|k, _| !k.ends_with("_axes"));
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.0.W_Q1") && err.contains("q1_axes") && err.contains("heads"),
        "{err}"
    );
    // A heads axis that disagrees with the block's heads.
    let err = tl
        .read(|blocks| blocks[1]["heads"] = serde_json::json!(4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("heads axis of size 4"), "{err}");
    // Axes that are not a weight's: two "d_model", or "heads" on a linear
    // block, or axes for a role the block does not name.
    for (block, key, axes) in [
        (
            1,
            "q1_axes",
            serde_json::json!(["d_model", "d_model", "d_head"]),
        ),
        (3, "weight_axes", serde_json::json!(["heads", "in", "out"])),
        (2, "q1_bias_axes", serde_json::json!(["heads", "d_head"])),
        (1, "q1_axes", serde_json::json!("heads, d_model, d_head")),
    ] {
        let err = tl
            .read(|blocks| blocks[block][key] = axes.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // "transpose" and "weight_axes" say the same thing: one only.
    let err = tl
        .read(|blocks| blocks[0]["weight_axes"] = serde_json::json!(["in", "out"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("transpose"), "{err}");
    // The unembedding's transposed weight read by "transpose" instead.
    let same = tl
        .read(|blocks| {
            let b = blocks[3].as_object_mut().unwrap();
            b.remove("weight_axes");
            b.insert("transpose".into(), serde_json::json!(true));
        })
        .unwrap();
    assert!(tl.gap(&same.model) < 1e-12);
}

#[test]
fn names_no_layout_fits_get_the_closest_layout_and_how_to_describe_the_model() {
    let tl = tl_fixture();
    // The user's own names beside embed.weight and unembed.weight: not
    // "needs the number of heads", but the closest layout and the fix.
    let mut tensors: std::collections::HashMap<String, io::TensorData> =
        std::collections::HashMap::new();
    tensors.insert("embed.weight".into(), tl.tensors["W_E"].clone());
    tensors.insert("unembed.weight".into(), tl.tensors["W_E"].clone());
    for (role, name) in [("W_Q", "blocks.0.W_Q1"), ("W_K", "blocks.0.W_K1")] {
        tensors.insert(format!("attn.{role}"), tl.tensors[name].clone());
    }
    for options in [
        LoadOptions::default(),
        LoadOptions {
            heads: Some(2),
            ..LoadOptions::default()
        },
    ] {
        let err = io::from_state_dict(tensors.clone(), None, &options)
            .unwrap_err()
            .to_string();
        for part in [
            "attention-only LM",
            "layers.0.q1.weight",
            "\"attn.W_Q\"",
            "layout=",
            "metadata",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
        assert!(!err.contains("heads") || err.contains("per-head"), "{err}");
    }
    // Names of no layout at all: every name listed, and the same advice.
    let other =
        std::collections::HashMap::from([("fc1.weight".to_owned(), tl.tensors["W_E"].clone())]);
    let err = io::from_state_dict(other, None, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fc1.weight") && err.contains("layout="),
        "{err}"
    );
}
