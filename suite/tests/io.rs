//! Model files: round trips through `io::save`/`io::load` for every layout
//! and dtype, files written by hand through the safetensors crate for every
//! role, and the layout `save` writes checked with the safetensors crate.

// The file fixtures are shared with the command-line test of the published
// crate, which keeps them.
mod common;

use common::files::*;
use common::*;
use nalgebra::{DMatrix, DVector};
use safetensors::{Dtype as St, SafeTensors};
use tensor_similarity::io::{self, Dtype, Layout, LoadOptions};
use tensor_similarity::{Bilinear, Linear, Model, similarity, weight_cosine};

const DTYPES: [(Dtype, St); 4] = [
    (Dtype::F64, St::F64),
    (Dtype::F32, St::F32),
    (Dtype::F16, St::F16),
    (Dtype::BF16, St::BF16),
];

/// The model with every parameter rounded to `dtype`, rebuilt from its
/// parts: what a file in that dtype holds.
fn rounded(model: &Model<f64>, dtype: St) -> Model<f64> {
    let m = |x: &DMatrix<f64>| x.map(|v| round(dtype, v));
    let v = |x: Option<&DVector<f64>>| x.map(|x| x.map(|v| round(dtype, v)));
    let mut b = Model::builder();
    for block in model.blocks() {
        let any = &**block as &dyn std::any::Any;
        if let Some(l) = any.downcast_ref::<Linear<f64>>() {
            b = b.block(Linear::new(m(l.weight()), v(l.bias())).unwrap());
        } else {
            let bl = any.downcast_ref::<Bilinear<f64>>().unwrap();
            b = b.block(
                Bilinear::builder(m(bl.left()), m(bl.right()))
                    .down(bl.down().map(m))
                    .left_bias(v(bl.left_bias()))
                    .right_bias(v(bl.right_bias()))
                    .down_bias(v(bl.down_bias()))
                    .scale(bl.scale())
                    .skip(bl.skip())
                    .build()
                    .unwrap(),
            );
        }
    }
    b.build().unwrap()
}

/// Max |f_A(x) − f_B(x)| over a few seeded inputs.
fn max_output_gap(a: &Model<f64>, b: &Model<f64>) -> f64 {
    let mut r = rng(99);
    (0..5)
        .map(|_| {
            let x = vector(&mut r, a.input_width());
            (a.forward(&x).unwrap() - b.forward(&x).unwrap()).amax()
        })
        .fold(0.0, f64::max)
}

#[test]
fn round_trip_every_layout_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Layout::Described, embed_body_head(1, 2, 0.7)),
        (Layout::Described, bilinear_projection(2, 1.0)),
        (Layout::EmbedBodyHead, embed_body_head(3, 2, 0.4)),
        (Layout::EmbedBodyHead, embed_body_head(4, 0, 1.0)),
        (Layout::BiLinearProjection, bilinear_projection(5, 1.0)),
        (Layout::BiLinearProjection, bilinear_projection(6, 0.5)),
    ];
    for (case, (layout, model)) in cases.iter().enumerate() {
        for (dtype, st) in DTYPES {
            let path = dir.path().join(format!("{case}-{dtype}.safetensors"));
            io::save_with_dtype(model, &path, *layout, dtype).unwrap();
            let file = io::open(&path, &LoadOptions::default()).unwrap();
            // Every layout writes metadata, so the loader reads it back as described.
            assert_eq!(file.layout, Layout::Described);
            assert!(file.tensors.iter().all(|t| t.dtype == dtype));
            let back = file.model;
            assert_eq!(back.orders(), model.orders());
            // The file holds exactly the rounded parameters: equal to 1e-12.
            let exact = rounded(model, st);
            let sim = similarity(&exact, &back).unwrap();
            assert!((sim - 1.0).abs() < 1e-12, "{layout:?} {dtype}: {sim}");
            assert!(max_output_gap(&exact, &back) < 1e-12);
            if layout == &Layout::Described {
                assert!((weight_cosine(&exact, &back).unwrap() - 1.0).abs() < 1e-12);
            }
            // Against the unrounded model: each parameter moves by at most
            // u|p|; the end-to-end tensor is a sum of products of at most P
            // parameters (P = 3 per bilinear block with its down projection
            // and bias terms, 1 per linear), so ‖ΔT‖/‖T‖ ≲ P·u·κ with κ the
            // cancellation in those sums (O(1) for these random weights;
            // 10 allowed), and 1 − cos ≤ ½ (‖ΔT‖/‖T‖)².
            let p = model.orders().iter().map(|&k| 2 * k - 1).sum::<usize>() as f64;
            let rel = 10.0 * p * dtype.unit_roundoff();
            let sim = similarity(model, &back).unwrap();
            assert!(
                1.0 - sim <= 0.5 * rel * rel + 1e-14,
                "{layout:?} {dtype}: 1 - sim = {}",
                1.0 - sim
            );
            if dtype == Dtype::F64 {
                assert_eq!(max_output_gap(model, &back), 0.0, "F64 is lossless");
            }
        }
    }
}

#[test]
fn save_writes_the_named_row_major_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = bilinear_projection(7, 1.0);
    let path = dir.path().join("m.safetensors");
    io::save(&model, &path, Layout::BiLinearProjection).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    assert_eq!(
        names,
        [
            "bi_linear.bias",
            "bi_linear.weight",
            "projection.bias",
            "projection.weight"
        ]
    );
    let any = &*model.blocks()[0] as &dyn std::any::Any;
    let bl = any.downcast_ref::<Bilinear<f64>>().unwrap();
    let fused = file.tensor("bi_linear.weight").unwrap();
    let (h, m) = bl.left().shape();
    assert_eq!(fused.shape(), [2 * h, m]);
    let value =
        |data: &[u8], k: usize| f64::from_le_bytes(data[8 * k..8 * k + 8].try_into().unwrap());
    for i in 0..2 * h {
        for j in 0..m {
            let expected = if i < h {
                bl.left()[(i, j)]
            } else {
                bl.right()[(i - h, j)]
            };
            assert_eq!(value(fused.data(), i * m + j), expected);
        }
    }
    let bias = file.tensor("bi_linear.bias").unwrap();
    for i in 0..h {
        assert_eq!(value(bias.data(), i), bl.left_bias().unwrap()[i]);
        assert_eq!(value(bias.data(), h + i), bl.right_bias().unwrap()[i]);
    }

    let model = embed_body_head(8, 2, 0.5);
    io::save(&model, &path, Layout::EmbedBodyHead).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    let mut expected = vec!["embed.weight", "embed.bias", "head.weight", "head.bias"];
    for i in 0..2 {
        for part in ["l", "r", "d"] {
            for kind in ["weight", "bias"] {
                expected.push(Box::leak(
                    format!("body.{i}.{part}.{kind}").into_boxed_str(),
                ));
            }
        }
    }
    expected.sort();
    assert_eq!(names, expected);
    let any = &*model.blocks()[1] as &dyn std::any::Any;
    let bl = any.downcast_ref::<Bilinear<f64>>().unwrap();
    let d = file.tensor("body.0.d.weight").unwrap();
    assert_eq!(d.shape(), [bl.down().unwrap().nrows(), bl.hidden_width()]);
    let cols = bl.hidden_width();
    assert_eq!(value(d.data(), cols + 2), bl.down().unwrap()[(1, 2)]);
}

/// `y = s·(D((L x + b_L) ∘ (R x + b_R)) + b_D) + (1 − s)·x`, evaluated entry
/// by entry from row-major arrays as a file stores them.
#[allow(clippy::too_many_arguments)]
fn naive_bilinear(
    x: &[f64],
    l: &[f64],
    r: &[f64],
    h: usize,
    lb: &[f64],
    rb: &[f64],
    d: Option<&[f64]>,
    db: &[f64],
    s: f64,
) -> Vec<f64> {
    let m = x.len();
    let z: Vec<f64> = (0..h)
        .map(|k| {
            let a: f64 =
                (0..m).map(|j| l[k * m + j] * x[j]).sum::<f64>() + lb.get(k).unwrap_or(&0.0);
            let b: f64 =
                (0..m).map(|j| r[k * m + j] * x[j]).sum::<f64>() + rb.get(k).unwrap_or(&0.0);
            a * b
        })
        .collect();
    let n = d.map_or(h, |d| d.len() / h);
    (0..n)
        .map(|o| {
            let y = match d {
                Some(d) => (0..h).map(|k| d[o * h + k] * z[k]).sum::<f64>(),
                None => z[o],
            } + db.get(o).unwrap_or(&0.0);
            if s == 1.0 {
                y
            } else {
                s * y + (1.0 - s) * x[o]
            }
        })
        .collect()
}

fn naive_linear(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let m = x.len();
    (0..w.len() / m)
        .map(|o| (0..m).map(|j| w[o * m + j] * x[j]).sum::<f64>() + b.get(o).unwrap_or(&0.0))
        .collect()
}

fn seeded(r: &mut rand::rngs::StdRng, n: usize) -> Vec<f64> {
    vector(r, n).as_slice().iter().map(|v| v * 2.0).collect()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn hand_written_embed_body_head_files_load_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (d, w, h, c) = (3, 4, 5, 2);
    let mut r = rng(11);
    let (e, eb) = (seeded(&mut r, w * d), seeded(&mut r, w));
    let body: Vec<[Vec<f64>; 6]> = (0..2)
        .map(|_| {
            [
                seeded(&mut r, h * w),
                seeded(&mut r, h * w),
                seeded(&mut r, w * h),
                seeded(&mut r, h),
                seeded(&mut r, h),
                seeded(&mut r, w),
            ]
        })
        .collect();
    let hd = seeded(&mut r, c * w);
    for (dtype, st) in DTYPES {
        let q = |v: &Vec<f64>| v.iter().map(|&x| round(st, x)).collect::<Vec<_>>();
        let mut tensors = vec![
            raw("embed.weight", &[w, d], e.clone()),
            raw("embed.bias", &[w], eb.clone()),
        ];
        for (i, [l, rr, dd, lb, rb, db]) in body.iter().enumerate() {
            tensors.push(raw(&format!("body.{i}.l.weight"), &[h, w], l.clone()));
            tensors.push(raw(&format!("body.{i}.r.weight"), &[h, w], rr.clone()));
            tensors.push(raw(&format!("body.{i}.d.weight"), &[w, h], dd.clone()));
            // Block 0 has every bias, block 1 none: both are optional.
            if i == 0 {
                tensors.push(raw(&format!("body.{i}.l.bias"), &[h], lb.clone()));
                tensors.push(raw(&format!("body.{i}.r.bias"), &[h], rb.clone()));
                tensors.push(raw(&format!("body.{i}.d.bias"), &[w], db.clone()));
            }
        }
        tensors.push(raw("head.weight", &[c, w], hd.clone()));
        let path = dir.path().join(format!("ebh-{dtype}.safetensors"));
        write_file(&path, &tensors, st, None);
        for s in [1.0, 0.3] {
            let options = LoadOptions {
                residual_scale: (s != 1.0).then_some(s),
                ..Default::default()
            };
            let file = io::open(&path, &options).unwrap();
            assert_eq!(file.layout, Layout::EmbedBodyHead);
            assert_eq!(file.model.orders(), [1, 2, 2, 1]);
            for _ in 0..3 {
                let x = seeded(&mut r, d);
                let mut y = naive_linear(&x, &q(&e), &q(&eb));
                for (i, [l, rr, dd, lb, rb, db]) in body.iter().enumerate() {
                    let none = Vec::new();
                    let (lb, rb, db) = if i == 0 {
                        (q(lb), q(rb), q(db))
                    } else {
                        (none.clone(), none.clone(), none)
                    };
                    y = naive_bilinear(&y, &q(l), &q(rr), h, &lb, &rb, Some(&q(dd)), &db, s);
                }
                let y = naive_linear(&y, &q(&hd), &[]);
                let got = file.model.forward(&DVector::from_column_slice(&x)).unwrap();
                assert_close(got.as_slice(), &y, 1e-12);
            }
        }
    }
}

#[test]
fn hand_written_bi_linear_projection_files_load_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (m, h, c) = (3, 4, 2);
    let mut r = rng(12);
    let (f, fb, p, pb) = (
        seeded(&mut r, 2 * h * m),
        seeded(&mut r, 2 * h),
        seeded(&mut r, c * h),
        seeded(&mut r, c),
    );
    for (dtype, st) in DTYPES {
        let q = |v: &[f64]| v.iter().map(|&x| round(st, x)).collect::<Vec<_>>();
        for with_bias in [true, false] {
            let mut tensors = vec![
                raw("bi_linear.weight", &[2 * h, m], f.clone()),
                raw("projection.weight", &[c, h], p.clone()),
            ];
            if with_bias {
                tensors.push(raw("bi_linear.bias", &[2 * h], fb.clone()));
                tensors.push(raw("projection.bias", &[c], pb.clone()));
            }
            let path = dir
                .path()
                .join(format!("blp-{dtype}-{with_bias}.safetensors"));
            write_file(&path, &tensors, st, None);
            let file = io::open(&path, &LoadOptions::default()).unwrap();
            assert_eq!(file.layout, Layout::BiLinearProjection);
            let (fbq, pbq) = if with_bias {
                (q(&fb), q(&pb))
            } else {
                (vec![], vec![])
            };
            let x = seeded(&mut r, m);
            // Rows 0..h of the fused weight are L, rows h..2h are R.
            let fq = q(&f);
            let z = naive_bilinear(
                &x,
                &fq[..h * m],
                &fq[h * m..],
                h,
                fbq.get(..h).unwrap_or(&[]),
                fbq.get(h..).unwrap_or(&[]),
                None,
                &[],
                1.0,
            );
            let y = naive_linear(&z, &q(&p), &pbq);
            let got = file.model.forward(&DVector::from_column_slice(&x)).unwrap();
            assert_close(got.as_slice(), &y, 1e-12);
        }
    }
}

#[test]
fn hand_written_metadata_with_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let (d, h, n) = (3, 4, 3);
    let mut r = rng(13);
    let t = |r: &mut _, name: &str, shape: &[usize]| {
        raw(name, shape, seeded(r, shape.iter().product()))
    };
    let tensors = vec![
        t(&mut r, "mlp.0.w", &[d, d]),
        t(&mut r, "mlp.0.b", &[d]),
        t(&mut r, "gate.L", &[h, d]),
        t(&mut r, "gate.R", &[h, d]),
        t(&mut r, "gate.bL", &[h]),
        t(&mut r, "gate.bR", &[h]),
        t(&mut r, "gate.D", &[n, h]),
        t(&mut r, "gate.bD", &[n]),
        t(&mut r, "glu.weight", &[2 * h, n]),
        t(&mut r, "glu.bias", &[2 * h]),
        t(&mut r, "out.weight", &[2, h]),
    ];
    let meta = r#"{"version": 1, "blocks": [
        {"kind": "linear", "weight": "mlp.0.w", "bias": "mlp.0.b"},
        {"kind": "bilinear", "left": "gate.L", "right": "gate.R", "left_bias": "gate.bL",
         "right_bias": "gate.bR", "down": "gate.D", "down_bias": "gate.bD", "residual": 0.25},
        {"kind": "bilinear", "fused": "glu.weight", "fused_bias": "glu.bias"},
        {"kind": "linear", "weight": "out.weight"}]}"#;
    for (dtype, st) in DTYPES {
        let path = dir.path().join(format!("meta-{dtype}.safetensors"));
        write_file(&path, &tensors, st, Some(meta));
        // The residual option is for files without metadata: ignored here.
        let file = io::open(
            &path,
            &LoadOptions {
                residual_scale: Some(0.9),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(file.layout, Layout::Described);
        assert_eq!(file.tensors.len(), tensors.len());
        let v = |i: usize| {
            tensors[i]
                .values
                .iter()
                .map(|&x| round(st, x))
                .collect::<Vec<_>>()
        };
        for _ in 0..3 {
            let x = seeded(&mut r, d);
            let y = naive_linear(&x, &v(0), &v(1));
            let y = naive_bilinear(&y, &v(2), &v(3), h, &v(4), &v(5), Some(&v(6)), &v(7), 0.25);
            let (glu, glub) = (v(8), v(9));
            let y = naive_bilinear(
                &y,
                &glu[..h * n],
                &glu[h * n..],
                h,
                &glub[..h],
                &glub[h..],
                None,
                &[],
                1.0,
            );
            let y = naive_linear(&y, &v(10), &[]);
            let got = file.model.forward(&DVector::from_column_slice(&x)).unwrap();
            assert_close(got.as_slice(), &y, 1e-12);
        }
    }
}

#[test]
fn metadata_wins_over_names_and_carries_the_residual() {
    // A research layout with s ≠ 1 saved by this crate carries its residual
    // in the metadata, so loading needs no option.
    let dir = tempfile::tempdir().unwrap();
    let model = embed_body_head(21, 1, 0.6);
    let path = dir.path().join("ebh.safetensors");
    io::save(&model, &path, Layout::EmbedBodyHead).unwrap();
    let back = io::load_with(
        &path,
        &LoadOptions {
            residual_scale: Some(0.1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(max_output_gap(&model, &back), 0.0);
}

#[test]
fn tied_tensors_may_serve_two_roles() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = vec![
        raw("w", &[2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        raw("p", &[1, 2], vec![1.0, -1.0]),
    ];
    let meta = r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "w", "right": "w"}, {"kind": "linear", "weight": "p"}]}"#;
    let path = dir.path().join("tied.safetensors");
    write_file(&path, &tensors, St::F32, Some(meta));
    let model = io::load(&path).unwrap();
    // (x0 + 2x1)² − (3x0 + 4x1)² at (1, 1): 9 − 49.
    assert_eq!(
        model.forward(&nalgebra::dvector![1.0, 1.0]).unwrap()[0],
        -40.0
    );
}

#[test]
fn load_as_f32_rounds_each_parameter_once() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (layout, model)) in [
        (Layout::Described, embed_body_head(7, 2, 0.6)),
        (Layout::BiLinearProjection, bilinear_projection(8, 1.0)),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("{i}.safetensors"));
        io::save(&model, &path, layout).unwrap();
        let narrow: Model<f32> = io::load_as(&path, &LoadOptions::default()).unwrap();
        let wide = io::load(&path).unwrap();
        assert_eq!(narrow.orders(), wide.orders());
        // Every parameter is the f64 one rounded to f32.
        for (bn, bw) in narrow.blocks().iter().zip(wide.blocks()) {
            for (pn, pw) in bn.parameters().iter().zip(bw.parameters()) {
                assert_eq!(pn.shape, pw.shape);
                for (x, y) in pn.values.iter().zip(pw.values.iter()) {
                    assert_eq!(*x, *y as f32);
                }
            }
        }
        let s = similarity(&narrow, &narrow).unwrap();
        assert!((s - 1.0).abs() < 1e-5, "{s}");
    }
    // A value beyond f32's range is an error naming the tensor, not infinity.
    let big = Model::builder()
        .block(Linear::new(DMatrix::from_element(2, 2, 1e300), None).unwrap())
        .build()
        .unwrap();
    let path = dir.path().join("big.safetensors");
    io::save(&big, &path, Layout::Described).unwrap();
    let err = io::load_as::<f32>(&path, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}
