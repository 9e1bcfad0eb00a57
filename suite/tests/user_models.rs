//! Models as users write them (issue 27), against the logits PyTorch
//! computed for the same `nn.Module` (`tests/files/torch/make_additive.py`)
//! and against a dense oracle:
//!
//! * bilinear blocks with an output scale `α` and a skip weight `r` (SPEC
//!   §1: `y = α·(D(Lx ∘ Rx) + b_D) + r·x`), such as the additive residual
//!   `x + D(Lx ∘ Rx)` under the embed/body/head names;
//! * the framework prefixes trainers leave on every name (`module.`,
//!   `_orig_mod.`).

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
