//! The research LM's normalisations (SPEC §8) against oracles that share
//! no code with the library.
//!
//! The fixtures are `tests/files/torch/norms/<case>/` written by
//! `make_norms.py` with real PyTorch: the research code's module names and
//! buffers (F32, `num_batches_tracked` I64), each with its run config, two
//! checkpoints and, in `expected.json`, the state dicts as numbers and the
//! logits of an independent forward that applies each norm as written.
//!
//! * **Logits**: the library's model (norms folded) against PyTorch's
//!   logits, to `1e-10` of their scale; and this file's own forward
//!   ([`research_forward`], norms as written, from the JSON state dict)
//!   against the same logits, which makes it an oracle for what follows.
//! * **Tensor metric**: the dense oracle of `seq_oracle` on the folded
//!   model, folded here by formula from the state dict, to `1e-9`.
//! * **Gaussian metric** (one attention layer, where it is exact): Monte
//!   Carlo with [`research_forward`] on Gaussian inputs, within 4 standard
//!   errors of its own sample.
//! * **Symmetry**: a twin that rescales the stream before a constant norm
//!   and undoes it with the norm's statistics has similarity 1; read
//!   without its norms, it does not.

mod common;
mod seq_oracle;

use std::collections::HashMap;
use std::path::PathBuf;

use nalgebra::{DMatrix, DVector};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use seq_oracle::{AttnParams, Block, LinearParams, MaskKind, SeqNet};
use serde_json::Value;
use tensor_similarity::io::{
    self, ConfigSource, Dtype, FileError, LoadOptions, ModelFile, NormPlace, NormReading,
    TensorData,
};
use tensor_similarity::{
    Error, GaussianSimilarity, RecursiveSimilarity, Spelling, TensorSimilarity,
};

/// The cases whose norms are constant at eval.
const CONSTANT: [&str; 6] = [
    "tok0_post_embed_pre_unembed",
    "tok0_pre_layer_quadratic",
    "batchnorm_post_embed_pre_layer",
    "batchnorm_pre_unembed",
    "tok0_eps",
    "tok0_untracked",
];

fn folder(case: &str) -> PathBuf {
    common::files::fixtures().join("torch/norms").join(case)
}

fn checkpoint(case: &str, step: usize) -> PathBuf {
    folder(case).join(format!("step_{step}.pt"))
}

fn expected(case: &str) -> Value {
    let text = std::fs::read_to_string(folder(case).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn open(case: &str, step: usize, options: &LoadOptions) -> Result<ModelFile, Error> {
    io::open(checkpoint(case, step), options)
}

/// A state dict as numbers: name → (shape, row-major values).
type StateDict = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn state_dict(value: &Value) -> StateDict {
    fn flatten(v: &Value, shape: &mut Vec<usize>, depth: usize, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                for item in items {
                    flatten(item, shape, depth + 1, out);
                }
            }
            other => out.push(other.as_f64().unwrap()),
        }
    }
    (value.as_object().unwrap().iter())
        .map(|(name, v)| {
            let (mut shape, mut values) = (Vec::new(), Vec::new());
            flatten(v, &mut shape, 0, &mut values);
            (name.clone(), (shape, values))
        })
        .collect()
}

fn matrix(sd: &StateDict, name: &str) -> DMatrix<f64> {
    let (shape, values) = &sd[name];
    DMatrix::from_row_slice(shape[0], shape[1], values)
}

fn vector(sd: &StateDict, name: &str) -> DVector<f64> {
    DVector::from_column_slice(&sd[name].1)
}

/// The run config's `"model"` keys the forward needs.
struct Config {
    heads: usize,
    layers: usize,
    alpha: f64,
    base: f64,
    quadratic: bool,
    kind: String,
    places: Vec<String>,
    eps: f64,
}

impl Config {
    fn of(expected: &Value) -> Self {
        let c = &expected["config"];
        let kind = c["norm_type"].as_str().unwrap().to_owned();
        let default_eps = if kind == "batchnorm" { 1e-5 } else { 1e-6 };
        Self {
            heads: c["n_head"].as_u64().unwrap() as usize,
            layers: c["n_layers"].as_u64().unwrap() as usize,
            alpha: c["attn_scale"].as_f64().unwrap(),
            base: c["rope_base"].as_f64().unwrap(),
            quadratic: c["attn_type"] == "quadratic",
            kind,
            places: (c["norm_places"].as_array().unwrap().iter())
                .map(|p| p.as_str().unwrap().to_owned())
                .collect(),
            eps: c["norm_kwargs"]["eps"].as_f64().unwrap_or(default_eps),
        }
    }

    fn at(&self, place: &str) -> bool {
        self.places.iter().any(|p| p == place) || (place == "pre_unembed" && self.at_layer())
    }

    fn at_layer(&self) -> bool {
        self.places.iter().any(|p| p == "pre_layer")
    }

    /// The norm under `module` as the affine map it is at eval, `(g, h)`.
    fn affine(&self, sd: &StateDict, module: &str, d: usize) -> (DVector<f64>, DVector<f64>) {
        match self.kind.as_str() {
            "tok0_batch" => {
                let e = sd[&format!("{module}.running_mean_energy")].1[0];
                (
                    DVector::from_element(d, 1.0 / (e + self.eps).sqrt()),
                    DVector::zeros(d),
                )
            }
            "batchnorm" => {
                let p = |n: &str| vector(sd, &format!("{module}.bn.{n}"));
                let (mean, var, w, b) =
                    (p("running_mean"), p("running_var"), p("weight"), p("bias"));
                let g = DVector::from_fn(d, |i, _| w[i] / (var[i] + self.eps).sqrt());
                let h = DVector::from_fn(d, |i, _| b[i] - g[i] * mean[i]);
                (g, h)
            }
            other => panic!("{other} is not constant"),
        }
    }

    /// The norm under `module` applied to each row of `x`, as written.
    fn norm(&self, sd: &StateDict, module: &str, x: &DMatrix<f64>) -> DMatrix<f64> {
        let d = x.ncols();
        DMatrix::from_fn(x.nrows(), d, |s, i| match self.kind.as_str() {
            "tok0_batch" => {
                x[(s, i)] / (sd[&format!("{module}.running_mean_energy")].1[0] + self.eps).sqrt()
            }
            "batchnorm" => {
                let p = |n: &str| sd[&format!("{module}.bn.{n}")].1[i];
                p("weight") * (x[(s, i)] - p("running_mean")) / (p("running_var") + self.eps).sqrt()
                    + p("bias")
            }
            other => panic!("{other}"),
        })
    }
}

/// The research LM's forward on real rows `x` `[n, vocab]` (one-hot tokens
/// are a special case), each norm applied as the research code writes it
/// (`without_norms`: every norm the identity), from SPEC §7 and §8.
fn research_forward(
    sd: &StateDict,
    c: &Config,
    x: &DMatrix<f64>,
    without_norms: bool,
) -> DMatrix<f64> {
    let norm = |module: &str, x: &DMatrix<f64>| {
        if without_norms {
            x.clone()
        } else {
            c.norm(sd, module, x)
        }
    };
    let mut h = x * matrix(sd, "embed.weight");
    if c.at("post_embed") {
        h = norm("embed_norm", &h);
    }
    let (n, d) = h.shape();
    let e = d / c.heads;
    let rot = |v: &[f64], s: usize| seq_oracle::rope(v, s, c.base);
    for i in 0..c.layers {
        let read = if c.at_layer() {
            norm(&format!("layer_norms.{i}"), &h)
        } else {
            h.clone()
        };
        let names = if c.quadratic {
            ["q", "k", "q", "k"]
        } else {
            ["q1", "k1", "q2", "k2"]
        };
        let proj = |name: &str| -> DMatrix<f64> {
            let w = matrix(sd, &format!("layers.{i}.{name}.weight"));
            let mut y = &read * w.transpose();
            if let Some((_, b)) = sd.get(&format!("layers.{i}.{name}.bias")) {
                for mut row in y.row_iter_mut() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v += b[j];
                    }
                }
            }
            y
        };
        let [q1, k1, q2, k2] = names.map(proj);
        let v = proj("v");
        let o = matrix(sd, &format!("layers.{i}.o.weight"));
        let mut z = DMatrix::zeros(n, d);
        for head in 0..c.heads {
            let r = head * e..(head + 1) * e;
            let part = |m: &DMatrix<f64>, s: usize| {
                rot(&m.row(s).iter().copied().collect::<Vec<_>>()[r.clone()], s)
            };
            for s in 0..n {
                for t in 0..=s {
                    let dot =
                        |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
                    let score = dot(&part(&q1, s), &part(&k1, t))
                        * dot(&part(&q2, s), &part(&k2, t))
                        / (e * e) as f64;
                    for j in r.clone() {
                        z[(s, j)] += score * v[(t, j)];
                    }
                }
            }
        }
        h += c.alpha * z * o.transpose();
    }
    if c.at("pre_unembed") {
        h = norm("final_norm", &h);
    }
    h * matrix(sd, "unembed.weight").transpose()
}

fn one_hot(tokens: &[usize], vocab: usize) -> DMatrix<f64> {
    DMatrix::from_fn(tokens.len(), vocab, |s, j| {
        f64::from(u8::from(tokens[s] == j))
    })
}

fn logits(value: &Value) -> DMatrix<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(value.clone()).unwrap();
    DMatrix::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

/// `found` agrees with `want` to `1e-10` of `want`'s scale.
fn assert_logits(found: &DMatrix<f64>, want: &DMatrix<f64>, what: &str) {
    let scale = want.amax().max(1.0);
    let err = (found - want).amax();
    eprintln!("{what}: logits within {:.1e} of their scale", err / scale);
    assert!(
        err <= 1e-10 * scale,
        "{what}: logits off by {err:e} (scale {scale})"
    );
}

#[test]
fn logits_equal_pytorch_for_every_norm_and_place() {
    for case in CONSTANT {
        let expected = expected(case);
        let sd = state_dict(&expected["state_dicts"][0]);
        let c = Config::of(&expected);
        let file = open(case, 1, &LoadOptions::default()).unwrap();
        let vocab = file.model.input_width();
        for seq in expected["sequences"].as_array().unwrap() {
            let tokens: Vec<usize> = serde_json::from_value(seq["tokens"].clone()).unwrap();
            let x = one_hot(&tokens, vocab);
            let want = logits(&seq["logits"]);
            assert_logits(&file.model.forward_sequence(&x).unwrap(), &want, case);
            // This file's forward is PyTorch's too: an oracle below.
            assert_logits(&research_forward(&sd, &c, &x, false), &want, case);
            // Read without its norms, the model is the one without them.
            let bare = open(
                case,
                1,
                &LoadOptions {
                    ignore_norms: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let without = logits(&seq["logits_without_norms"]);
            assert_logits(&bare.model.forward_sequence(&x).unwrap(), &without, case);
            // (Untracked, the stored energy is its initial 1: nearly no norm.)
            if case != "tok0_untracked" {
                assert!(
                    (&want - &without).amax() > 1e-3,
                    "{case}: the norms change nothing"
                );
            }
        }
    }
}

#[test]
fn every_norm_is_listed_with_its_place_and_eps() {
    let f = open("batchnorm_post_embed_pre_layer", 1, &LoadOptions::default()).unwrap();
    let places: Vec<NormPlace> = f.norms.iter().map(|n| n.place).collect();
    assert_eq!(
        places,
        [
            NormPlace::PostEmbed,
            NormPlace::PreLayer(0),
            NormPlace::PreLayer(1),
            NormPlace::PreUnembed
        ]
    );
    assert!(
        f.norms
            .iter()
            .all(|n| n.kind == "batchnorm" && n.eps == 1e-5)
    );
    assert!(
        f.norms
            .iter()
            .all(|n| matches!(n.reading, NormReading::Folded { shift: Some(_), .. }))
    );
    assert!(!f.norms_removed());
    // The counters are read, as I64, and are not parameters.
    let counters: Vec<_> = f
        .tensors
        .iter()
        .filter(|t| t.name.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(counters.len(), 4);
    assert!(
        counters
            .iter()
            .all(|t| t.dtype == Dtype::I64 && t.role == "norm_counter")
    );
    assert!(
        f.assumptions
            .iter()
            .any(|a| a.starts_with("norm_kwargs.eps absent: 1e-5")),
        "{:?}",
        f.assumptions
    );

    let f = open("tok0_eps", 1, &LoadOptions::default()).unwrap();
    assert!(f.norms.iter().all(|n| n.eps == 0.5));
    assert!(
        !f.assumptions.iter().any(|a| a.contains("eps")),
        "{:?}",
        f.assumptions
    );
    let NormReading::Folded { scale, shift: None } = f.norms[0].reading else {
        panic!()
    };
    let e = expected("tok0_eps")["state_dicts"][0]["embed_norm.running_mean_energy"][0]
        .as_f64()
        .unwrap();
    assert!((scale.0 - 1.0 / (e + 0.5).sqrt()).abs() < 1e-15);

    // Saved before its first batch: read with the stored buffers, and said.
    let f = open("tok0_untracked", 1, &LoadOptions::default()).unwrap();
    assert!(
        f.assumptions
            .iter()
            .any(|a| a.starts_with("final_norm.num_batches_tracked = 0")),
        "{:?}",
        f.assumptions
    );
    let tracked = open("tok0_post_embed_pre_unembed", 1, &LoadOptions::default()).unwrap();
    assert!(
        !tracked
            .assumptions
            .iter()
            .any(|a| a.contains("num_batches_tracked"))
    );

    let removed = open(
        "tok0_eps",
        1,
        &LoadOptions {
            ignore_norms: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(removed.norms_removed());
    assert!(
        removed
            .norms
            .iter()
            .all(|n| n.reading == NormReading::Removed)
    );
}

/// The folded model as the dense oracle's plain data, folded here by
/// formula: the embedding `diag(g) Eᵀ` with bias `h`, each layer's
/// `q/k/v` `W diag(g)` with bias `b + W h`, the unembedding likewise.
fn folded_net(sd: &StateDict, c: &Config) -> SeqNet {
    let table = matrix(sd, "embed.weight");
    let d = table.ncols();
    let mut embed = LinearParams {
        w: table.transpose(),
        b: None,
    };
    if c.at("post_embed") {
        let (g, h) = c.affine(sd, "embed_norm", d);
        embed.w = DMatrix::from_diagonal(&g) * embed.w;
        embed.b = Some(h);
    }
    let mut blocks = vec![Block::Linear(embed)];
    for i in 0..c.layers {
        let (g, h) = if c.at_layer() {
            c.affine(sd, &format!("layer_norms.{i}"), d)
        } else {
            (DVector::from_element(d, 1.0), DVector::zeros(d))
        };
        let read = |name: &str| {
            let w = matrix(sd, &format!("layers.{i}.{name}.weight"));
            let b = sd
                .get(&format!("layers.{i}.{name}.bias"))
                .map(|(_, b)| DVector::from_column_slice(b));
            let shifted = &w * &h + b.unwrap_or_else(|| DVector::zeros(w.nrows()));
            (&w * DMatrix::from_diagonal(&g), Some(shifted))
        };
        let names = if c.quadratic {
            ["q", "k", "q", "k"]
        } else {
            ["q1", "k1", "q2", "k2"]
        };
        let [(q1, bq1), (k1, bk1), (q2, bq2), (k2, bk2)] = names.map(read);
        let (v, bv) = read("v");
        blocks.push(Block::Attention(AttnParams {
            heads: c.heads,
            q1,
            k1,
            q2,
            k2,
            v,
            o: matrix(sd, &format!("layers.{i}.o.weight")),
            bq1,
            bk1,
            bq2,
            bk2,
            bv,
            bo: None,
            rotary: Some(c.base),
            mask: Some(MaskKind::Causal),
            score_scale: None,
            alpha: Some(c.alpha),
            skip: Some(1.0),
            quadratic: false,
        }));
    }
    let mut unembed = LinearParams {
        w: matrix(sd, "unembed.weight"),
        b: None,
    };
    if c.at("pre_unembed") {
        let (g, h) = c.affine(sd, "final_norm", d);
        unembed.b = Some(&unembed.w * h);
        unembed.w = &unembed.w * DMatrix::from_diagonal(&g);
    }
    blocks.push(Block::Linear(unembed));
    SeqNet { blocks }
}

#[test]
fn tensor_similarity_is_the_dense_oracle_on_the_folded_model() {
    let n = 2;
    let metric = TensorSimilarity::new().with_context(n).unwrap();
    for case in CONSTANT {
        let expected = expected(case);
        let c = Config::of(&expected);
        let [a, b] = [0, 1].map(|k| folded_net(&state_dict(&expected["state_dicts"][k]), &c));
        // The oracle's folded model is PyTorch's (at the fixture's tokens).
        let seq = &expected["sequences"][0];
        let tokens: Vec<usize> = serde_json::from_value(seq["tokens"].clone()).unwrap();
        assert_logits(
            &a.forward(&one_hot(&tokens, 5)),
            &logits(&seq["logits"]),
            case,
        );
        let want = seq_oracle::similarity(&a, &b, n);
        let (fa, fb) = (
            open(case, 1, &Default::default()).unwrap(),
            open(case, 2, &Default::default()).unwrap(),
        );
        let got = metric.similarity(&fa.model, &fb.model).unwrap();
        eprintln!("{case}: tensor similarity {got:.12}, dense oracle {want:.12}");
        assert!(
            (got - want).abs() < 1e-9,
            "{case}: library {got}, oracle {want}"
        );
        assert!(
            got < 0.999,
            "{case}: a pair too alike to test anything ({got})"
        );
    }
}

/// `⟨A,B⟩`, `⟨A,A⟩`, `⟨B,B⟩` under i.i.d. `N(0, I)` rows by Monte Carlo
/// with [`research_forward`]: (mean, standard error) of each.
fn monte_carlo(case: &str, n: usize, samples: usize) -> [(f64, f64); 3] {
    let expected = expected(case);
    let c = Config::of(&expected);
    let [a, b] = [0, 1].map(|k| state_dict(&expected["state_dicts"][k]));
    let vocab = a["embed.weight"].0[0];
    let chunks = 32;
    let sums: Vec<[[f64; 2]; 3]> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut r = common::rng(7000 + chunk as u64);
            let mut s = [[0.0; 2]; 3];
            for _ in 0..samples / chunks {
                let x = DMatrix::from_fn(n, vocab, |_, _| StandardNormal.sample(&mut r));
                let (ya, yb) = (
                    research_forward(&a, &c, &x, false),
                    research_forward(&b, &c, &x, false),
                );
                for (acc, v) in s.iter_mut().zip([ya.dot(&yb), ya.dot(&ya), yb.dot(&yb)]) {
                    acc[0] += v;
                    acc[1] += v * v;
                }
            }
            s
        })
        .collect();
    let total = (samples / chunks * chunks) as f64;
    [0, 1, 2].map(|i| {
        let s: f64 = sums.iter().map(|c| c[i][0]).sum();
        let ss: f64 = sums.iter().map(|c| c[i][1]).sum();
        let mean = s / total;
        let var = (ss / total - mean * mean) * total / (total - 1.0);
        (mean, (var / total).sqrt())
    })
}

#[test]
fn gaussian_similarity_agrees_with_monte_carlo_on_the_norms_as_written() {
    let n = 2;
    let metric = GaussianSimilarity::new().with_context(n).unwrap();
    for case in [
        "tok0_post_embed_pre_unembed",
        "batchnorm_pre_unembed",
        "tok0_eps",
    ] {
        let (fa, fb) = (
            open(case, 1, &Default::default()).unwrap(),
            open(case, 2, &Default::default()).unwrap(),
        );
        let got = [
            metric.inner_product(&fa.model, &fb.model).unwrap().to_f64(),
            metric.squared_norm(&fa.model).unwrap().to_f64(),
            metric.squared_norm(&fb.model).unwrap().to_f64(),
        ];
        assert!(
            metric.report(&fa.model, &fb.model).unwrap().exact,
            "{case}: one layer is exact"
        );
        let mc = monte_carlo(case, n, 200_000);
        for (what, g, (mean, se)) in [
            ("<A,B>", got[0], mc[0]),
            ("<A,A>", got[1], mc[1]),
            ("<B,B>", got[2], mc[2]),
        ] {
            let z = (g - mean) / se;
            eprintln!(
                "{case}: {what} library {g:.6e}, Monte Carlo {mean:.6e} ± {se:.1e} (z = {z:.2})"
            );
            assert!(
                z.abs() < 4.0,
                "{case}: {what} library {g}, Monte Carlo {mean} ± {se} (z = {z:.2})"
            );
        }
    }
}

/// The state dict as `TensorData` (F64; counters I64).
fn tensors(sd: &StateDict) -> HashMap<String, TensorData> {
    (sd.iter())
        .map(|(name, (shape, values))| {
            let dtype = if name.ends_with("num_batches_tracked") {
                Dtype::I64
            } else {
                Dtype::F64
            };
            (
                name.clone(),
                TensorData {
                    dtype,
                    shape: shape.clone(),
                    values: values.clone(),
                },
            )
        })
        .collect()
}

fn from_state_dict(sd: &StateDict, expected: &Value, ignore_norms: bool) -> ModelFile {
    let options = LoadOptions {
        config: Some(ConfigSource::Content(
            serde_json::json!({"model": expected["config"]}),
        )),
        ignore_norms,
        ..Default::default()
    };
    io::from_state_dict(tensors(sd), None, &options).unwrap()
}

/// A twin that scales the embedding by `c` and the post_embed norm's
/// statistics so that the normed stream is unchanged computes the same
/// function: similarity 1. Without its norms it is another function.
#[test]
fn rescaling_before_a_constant_norm_is_a_symmetry_and_ignoring_the_norm_breaks_it() {
    let metric = TensorSimilarity::new().with_context(3).unwrap();
    for case in [
        "tok0_post_embed_pre_unembed",
        "batchnorm_post_embed_pre_layer",
    ] {
        let expected = expected(case);
        let c = Config::of(&expected);
        let a = state_dict(&expected["state_dicts"][0]);
        let mut b = a.clone();
        let k = 3.0;
        let mut scale = |name: &str, f: &dyn Fn(f64) -> f64| {
            for v in &mut b.get_mut(name).unwrap().1 {
                *v = f(*v);
            }
        };
        scale("embed.weight", &|v| k * v);
        if c.kind == "tok0_batch" {
            scale("embed_norm.running_mean_energy", &|e| {
                k * k * (e + c.eps) - c.eps
            });
        } else {
            scale("embed_norm.bn.running_mean", &|m| k * m);
            scale("embed_norm.bn.running_var", &|v| {
                k * k * (v + c.eps) - c.eps
            });
        }
        let (fa, fb) = (
            from_state_dict(&a, &expected, false),
            from_state_dict(&b, &expected, false),
        );
        let sim = metric.similarity(&fa.model, &fb.model).unwrap();
        assert!(
            (sim - 1.0).abs() < 1e-12,
            "{case}: the twin has similarity {sim}"
        );
        let (fa, fb) = (
            from_state_dict(&a, &expected, true),
            from_state_dict(&b, &expected, true),
        );
        let sim = metric.similarity(&fa.model, &fb.model).unwrap();
        assert!(
            sim < 0.999,
            "{case}: without its norms the twin has similarity {sim}"
        );
    }
}

fn refused(kind: &str, extra: &[(&str, Value)]) -> FileError {
    let expected = expected("tok0_post_embed_pre_unembed");
    let mut config = expected["config"].clone();
    config["norm_type"] = kind.into();
    for (k, v) in extra {
        config[*k] = v.clone();
    }
    let options = LoadOptions {
        config: Some(ConfigSource::Content(serde_json::json!({"model": config}))),
        ..Default::default()
    };
    match open("tok0_post_embed_pre_unembed", 1, &options) {
        Err(Error::File { source, .. }) => source,
        other => panic!("{kind}: {other:?}"),
    }
}

#[test]
fn norms_that_depend_on_the_input_are_refused_by_name() {
    for kind in [
        "rmsnorm",
        "layernorm",
        "maxrmsnorm",
        "causal_maxrmsnorm",
        "tok0",
    ] {
        let e = refused(kind, &[]);
        let FileError::InputDependentNorm { found, .. } = &e else {
            panic!("{kind}: {e}")
        };
        assert!(
            found.ends_with(&format!("model.norm_type is {kind:?}")),
            "{found}"
        );
        let text = e.to_string();
        assert!(
            text.contains("LoadOptions::ignore_norms") && !text.contains('\n'),
            "{text}"
        );
        // Each caller reads its own spelling of the option and the config.
        let python = e.spelled(Spelling::Python).to_string();
        assert!(
            python.starts_with("config (the dict given as config=): model.norm_type is")
                && python.contains("ignore_norms= reads the model without its norms"),
            "{python}"
        );
    }
    let e = refused(
        "tok0_batch",
        &[(
            "norm_kwargs",
            serde_json::json!({"use_running_stats": false}),
        )],
    );
    assert!(
        e.to_string()
            .contains("norm_kwargs.use_running_stats is false"),
        "{e}"
    );
    let e = refused(
        "batchnorm",
        &[(
            "norm_kwargs",
            serde_json::json!({"track_running_stats": false}),
        )],
    );
    assert!(
        e.to_string()
            .contains("norm_kwargs.track_running_stats is false"),
        "{e}"
    );
    // An argument the research constructor does not take is an error.
    let e = refused(
        "tok0_batch",
        &[(
            "norm_kwargs",
            serde_json::json!({"elementwise_affine": true}),
        )],
    );
    assert!(
        e.to_string()
            .contains("\"elementwise_affine\" is not an argument"),
        "{e}"
    );

    // The rmsnorm checkpoint itself: refused, or read without its norms.
    let e = open("rmsnorm", 1, &Default::default()).unwrap_err();
    assert!(
        e.to_string().contains("model.norm_type is \"rmsnorm\""),
        "{e}"
    );
    let options = LoadOptions {
        ignore_norms: true,
        ..Default::default()
    };
    let f = open("rmsnorm", 1, &options).unwrap();
    assert!(f.norms_removed());
    let expected = expected("rmsnorm");
    for seq in expected["sequences"].as_array().unwrap() {
        let tokens: Vec<usize> = serde_json::from_value(seq["tokens"].clone()).unwrap();
        let found = f.model.forward_sequence(&one_hot(&tokens, 5)).unwrap();
        assert_logits(&found, &logits(&seq["logits_without_norms"]), "rmsnorm");
    }
}

/// The config and the tensors must agree on the norms.
#[test]
fn norms_the_config_and_the_tensors_disagree_on_are_errors() {
    let expected = expected("tok0_post_embed_pre_unembed");
    let with = |places: Value| {
        let mut config = expected["config"].clone();
        config["norm_places"] = places;
        LoadOptions {
            config: Some(ConfigSource::Content(serde_json::json!({"model": config}))),
            ..Default::default()
        }
    };
    let e = open(
        "tok0_post_embed_pre_unembed",
        1,
        &with(serde_json::json!(["pre_unembed"])),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("puts no norm at post_embed, but the checkpoint has embed_norm."),
        "{e}"
    );
    let e = open(
        "tok0_post_embed_pre_unembed",
        1,
        &with(serde_json::json!(["post_embed", "pre_layer"])),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("layer_norms.0.running_mean_energy"),
        "{e}"
    );
    let e = open(
        "tok0_post_embed_pre_unembed",
        1,
        &with(serde_json::json!(["before_layer"])),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("\"before_layer\" is not post_embed, pre_layer or pre_unembed"),
        "{e}"
    );
    let mut config = expected["config"].clone();
    config["norm_type"] = "batchnorm".into();
    let options = LoadOptions {
        config: Some(ConfigSource::Content(serde_json::json!({"model": config}))),
        ..Default::default()
    };
    let e = open("tok0_post_embed_pre_unembed", 1, &options).unwrap_err();
    assert!(
        e.to_string()
            .contains("is batchnorm, whose embed_norm holds"),
        "{e}"
    );
}
