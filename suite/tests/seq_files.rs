//! SPEC §8: sequence models in files. The metadata layout round-trips every
//! attention option; the two research layouts and their run configs are read
//! as the research code computes, checked against the oracle's own forward
//! pass on the tensors as written (`tests/seq_oracle`, no library code), and
//! every config key is honoured or refused by name.

mod common;
mod seq_library;
mod seq_oracle;

use std::path::{Path, PathBuf};

use common::files::{Raw, logits_case, one_hot, raw, row_major, write_file};
use common::{gaussian_matrix, gaussian_vector, rng};
use nalgebra::{DMatrix, DVector};
use safetensors::Dtype as St;
use seq_oracle::{AttnOptions, AttnParams, BilinearParams, Block, LinearParams, MaskKind, SeqNet};
use tensor_similarity::io::{self, ConfigHint, Dtype, FileError, Layout, LoadOption, LoadOptions};
use tensor_similarity::{Error, Mask, RecursiveSimilarity, TensorSimilarity};

fn file_error(e: Error) -> FileError {
    match e {
        Error::File { source, .. } => source,
        other => panic!("expected a file error, got {other}"),
    }
}

/// Largest entry of `|a − b|` over the largest of `|a|`.
fn rel_diff(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    (a - b).amax() / a.amax().max(1e-300)
}

// ---------------------------------------------------------------------------
// The metadata layout

/// Attention blocks with every option, between position-wise blocks.
fn varied_nets() -> Vec<SeqNet> {
    let mut nets = Vec::new();
    let masks = [
        None,
        Some(MaskKind::Full),
        Some(MaskKind::Diagonal),
        Some(MaskKind::Causal),
    ];
    for (i, mask) in masks.into_iter().enumerate() {
        let mut r = rng(40 + i as u64);
        let o = AttnOptions {
            heads: 1 + i % 2,
            e: 2,
            ev: 1 + i % 3,
            qk_bias: i != 1,
            v_bias: i % 2 == 0,
            o_bias: i == 3,
            rotary: [Some(10_000.0), None, Some(37.5), Some(500.0)][i],
            mask,
            score_scale: [None, Some(2.5), None, Some(0.75)][i],
            alpha: [None, Some(0.35), Some(0.5), Some(1.5)][i],
            skip: [None, Some(1.0), None, Some(0.25)][i],
            quadratic: i == 2,
            scale: 1.0,
        };
        let d = 3;
        let mut mlp = BilinearParams::random(&mut r, d, 4, true, 0.5, 1.0);
        mlp.bd = Some(gaussian_vector(&mut r, d, 0.5));
        nets.push(SeqNet {
            blocks: vec![
                Block::Linear(LinearParams::random(&mut r, d, 2, i % 2 == 0, 1.0)),
                Block::Attention(AttnParams::random(&mut r, d, &o)),
                Block::Bilinear(mlp),
                Block::Linear(LinearParams::random(&mut r, 2, d, true, 1.0)),
            ],
        });
    }
    nets
}

#[test]
fn metadata_round_trips_every_attention_option() {
    let dir = tempfile::tempdir().unwrap();
    let x = gaussian_matrix(&mut rng(9), 4, 2, 1.0);
    for (i, net) in varied_nets().iter().enumerate() {
        let model = seq_library::model(net);
        let path = dir.path().join(format!("seq-{i}.safetensors"));
        io::save(&model, &path, Layout::Described).unwrap();
        let back = io::open(&path, &LoadOptions::default()).unwrap();
        assert!(back.model.is_sequence());
        assert_eq!(back.layout, Layout::Described);
        // The same numbers in the same arithmetic: bit for bit.
        let (y, y_back) = (
            seq_library::forward(&model, &x),
            seq_library::forward(&back.model, &x),
        );
        assert_eq!(y, y_back, "net {i}");
        // And the oracle agrees with both.
        assert!(rel_diff(&net.forward(&x), &y_back) < 1e-12, "net {i}");
        let s = TensorSimilarity::new().with_context(3).unwrap();
        assert!((s.similarity(&model, &back.model).unwrap() - 1.0).abs() < 1e-12);
        // F32 storage rounds each weight once, and only that.
        let path32 = dir.path().join(format!("seq-{i}-f32.safetensors"));
        io::save_with_dtype(&model, &path32, Layout::Described, Dtype::F32).unwrap();
        let back32 = io::load(&path32).unwrap();
        assert!(rel_diff(&y, &seq_library::forward(&back32, &x)) < 1e-5);
    }
}

#[test]
fn a_position_wise_sequence_model_stays_one() {
    let mut r = rng(3);
    let net = SeqNet {
        blocks: vec![
            Block::Linear(LinearParams::random(&mut r, 3, 2, true, 1.0)),
            Block::Bilinear(BilinearParams::random(&mut r, 3, 3, true, 1.0, 1.0)),
        ],
    };
    let model = seq_library::model(&net);
    assert!(model.is_sequence() && !model.mixes_positions());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw.safetensors");
    io::save(&model, &path, Layout::Described).unwrap();
    assert!(io::load(&path).unwrap().is_sequence());
    // The vector model of the same blocks is not marked.
    let vector = seq_library::vector_model(&net);
    io::save(&vector, &path, Layout::Described).unwrap();
    assert!(!io::load(&path).unwrap().is_sequence());
    // Research layouts have no place for the flag or attention.
    for layout in [
        Layout::EmbedBodyHead,
        Layout::BiLinearProjection,
        Layout::Transformer,
        Layout::AttentionLm,
    ] {
        let e = io::save(&model, &path, layout).unwrap_err();
        assert!(
            matches!(file_error(e), FileError::Unsupported { .. }),
            "{layout:?}"
        );
    }
}

#[test]
fn a_given_mask_matrix_is_refused_on_save() {
    let mut r = rng(5);
    let o = AttnOptions {
        mask: Some(MaskKind::Matrix(DMatrix::from_element(2, 2, 0.5))),
        ..AttnOptions::default()
    };
    let net = SeqNet {
        blocks: vec![Block::Attention(AttnParams::random(&mut r, 4, &o))],
    };
    let dir = tempfile::tempdir().unwrap();
    let e = io::save(
        &seq_library::model(&net),
        dir.path().join("m.safetensors"),
        Layout::Described,
    )
    .unwrap_err();
    match file_error(e) {
        FileError::Unsupported { reason, .. } => assert!(reason.contains("mask"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn a_transposed_linear_block_reads_an_embedding_table() {
    // A [vocab, d] table used as W = tableᵀ: token t's embedding is row t.
    let table = DMatrix::from_fn(5, 3, |i, j| (i * 3 + j) as f64 - 6.5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let meta = r#"{"version": 1, "sequence": true, "blocks": [{"kind": "linear", "weight": "embed", "transpose": true}]}"#;
    write_file(
        &path,
        &[raw("embed", &[5, 3], row_major(&table))],
        St::F64,
        Some(meta),
    );
    let m = io::load(&path).unwrap();
    assert!(m.is_sequence());
    assert_eq!((m.input_width(), m.output_width()), (5, 3));
    let tokens = DMatrix::from_fn(2, 5, |s, t| f64::from(u8::from(t == [4, 1][s])));
    let y = m.forward_sequence(&tokens).unwrap();
    assert_eq!(y.row(0), table.row(4));
    assert_eq!(y.row(1), table.row(1));
    // Without transpose the same tensor is a 5 → 3 map's transpose: 3 → 5.
    write_file(
        &path,
        &[raw("embed", &[5, 3], row_major(&table))],
        St::F64,
        Some(&meta.replace("\"transpose\": true", "\"transpose\": false")),
    );
    assert_eq!(io::load(&path).unwrap().input_width(), 3);
}

#[test]
fn metadata_attention_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let (d, he) = (4, 4);
    let w = |name: &str, r: usize, c: usize| raw(name, &[r, c], vec![0.25; r * c]);
    let meta = |heads: usize, rotary: &str| {
        format!(
            r#"{{"version": 1, "blocks": [{{"kind": "attention", "q1": "q1", "k1": "k1", "q2": "q2", "k2": "k2", "v": "v", "o": "o", "heads": {heads}, "rotary_base": {rotary}}}]}}"#
        )
    };
    let all = |v_rows: usize| {
        vec![
            w("q1", he, d),
            w("k1", he, d),
            w("q2", he, d),
            w("k2", he, d),
            w("v", v_rows, d),
            w("o", d, v_rows),
        ]
    };
    // Heads that do not divide the rows.
    write_file(&path, &all(4), St::F32, Some(&meta(3, "null")));
    let e = file_error(io::load(&path).unwrap_err());
    assert!(
        matches!(&e, FileError::Block { source, .. } if matches!(**source, Error::Heads { .. })),
        "{e}"
    );
    // Odd e with rotary: 4 heads of width 1.
    write_file(&path, &all(4), St::F32, Some(&meta(4, "10000")));
    let e = file_error(io::load(&path).unwrap_err());
    assert!(
        matches!(&e, FileError::Block { source, .. } if matches!(**source, Error::OddRotaryWidth { .. })),
        "{e}"
    );
    // A missing tensor, by name and role.
    let mut missing = all(4);
    missing.retain(|t| t.name != "k2");
    write_file(&path, &missing, St::F32, Some(&meta(2, "null")));
    match file_error(io::load(&path).unwrap_err()) {
        FileError::MissingTensor { tensor, role } => {
            assert_eq!(tensor, "k2");
            assert!(role.contains("attention") && role.contains("k2"), "{role}");
        }
        other => panic!("{other}"),
    }
    // A wrong shape.
    let mut wrong = all(4);
    wrong[3] = w("k2", he, d + 1);
    write_file(&path, &wrong, St::F32, Some(&meta(2, "null")));
    assert!(matches!(
        file_error(io::load(&path).unwrap_err()),
        FileError::TensorShape { tensor, .. } if tensor == "k2"
    ));
    // The well-formed file loads.
    write_file(&path, &all(4), St::F32, Some(&meta(2, "null")));
    assert!(io::load(&path).unwrap().is_sequence());
}

// ---------------------------------------------------------------------------
// The research Transformer

/// The research `Transformer`'s tensors under its names.
fn transformer_tensors(net: &SeqNet) -> Vec<Raw> {
    let mut out = Vec::new();
    let mut put = |name: String, m: &DMatrix<f64>| {
        out.push(raw(&name, &[m.nrows(), m.ncols()], row_major(m)));
    };
    let mut biases = Vec::new();
    let last = net.blocks.len() - 1;
    for (i, b) in net.blocks.iter().enumerate() {
        let layer = (i.max(1) - 1) / 2;
        match b {
            Block::Linear(p) => put(
                if i == 0 {
                    "embed.weight"
                } else {
                    "head.weight"
                }
                .into(),
                &p.w,
            ),
            Block::Attention(a) => {
                let p = format!("body.{layer}.attn.");
                for (r, m) in ["q1", "k1", "q2", "k2", "v", "o"]
                    .iter()
                    .zip([&a.q1, &a.k1, &a.q2, &a.k2, &a.v, &a.o])
                {
                    put(format!("{p}{r}.weight"), m);
                }
                for (r, b) in ["q1", "k1", "q2", "k2"]
                    .iter()
                    .zip([&a.bq1, &a.bk1, &a.bq2, &a.bk2])
                {
                    if let Some(b) = b {
                        biases.push(raw(
                            &format!("{p}{r}.bias"),
                            &[b.len()],
                            b.as_slice().to_vec(),
                        ));
                    }
                }
            }
            Block::Bilinear(m) => {
                let p = format!("body.{layer}.mlp.");
                put(format!("{p}l.weight"), &m.l);
                put(format!("{p}r.weight"), &m.r);
                put(format!("{p}d.weight"), m.d.as_ref().unwrap());
                let bd = m.bd.as_ref().unwrap();
                biases.push(raw(
                    &format!("{p}d.bias"),
                    &[bd.len()],
                    bd.as_slice().to_vec(),
                ));
            }
        }
        assert!(i <= last);
    }
    out.extend(biases);
    out
}

fn transformer_net(seed: u64, alpha: f64, rotary: Option<f64>, mask: Option<MaskKind>) -> SeqNet {
    let attn = AttnOptions {
        heads: 2,
        e: 2,
        ev: 2,
        qk_bias: true,
        v_bias: false,
        o_bias: false,
        rotary,
        mask,
        ..AttnOptions::default()
    };
    SeqNet::transformer(&mut rng(seed), 3, 4, 2, 2, 3, alpha, &attn)
}

fn write_json(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// The research `Transformer`'s rotary base: its `Attention` hard-codes it
/// (SPEC §8), whatever the config says.
const TRANSFORMER_ROTARY: Option<f64> = Some(10_000.0);

#[test]
fn the_research_transformer_reads_as_its_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let x = gaussian_matrix(&mut rng(2), 3, 3, 1.0);
    let ckpt = dir.path().join("model.safetensors");
    for (alpha, mask, config) in [
        (
            0.7,
            None,
            r#"{"model": {"n_head": 2, "scale": 0.7, "mask": "causal", "n_layer": 2, "d_model": 4, "n_ctx": 8, "bias": true}}"#,
        ),
        (
            1.0,
            Some(MaskKind::Full),
            r#"{"model": {"n_head": 2, "mask": "none"}}"#,
        ),
    ] {
        let net = transformer_net(11, alpha, TRANSFORMER_ROTARY, mask);
        write_file(&ckpt, &transformer_tensors(&net), St::F64, None);
        write_json(&dir.path().join("config.json"), config);
        let f = io::open(&ckpt, &LoadOptions::default()).unwrap();
        assert_eq!(f.layout, Layout::Transformer);
        assert_eq!(f.config.as_deref(), Some(&*dir.path().join("config.json")));
        assert!(rel_diff(&net.forward(&x), &f.model.forward_sequence(&x).unwrap()) < 1e-12);
        if alpha == 1.0 {
            // What the config left out is said, not silently assumed.
            assert!(
                f.assumptions.iter().any(|a| a.contains("α")),
                "{:?}",
                f.assumptions
            );
            // The rotary base is fixed, not a default applied.
            assert!(
                f.assumptions.iter().all(|a| !a.contains("rope")),
                "{:?}",
                f.assumptions
            );
        } else {
            assert!(f.assumptions.is_empty(), "{:?}", f.assumptions);
            assert_eq!(f.native_context, Some(8));
        }
    }
    // Without a config, the command line's options stand in.
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let net = transformer_net(11, 0.5, TRANSFORMER_ROTARY, None);
    write_file(&ckpt, &transformer_tensors(&net), St::F64, None);
    let e = file_error(io::load(&ckpt).unwrap_err());
    assert!(matches!(e, FileError::NeedsConfig { what, .. } if what.contains("n_head")));
    let options = LoadOptions {
        heads: Some(2),
        residual_scale: Some(0.5),
        ..LoadOptions::default()
    };
    let m = io::load_with(&ckpt, &options).unwrap();
    assert!(rel_diff(&net.forward(&x), &m.forward_sequence(&x).unwrap()) < 1e-12);
    // An option that disagrees with the config is an error naming both.
    write_json(
        &dir.path().join("config.json"),
        r#"{"model": {"n_head": 1}}"#,
    );
    match file_error(io::load_with(&ckpt, &options).unwrap_err()) {
        FileError::Config { reason, hint, .. } => {
            assert!(
                reason.contains("n_head")
                    && matches!(
                        hint,
                        Some(ConfigHint::Disagrees {
                            option: LoadOption::Heads,
                            ..
                        })
                    ),
                "{reason}"
            )
        }
        other => panic!("{other}"),
    }
    // A config that disagrees with the tensors, too.
    write_json(
        &dir.path().join("config.json"),
        r#"{"model": {"n_head": 2, "n_layer": 3}}"#,
    );
    match file_error(io::load(&ckpt).unwrap_err()) {
        FileError::Config { reason, .. } => assert!(reason.contains("n_layer"), "{reason}"),
        other => panic!("{other}"),
    }
}

/// The PyTorch fixture `transformer.pt` (`make_transformer.py`) copied into
/// a fresh run folder `root/checkpoints/model.pt`, and its JSON.
fn torch_transformer(root: &Path) -> (PathBuf, serde_json::Value) {
    let fixtures = common::files::fixtures().join("torch");
    std::fs::create_dir_all(root.join("checkpoints")).unwrap();
    let ckpt = root.join("checkpoints/model.pt");
    std::fs::copy(fixtures.join("transformer.pt"), &ckpt).unwrap();
    let json = std::fs::read_to_string(fixtures.join("transformer.json")).unwrap();
    (ckpt, serde_json::from_str(&json).unwrap())
}

/// A `[n, k]` matrix from JSON rows.
fn json_matrix(rows: &serde_json::Value) -> DMatrix<f64> {
    let rows = rows.as_array().unwrap();
    let k = rows[0].as_array().unwrap().len();
    DMatrix::from_fn(rows.len(), k, |i, j| rows[i][j].as_f64().unwrap())
}

/// The largest relative gap over the fixture's sequences between
/// PyTorch's logits under `key` and the model's.
fn torch_gap(json: &serde_json::Value, key: &str, model: &tensor_similarity::Model<f64>) -> f64 {
    let inputs = json["inputs"].as_array().unwrap();
    let want = json[key].as_array().unwrap();
    assert_eq!(inputs.len(), want.len());
    inputs
        .iter()
        .zip(want)
        .map(|(x, y)| {
            rel_diff(
                &json_matrix(y),
                &model.forward_sequence(&json_matrix(x)).unwrap(),
            )
        })
        .fold(0.0, f64::max)
}

/// Issue 21: the research `Transformer` written by PyTorch (F64, two layers,
/// two heads, `α` 0.7) is read with the rotary base its `Attention`
/// hard-codes, 10 000: without a config its logits are PyTorch's (causal),
/// the `rope_base` option is not read, and with the run's config its keys
/// are honoured (`mask: none` gives the no-mask logits) and checked
/// against the tensors. The tolerance: PyTorch's two forward passes (its
/// module and a position-by-position loop) agree to 2e-13 relative on
/// these degree-100 polynomials; 1e-10 leaves room for another order of
/// summation, and a reading without rotary is off by more than 1e-2.
#[test]
fn the_research_transformer_from_pytorch_reads_with_its_fixed_rotary() {
    const TOL: f64 = 1e-10;
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, json) = torch_transformer(dir.path());
    assert_eq!(json["rotary_base"], 10_000.0);
    // Without a config: heads and α as options, the mask causal.
    let options = LoadOptions {
        heads: Some(2),
        residual_scale: Some(0.7),
        ..LoadOptions::default()
    };
    let f = io::open(&ckpt, &options).unwrap();
    assert_eq!(f.layout, Layout::Transformer);
    assert_eq!(f.config, None);
    assert_eq!(f.assumptions, ["mask absent: causal"]);
    let causal = torch_gap(&json, "logits_causal", &f.model);
    eprintln!("no config, causal: largest relative gap to PyTorch {causal:.2e}");
    assert!(causal < TOL, "{causal}");
    // The masks' logits differ: the test below tells them apart.
    assert!(torch_gap(&json, "logits_none", &f.model) > 1e-2);
    // The rope_base option does not apply: listed as unused, nothing changes.
    let with_rope = LoadOptions {
        rope_base: Some(500.0),
        ..options.clone()
    };
    let g = io::open(&ckpt, &with_rope).unwrap();
    assert_eq!(g.unused_options, ["rope_base"]);
    let x = json_matrix(&json["inputs"][1]);
    assert_eq!(
        g.model.forward_sequence(&x).unwrap(),
        f.model.forward_sequence(&x).unwrap()
    );

    // With the run's config beside the run's checkpoints: its keys.
    let config = dir.path().join("config.json");
    let model_keys = json["config"]["model"].clone();
    let with = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut keys = model_keys.as_object().unwrap().clone();
        edit(&mut keys);
        std::fs::write(&config, serde_json::json!({ "model": keys }).to_string()).unwrap();
        io::open(&ckpt, &LoadOptions::default())
    };
    let f = with(&|_| {}).unwrap();
    assert_eq!(f.config.as_deref(), Some(&*config));
    assert!(f.assumptions.is_empty(), "{:?}", f.assumptions);
    assert_eq!(f.native_context, Some(16));
    let causal = torch_gap(&json, "logits_causal", &f.model);
    eprintln!("config, mask causal: largest relative gap to PyTorch {causal:.2e}");
    assert!(causal < TOL, "{causal}");
    let f = with(&|k| {
        k.insert("mask".into(), "none".into());
    })
    .unwrap();
    let none = torch_gap(&json, "logits_none", &f.model);
    eprintln!("config, mask none: largest relative gap to PyTorch {none:.2e}");
    assert!(none < TOL, "{none}");
    assert!(torch_gap(&json, "logits_causal", &f.model) > 1e-2);

    // What the config says must be what the tensors say, by name.
    let refused = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| -> String {
        match file_error(with(edit).expect_err("refused")) {
            FileError::Config { reason, .. } => reason,
            other => panic!("{other}"),
        }
    };
    let reason = refused(&|k| {
        k.insert("bias".into(), false.into());
    });
    assert!(
        reason.starts_with("model.bias: is false, but the checkpoint has body.0.attn.q1.bias"),
        "{reason}"
    );
    let reason = refused(&|k| {
        k.insert("n_layer".into(), 3.into());
    });
    assert!(
        reason.contains("model.n_layer: is 3, but the checkpoint has 2"),
        "{reason}"
    );
    let reason = refused(&|k| {
        k.insert("d_model".into(), 4.into());
    });
    assert!(
        reason.contains("model.d_model: is 4, but the checkpoint has 8"),
        "{reason}"
    );
    // A rope_base key says something false about this model: refused, saying why.
    let reason = refused(&|k| {
        k.insert("rope_base".into(), 10_000.0.into());
    });
    assert!(
        reason.starts_with("model.rope_base: the research Transformer has no rope_base key")
            && reason.contains("always applies rotary with base 10000"),
        "{reason}"
    );
    // The LM's spelling of α is not the Transformer's key.
    let reason = refused(&|k| {
        k.remove("scale");
        k.insert("alpha".into(), 0.7.into());
    });
    assert!(reason.contains("unknown model key \"alpha\""), "{reason}");
}

// ---------------------------------------------------------------------------
// The attention-only language model

/// The language model as plain data: an embedding table, attention layers
/// (additive residual, α = attn_scale), an unembedding and a final energy.
struct Lm {
    table: DMatrix<f64>,
    layers: Vec<AttnParams>,
    unembed: DMatrix<f64>,
    energy: Option<f64>,
}

impl Lm {
    fn random(seed: u64, quadratic: bool, biases: bool, rope: f64, attn_scale: f64) -> Self {
        // e = 4: with e = 2 the one rotary frequency is base⁰ and the base
        // would not matter.
        let (vocab, d, layers) = (7, 8, 2);
        let mut r = rng(seed);
        let o = AttnOptions {
            heads: 2,
            e: 4,
            ev: 4,
            qk_bias: biases,
            v_bias: false,
            o_bias: false,
            rotary: Some(rope),
            mask: None,
            score_scale: None,
            alpha: Some(attn_scale),
            skip: Some(1.0),
            quadratic,
            scale: 1.0,
        };
        Lm {
            table: gaussian_matrix(&mut r, vocab, d, 1.0),
            layers: (0..layers)
                .map(|_| AttnParams::random(&mut r, d, &o))
                .collect(),
            unembed: gaussian_matrix(&mut r, vocab, d, 1.0),
            energy: Some(2.5),
        }
    }

    /// Logits for `tokens`, computed from the plain data.
    fn logits(&self, tokens: &[usize]) -> DMatrix<f64> {
        let mut x = DMatrix::from_fn(tokens.len(), self.table.ncols(), |s, j| {
            self.table[(tokens[s], j)]
        });
        for a in &self.layers {
            x = a.forward(&x);
        }
        let norm = self.energy.map_or(1.0, |e| 1.0 / (e + 1e-6).sqrt());
        x * self.unembed.transpose() * norm
    }

    fn tensors(&self) -> Vec<Raw> {
        let m = |name: String, m: &DMatrix<f64>| raw(&name, &[m.nrows(), m.ncols()], row_major(m));
        let v = |name: String, v: &DVector<f64>| raw(&name, &[v.len()], v.as_slice().to_vec());
        let mut out = vec![
            m("embed.weight".into(), &self.table),
            m("unembed.weight".into(), &self.unembed),
        ];
        if let Some(e) = self.energy {
            out.push(raw("final_norm.running_mean_energy", &[], vec![e]));
            // The research Tok0Batch's counter (a stored count, any dtype).
            out.push(raw("final_norm.num_batches_tracked", &[], vec![100.0]));
        }
        for (i, a) in self.layers.iter().enumerate() {
            let p = format!("layers.{i}.");
            let roles: &[ScoreLeg<'_>] = if a.quadratic {
                &[("q", &a.q1, &a.bq1), ("k", &a.k1, &a.bk1)]
            } else {
                &[
                    ("q1", &a.q1, &a.bq1),
                    ("k1", &a.k1, &a.bk1),
                    ("q2", &a.q2, &a.bq2),
                    ("k2", &a.k2, &a.bk2),
                ]
            };
            for (r, w, b) in roles {
                out.push(m(format!("{p}{r}.weight"), w));
                if let Some(b) = b {
                    out.push(v(format!("{p}{r}.bias"), b));
                }
            }
            out.push(m(format!("{p}v.weight"), &a.v));
            out.push(m(format!("{p}o.weight"), &a.o));
        }
        out
    }
}

/// A score leg's name, weight and bias.
type ScoreLeg<'a> = (&'a str, &'a DMatrix<f64>, &'a Option<DVector<f64>>);

const LM_CONFIG: &str = "model:
  vocab_size: 7
  d_model: 8
  n_head: 2
  n_layers: 2
  attn_scale: 0.35
  attn_type: bilinear
  rope_base: 500.0
  use_bias_qk: true
  n_ctx: 16
  norm_type: tok0_batch
  norm_places: [pre_unembed]
  norm_kwargs:
    eps: 1.0e-6
  use_rmsnorm_qk: false
train:
  lr: 1.0e-3
  batch_size: 64
";

/// A run directory `runs/tiny/{config.yaml, checkpoints/step_N.safetensors}`.
fn run_dir(root: &Path, lm: &Lm, config: &str) -> PathBuf {
    let run = root.join("runs/tiny");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::write(run.join("config.yaml"), config).unwrap();
    let ckpt = run.join("checkpoints/step_100.safetensors");
    write_file(&ckpt, &lm.tensors(), St::F64, None);
    ckpt
}

#[test]
fn an_attention_lm_run_reads_as_its_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let lm = Lm::random(1, false, true, 500.0, 0.35);
    let ckpt = run_dir(dir.path(), &lm, LM_CONFIG);
    let f = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert_eq!(f.layout, Layout::AttentionLm);
    // Found two folders up, as runs keep it.
    assert_eq!(
        f.config.as_deref(),
        Some(&*dir.path().join("runs/tiny/config.yaml"))
    );
    assert_eq!(f.native_context, Some(16));
    assert!(f.assumptions.is_empty(), "{:?}", f.assumptions);
    for tokens in [&[3usize, 0, 6][..], &[1, 1, 2, 5, 4]] {
        let want = lm.logits(tokens);
        let got = f.model.forward_sequence(&one_hot(tokens, 7)).unwrap();
        assert!(rel_diff(&want, &got) < 1e-12, "{tokens:?}");
    }
    // The rotary base and the additive residual are what make it this
    // model: the research wrapper's reading (base 10 000, lerp) is another.
    let other = Lm {
        layers: lm
            .layers
            .iter()
            .map(|a| AttnParams {
                rotary: Some(10_000.0),
                skip: None,
                ..a.clone()
            })
            .collect(),
        ..Lm::random(1, false, true, 500.0, 0.35)
    };
    let tokens = [3, 0, 6, 2];
    assert!(rel_diff(&lm.logits(&tokens), &other.logits(&tokens)) > 1e-3);

    // Quadratic attention: one score factor, squared.
    let quad = Lm::random(2, true, true, 500.0, 0.35);
    let ckpt = run_dir(
        dir.path(),
        &quad,
        &LM_CONFIG.replace("attn_type: bilinear", "attn_type: quadratic"),
    );
    let m = io::load(&ckpt).unwrap();
    assert!(
        rel_diff(
            &quad.logits(&tokens),
            &m.forward_sequence(&one_hot(&tokens, 7)).unwrap()
        ) < 1e-12
    );
}

#[test]
fn run_configs_are_found_and_read_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let lm = Lm::random(4, false, true, 500.0, 0.35);
    let ckpt = run_dir(dir.path(), &lm, LM_CONFIG);
    let tokens = [2usize, 5, 1];
    let logits = |options: &LoadOptions| {
        io::load_with(&ckpt, options)
            .unwrap()
            .forward_sequence(&one_hot(&tokens, 7))
            .unwrap()
    };
    let want = lm.logits(&tokens);
    // The same config as JSON beside the checkpoint wins over the run's.
    let json = dir.path().join("runs/tiny/checkpoints/config.json");
    write_json(
        &json,
        r#"{"model": {"vocab_size": 7, "d_model": 8, "n_head": 2, "n_layers": 2, "attn_scale": 0.35,
            "attn_type": "bilinear", "rope_base": 500.0, "use_bias_qk": true,
            "norm_type": "tok0_batch", "norm_places": ["pre_unembed"], "norm_kwargs": {"eps": 1e-6}}}"#,
    );
    let f = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert_eq!(f.config.as_deref(), Some(&*json));
    assert!(
        rel_diff(
            &want,
            &f.model.forward_sequence(&one_hot(&tokens, 7)).unwrap()
        ) < 1e-12
    );
    // A second config in the same folder: which one the run used cannot be told.
    let yaml = dir.path().join("runs/tiny/checkpoints/config.yaml");
    std::fs::write(&yaml, LM_CONFIG).unwrap();
    assert!(matches!(
        file_error(io::load(&ckpt).unwrap_err()),
        FileError::Config { .. }
    ));
    // --config chooses.
    let chosen = LoadOptions {
        config: Some(yaml.clone().into()),
        ..LoadOptions::default()
    };
    assert!(rel_diff(&want, &logits(&chosen)) < 1e-12);
    std::fs::remove_file(&json).unwrap();
    std::fs::remove_file(&yaml).unwrap();

    // Each key the function depends on is honoured: another rope_base,
    // another attn_scale, another model.
    let config = dir.path().join("runs/tiny/config.yaml");
    for (from, to) in [
        ("rope_base: 500.0", "rope_base: 50.0"),
        ("attn_scale: 0.35", "attn_scale: 0.2"),
    ] {
        std::fs::write(&config, LM_CONFIG.replace(from, to)).unwrap();
        assert!(
            rel_diff(&want, &logits(&LoadOptions::default())) > 1e-6,
            "{to}"
        );
    }
    // rope_base absent: the default, and said so.
    std::fs::write(&config, LM_CONFIG.replace("  rope_base: 500.0\n", "")).unwrap();
    let f = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert_eq!(f.assumptions, ["rope_base absent: 10000"]);

    let refused = |text: String, key: &str| {
        std::fs::write(&config, &text).unwrap();
        match file_error(io::load(&ckpt).unwrap_err()) {
            FileError::Config {
                reason, config: c, ..
            } => {
                assert_eq!(c, config);
                assert!(reason.contains(key), "{key}: {reason}");
            }
            other => panic!("{key}: {other}"),
        }
    };
    // What is not polynomial is refused by name.
    refused(
        LM_CONFIG.replace("attn_type: bilinear", "attn_type: softmax"),
        "attn_type",
    );
    refused(
        LM_CONFIG
            .replace("norm_type: tok0_batch", "norm_type: rmsnorm")
            .replace("norm_places: [pre_unembed]", "norm_places: [pre_attn]"),
        "norm_places",
    );
    refused(
        LM_CONFIG.replace("use_rmsnorm_qk: false", "use_rmsnorm_qk: true"),
        "use_rmsnorm_qk",
    );
    // So is a key this reader does not know: it might change the function.
    refused(
        LM_CONFIG.replace("  n_ctx: 16\n", "  n_ctx: 16\n  tie_embeddings: true\n"),
        "tie_embeddings",
    );
    // What the tensors say must agree with the config, naming both.
    refused(
        LM_CONFIG.replace("attn_type: bilinear", "attn_type: quadratic"),
        "q1.weight",
    );
    refused(
        LM_CONFIG.replace("use_bias_qk: true", "use_bias_qk: false"),
        "use_bias_qk",
    );
    refused(LM_CONFIG.replace("n_layers: 2", "n_layers: 3"), "n_layers");
    refused(
        LM_CONFIG.replace("d_model: 8", "d_model: 6"),
        "embed.weight",
    );
    refused(
        LM_CONFIG.replace("vocab_size: 7", "vocab_size: 9"),
        "vocab_size",
    );
    refused(LM_CONFIG.replace("n_head: 2", "n_head: 3"), "n_head");
    refused(LM_CONFIG.replace("d_model: 8", "d_model: four"), "d_model");
    refused("model: [1, 2]\n".into(), "model");
    refused("train:\n  lr: 1\n".into(), "model");
    refused("model:\n  d_model: 4\n  x: &a 1\n  y: *a\n".into(), "alias");

    // attn_scale has no default: absent, the command line must say it.
    std::fs::write(&config, LM_CONFIG.replace("  attn_scale: 0.35\n", "")).unwrap();
    match file_error(io::load(&ckpt).unwrap_err()) {
        FileError::NeedsConfig { what, option, .. } => {
            assert!(what.contains("attn_scale") && option == LoadOption::AttnScale)
        }
        other => panic!("{other}"),
    }
    let given = LoadOptions {
        attn_scale: Some(0.35),
        ..LoadOptions::default()
    };
    assert!(rel_diff(&want, &logits(&given)) < 1e-12);
    // With the config's own, a different --attn-scale is a disagreement.
    std::fs::write(&config, LM_CONFIG).unwrap();
    let other = LoadOptions {
        attn_scale: Some(0.2),
        ..LoadOptions::default()
    };
    assert!(matches!(
        file_error(io::load_with(&ckpt, &other).unwrap_err()),
        FileError::Config { .. }
    ));
    // No config at all: heads and attn_scale from the options, rope_base default.
    std::fs::remove_file(&config).unwrap();
    assert!(matches!(
        file_error(io::load(&ckpt).unwrap_err()),
        FileError::NeedsConfig { .. }
    ));
    let bare = LoadOptions {
        heads: Some(2),
        attn_scale: Some(0.35),
        ..LoadOptions::default()
    };
    let f = io::open(&ckpt, &bare).unwrap();
    // Without a config the norm is the one its tensors show, and said so.
    let starts: [&str; 3] = [
        "rope_base absent: 10000",
        "no run config: the norms are those the tensor names show",
        "no run config: the norms are read from their tensor names, and eps: 1e-6",
    ];
    assert_eq!(f.assumptions.len(), starts.len(), "{:?}", f.assumptions);
    for (a, start) in f.assumptions.iter().zip(starts) {
        assert!(a.starts_with(start), "{a}");
    }
    assert!(f.config.is_none());
}

#[test]
fn lm_tensors_must_make_a_consistent_model() {
    let dir = tempfile::tempdir().unwrap();
    let lm = Lm::random(6, false, true, 500.0, 0.35);
    let ckpt = run_dir(dir.path(), &lm, LM_CONFIG);
    let write = |tensors: Vec<Raw>| write_file(&ckpt, &tensors, St::F64, None);
    // Biases on some score legs only.
    let mut t = lm.tensors();
    t.retain(|r| r.name != "layers.1.k2.bias");
    write(t);
    assert!(matches!(
        file_error(io::load(&ckpt).unwrap_err()),
        FileError::MissingTensor { .. }
    ));
    // A layer number a file merely claims costs nothing: the first missing
    // layer is named at once (not after counting to 10¹⁸).
    let mut t = lm.tensors();
    t.push(raw(
        "layers.999999999999999999.v.weight",
        &[8, 8],
        vec![1.0; 64],
    ));
    write(t);
    match file_error(io::load(&ckpt).unwrap_err()) {
        FileError::MissingTensor { tensor, .. } => assert_eq!(tensor, "layers.2.v.weight"),
        other => panic!("{other}"),
    }
    // A stray tensor is an error, as in every layout.
    let mut t = lm.tensors();
    t.push(raw("layers.0.ln.weight", &[8], vec![1.0; 8]));
    write(t);
    assert!(matches!(
        file_error(io::load(&ckpt).unwrap_err()),
        FileError::UnusedTensor { .. }
    ));
    // A non-scalar energy.
    let mut t = lm.tensors();
    t.retain(|r| r.name != "final_norm.running_mean_energy");
    t.push(raw("final_norm.running_mean_energy", &[2], vec![1.0, 2.0]));
    write(t);
    assert!(matches!(
        file_error(io::load(&ckpt).unwrap_err()),
        FileError::TensorShape { .. }
    ));
    // Without the final norm (and a config that says so) the unembedding
    // is read as is.
    let plain = Lm {
        energy: None,
        ..Lm::random(6, false, true, 500.0, 0.35)
    };
    let config = dir.path().join("runs/tiny/config.yaml");
    std::fs::write(
        &config,
        LM_CONFIG.replace("norm_places: [pre_unembed]", "norm_places: []"),
    )
    .unwrap();
    write(plain.tensors());
    let tokens = [0usize, 3];
    let m = io::load(&ckpt).unwrap();
    assert!(
        rel_diff(
            &plain.logits(&tokens),
            &m.forward_sequence(&one_hot(&tokens, 7)).unwrap()
        ) < 1e-12
    );
}

#[test]
fn sequence_files_compare_at_a_context() {
    let dir = tempfile::tempdir().unwrap();
    let a = Lm::random(7, false, true, 500.0, 0.35);
    let ckpt = run_dir(dir.path(), &a, LM_CONFIG);
    let m = io::load(&ckpt).unwrap();
    // A sequence model needs a context length to be compared.
    let e = TensorSimilarity::new().similarity(&m, &m).unwrap_err();
    assert!(matches!(e, Error::MissingContext(_)), "{e}");
    let s = TensorSimilarity::new().with_context(3).unwrap();
    assert!((s.similarity(&m, &m).unwrap() - 1.0).abs() < 1e-12);
    // Saved in the metadata layout, the run's model compares as itself.
    let path = dir.path().join("lm.safetensors");
    io::save(&m, &path, Layout::Described).unwrap();
    let back = io::load(&path).unwrap();
    assert!((s.similarity(&m, &back).unwrap() - 1.0).abs() < 1e-12);
    let x = one_hot(&[1, 4, 4], 7);
    assert_eq!(
        m.forward_sequence(&x).unwrap(),
        back.forward_sequence(&x).unwrap()
    );
    // The loading options a metadata file does not read are listed.
    let f = io::open(
        &path,
        &LoadOptions {
            heads: Some(2),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(f.unused_options, ["heads"]);
    let _ = Mask::Causal;
}

/// The PyTorch snippet of the file format guide, run by real PyTorch
/// (`tests/files/snippet/make.py`): the crate reads what it saves as the
/// function PyTorch computes (rotary layout, additive and lerp residuals,
/// the transposed embedding table).
#[test]
fn the_guide_s_pytorch_transformer_reads_as_pytorch_computes() {
    let dir = common::files::fixtures().join("snippet");
    let m = io::load(dir.join("transformer.safetensors")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let vocab = expected["vocab"].as_u64().unwrap() as usize;
    for case in expected["cases"].as_array().unwrap() {
        let (tokens, want) = logits_case(case, vocab);
        let got = m.forward_sequence(&one_hot(&tokens, vocab)).unwrap();
        // Both in f64; PyTorch sums in another order.
        assert!(
            rel_diff(&want, &got) < 1e-13,
            "{tokens:?}: {}",
            rel_diff(&want, &got)
        );
    }
}
