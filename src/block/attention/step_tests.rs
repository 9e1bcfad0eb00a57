//! The step against the generic CP step (all 120 bijections, one by
//! one) on attention's CP form at context `n`, built here from [SPEC §7](crate::spec#7-sequences-and-bilinear-attention):
//! a different route to the same tensor.
use super::*;
use crate::block::{AttentionBuilder, CpFactors, Mask, kernel::generic_step};
use crate::symmetry::Full;

fn value(seed: usize, i: usize, j: usize) -> f64 {
    let x = (seed * 7919 + i * 104_729 + j * 1_299_709) % 10_007;
    (x as f64 / 10_007.0 - 0.5) * 1.5
}

fn matrix(seed: usize, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |i, j| value(seed, i, j))
}

/// The flattened CP form of `a` at `n` positions: constant, skip and
/// attention units, `D̃` over `(s, o)`.
fn cp_form(a: &Attention<f64>, n: usize) -> CpFactors<f64> {
    let d = a.input_width();
    let out = a.output_width();
    let flat = n * d + 1;
    let w = a.mask().weights(n).unwrap();
    let lift = |f: nalgebra::DVectorView<'_, f64>, p: usize| {
        let mut v = DVector::zeros(flat);
        v[0] = f[0];
        v.rows_mut(1 + p * d, d).copy_from(&f.rows(1, d));
        v
    };
    let mut e0 = DVector::zeros(flat);
    e0[0] = 1.0;
    let mut units: Vec<([DVector<f64>; 5], DVector<f64>)> = Vec::new();
    let mut beta = DVector::zeros(n * out + 1);
    beta[0] = 1.0;
    if let Some(b) = a.bias(crate::block::Role::O) {
        for s in 0..n {
            beta.rows_mut(1 + s * out, out).copy_from(&(b * a.scale()));
        }
    }
    units.push((std::array::from_fn(|_| e0.clone()), beta));
    for s in 0..n {
        for i in 0..d {
            let mut sel = DVector::zeros(flat);
            sel[1 + s * d + i] = 1.0;
            let mut col = DVector::zeros(n * out + 1);
            col[1 + s * out + i] = a.skip();
            let legs = [sel, e0.clone(), e0.clone(), e0.clone(), e0.clone()];
            units.push((legs, col));
        }
    }
    let (e, ev) = (a.qk_width(), a.value_width());
    let he = a.heads() * e;
    for s in 0..n {
        for t in 0..n {
            if w[(s, t)] == 0.0 {
                continue;
            }
            let (fs, ft) = (a.leg_factors(s), a.leg_factors(t));
            for h in 0..a.heads() {
                for i in 0..e {
                    for j in 0..e {
                        for c in 0..ev {
                            let row = |f: &DMatrix<f64>, r: usize, p: usize| {
                                lift(f.row(r).transpose().as_view(), p)
                            };
                            let legs = [
                                row(&fs, h * e + i, s),
                                row(&ft, he + h * e + i, t),
                                row(&fs, 2 * he + h * e + j, s),
                                row(&ft, 3 * he + h * e + j, t),
                                row(&ft, 4 * he + h * ev + c, t),
                            ];
                            let mut col = DVector::zeros(n * out + 1);
                            let k = a.scale() * w[(s, t)] / a.score_scale();
                            col.rows_mut(1 + s * out, out).copy_from(
                                &(a.weight(crate::block::Role::O).column(h * ev + c) * k),
                            );
                            units.push((legs, col));
                        }
                    }
                }
            }
        }
    }
    let r = units.len();
    let inputs: Vec<DMatrix<f64>> = (0..5)
        .map(|j| DMatrix::from_fn(r, flat, |u, i| units[u].0[j][i]))
        .collect();
    let output = DMatrix::from_fn(n * out + 1, r, |o, u| units[u].1[o]);
    CpFactors::new(&inputs, Some(output)).unwrap()
}

fn block(seed: usize, d: usize, heads: usize, e: usize, ev: usize) -> AttentionBuilder<f64> {
    Attention::builder(
        heads,
        matrix(seed, heads * e, d),
        matrix(seed + 1, heads * e, d),
        matrix(seed + 2, heads * e, d),
        matrix(seed + 3, heads * e, d),
        matrix(seed + 4, heads * ev, d),
        matrix(seed + 5, d, heads * ev),
    )
}

fn check(a: &Attention<f64>, b: &Attention<f64>, n: usize) {
    let (na, nb) = (n * a.input_width() + 1, n * b.input_width() + 1);
    let g = DMatrix::from_fn(na, nb, |i, j| {
        value(99, i, j) + if i == j { 1.0 } else { 0.0 }
    });
    let fast = gram_step(a, Some(b), &g, n).unwrap();
    let (ca, cb) = (cp_form(a, n), cp_form(b, n));
    let slow = generic_step((&ca, &Full), (&cb, &Full), &g).unwrap();
    let err = (&fast - &slow).amax() / slow.amax();
    assert!(
        err < 1e-12,
        "relative error {err:.3e}\nfast {fast:.5}\nslow {slow:.5}"
    );
}

/// The self step (half the configurations) against the generic step.
fn check_self(a: &Attention<f64>, n: usize) {
    let na = n * a.input_width() + 1;
    let r = DMatrix::from_fn(na, na, |i, j| value(5, i, j));
    let g = &r * r.transpose();
    let fast = gram_step(a, None, &g, n).unwrap();
    let ca = cp_form(a, n);
    let slow = generic_step((&ca, &Full), (&ca, &Full), &g).unwrap();
    let err = (&fast - &slow).amax() / slow.amax();
    assert!(err < 1e-12, "relative error {err:.3e}");
}

#[test]
fn matches_the_cp_form() {
    let plain = block(1, 2, 1, 2, 1).build().unwrap();
    check(&plain, &plain, 1);
    check(&plain, &plain, 2);
    let biased = block(7, 2, 2, 2, 1)
        .q1_bias(matrix(3, 4, 1).column(0).into_owned())
        .k2_bias(matrix(4, 4, 1).column(0).into_owned())
        .v_bias(matrix(5, 2, 1).column(0).into_owned())
        .o_bias(matrix(6, 2, 1).column(0).into_owned())
        .rotary(100.0)
        .scale(0.7)
        .build()
        .unwrap();
    check(&biased, &biased, 2);
    check(&plain, &biased, 2);
    let additive = block(11, 2, 1, 2, 2)
        .skip(1.0)
        .mask(Mask::None)
        .build()
        .unwrap();
    check(&additive, &biased, 2);
    let narrow = block(13, 2, 2, 1, 1)
        .mask(Mask::Diagonal)
        .scale(0.3)
        .skip(0.0)
        .build()
        .unwrap();
    check(&narrow, &additive, 2);
    check(&biased, &narrow, 3);
    for block in [&plain, &biased, &additive, &narrow] {
        check_self(block, 2);
    }
    check_self(&biased, 3);
}
