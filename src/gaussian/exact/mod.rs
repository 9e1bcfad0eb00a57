//! The exact Gaussian inner product of vector chains at depth
//! ([SPEC §3](crate::spec#3-gaussian-functional-similarity)).
//!
//! A chain of position-wise CP blocks (linear and bilinear blocks, biases
//! and residuals included: all are padded CP factors) computes a polynomial
//! of its padded input `x̃ = (1, x)`, and in CP form that polynomial is a
//! **tree**: each block of order `k ≥ 2` is a node whose `k` children are
//! the previous such block (linear blocks in between are matrices on the
//! edges), and the leaves are `k_1 · k_2 ⋯` legs `U_j x̃` of the first one.
//! With `x = μ + F g`, `g ∼ N(0, I)`, leg `j` of a first-level unit `ρ` is
//! `c_j[ρ] + W_j[ρ,:] g`, and `E[f_A · f_B]` is Isserlis' sum over the
//! partial matchings of **all** legs of both trees: a singleton contributes
//! its mean `c_j`, a pair `W_i W_jᵀ`, and each matching is one tensor
//! network over the trees' hidden units.
//!
//! Three things make the sum small:
//!
//! * each tree is **symmetrised** (every node's CP terms repeated under all
//!   `k!` orders of its legs, with weight `1/k!`): the same polynomial, so
//!   the same value, but now permuting a node's legs or children is a
//!   symmetry of the network;
//! * the legs a first-level node pairs among themselves or leaves single
//!   are summed apart, `α_e[ρ]` (the partial matchings of its last `k − e`
//!   legs), so that only the **multigraph** of the pairs between nodes
//!   remains ([`orbits`]);
//! * multigraphs that the permutations of the upper nodes' children map to
//!   each other contract to the same value: one contraction per orbit.
//!
//! Each orbit's network (a node per tree node, a matrix per edge) is
//! contracted by variable elimination ([`network`]), cheapest variable
//! first, GEMMs where the network allows. Costs and orbit counts are in
//! [the metrics guide](crate::guide::metrics#exact-at-depth).

mod network;
pub(crate) mod orbits;

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use self::network::{Factor, contract};
use self::orbits::{Shape, bottom_instances, permutations};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::resources::MemoryLimit;
use crate::scalar::{LogScaled, Real, to_f64};

/// The highest degree (product of the block orders) of a chain that the
/// exact sum takes: three bilinear blocks.
pub const MAX_EXACT_DEGREE: usize = 8;

/// The branching orders (bottom first) of a model the exact sum takes: a
/// chain of position-wise CP blocks of degree at most
/// [`MAX_EXACT_DEGREE`]; `None` for any other model. A purely linear chain
/// is `[1]`.
pub(crate) fn shape<T: Real>(model: &Model<T>) -> Option<Shape> {
    let mut orders = Vec::new();
    let mut degree = 1usize;
    for block in model.blocks() {
        if block.mixes_positions() {
            return None;
        }
        let k = block.as_cp()?.order();
        if k >= 2 {
            degree = degree.checked_mul(k)?;
            orders.push(k);
        }
    }
    if degree > MAX_EXACT_DEGREE {
        return None;
    }
    if orders.is_empty() {
        orders.push(1);
    }
    Some(orders)
}

/// The input law of the legs: `x = μ + F g`.
pub(crate) struct InputLaw<'a> {
    pub(crate) mean: &'a DVector<f64>,
    /// `None`: `F = I`.
    pub(crate) factor: Option<&'a DMatrix<f64>>,
}

/// One model as a symmetrised tree, its factors divided by their largest
/// entry and the scale kept apart.
struct Tree {
    shape: Shape,
    /// Per level (bottom first): the symmetrised rank.
    ranks: Vec<usize>,
    /// `α_e` for `e = 0..=k_1` exported legs (the first `e`), over the bottom units.
    alpha: Vec<DVector<f64>>,
    /// The bottom legs' noise maps `W_j` (`r_1 × dim g`).
    noise: Vec<DMatrix<f64>>,
    /// `edges[ℓ − 1][j]`: slot `j` of level `ℓ ≥ 1`, `r_ℓ × r_{ℓ−1}`.
    edges: Vec<Vec<DMatrix<f64>>>,
    /// The non-constant outputs from the top level's units: `n × r_top`.
    top: DMatrix<f64>,
    /// `ln` of the factor the tree's values were divided by.
    ln_scale: f64,
}

impl Tree {
    fn new<T: Real>(model: &Model<T>, shape: Shape, law: &InputLaw<'_>) -> Self {
        let d = model.input_width();
        // Maps into each branching level's legs, from the previous level's
        // units (from x̃ for the first).
        let mut pending = DMatrix::<f64>::identity(d + 1, d + 1);
        let mut levels: Vec<Vec<DMatrix<f64>>> = Vec::new();
        for block in model.blocks() {
            let cp = block.as_cp().expect("shape() accepted only CP blocks");
            let legs: Vec<DMatrix<f64>> = (0..cp.order())
                .map(|j| cp.input(j).map(to_f64::<T>))
                .collect();
            let output = cp.output().map(|o| o.map(to_f64::<T>));
            if cp.order() == 1 {
                let m = &legs[0] * &pending;
                pending = match output {
                    Some(o) => o * m,
                    None => m,
                };
            } else {
                levels.push(legs.iter().map(|u| u * &pending).collect());
                pending = output.unwrap_or_else(|| DMatrix::identity(cp.rank(), cp.rank()));
            }
        }
        if levels.is_empty() {
            let n = pending.nrows();
            levels.push(vec![pending]);
            pending = DMatrix::identity(n, n);
        }
        let mut top = pending.rows(1, pending.nrows() - 1).into_owned();

        // The first level's legs: means and noise maps.
        let bottom = levels.remove(0);
        let mut means: Vec<DMatrix<f64>> = Vec::new();
        let mut noise: Vec<DMatrix<f64>> = Vec::new();
        for s in &bottom {
            let linear = s.columns(1, d);
            let c = s.column(0) + linear * law.mean;
            means.push(DMatrix::from_column_slice(c.len(), 1, c.as_slice()));
            noise.push(match law.factor {
                Some(f) => linear * f,
                None => linear.into_owned(),
            });
        }
        let mut edges = levels;

        // Symmetrise bottom-up: a level's rows under every order of its
        // slots, the level above reading each copy with weight 1/k!.
        let mut ranks = Vec::with_capacity(shape.len());
        let k0 = shape[0];
        means = symmetrise_rows(&means);
        noise = symmetrise_rows(&noise);
        ranks.push(means[0].nrows());
        spread_columns(edges.first_mut().map(|e| &mut e[..]), &mut top, k0);
        for level in 0..edges.len() {
            let k = edges[level].len();
            edges[level] = symmetrise_rows(&edges[level]);
            ranks.push(edges[level][0].nrows());
            let (_, above) = edges.split_at_mut(level + 1);
            spread_columns(above.first_mut().map(|e| &mut e[..]), &mut top, k);
        }

        // Normalise: every tree holds each factor family the same number of
        // times in every matching, so the scales come out as one factor.
        let mut ln_scale = 0.0;
        let degree: usize = shape.iter().product();
        let legs_scale = means
            .iter()
            .chain(&noise)
            .fold(0.0f64, |m, x| m.max(x.amax()));
        ln_scale += degree as f64 * divide(&mut means, legs_scale);
        divide(&mut noise, legs_scale);
        for (level, slots) in edges.iter_mut().enumerate() {
            let s = slots.iter().fold(0.0f64, |m, x| m.max(x.amax()));
            // Level ℓ = level + 1 has Π_{ℓ' ≥ ℓ} k instances of its edges.
            let copies: usize = shape[level + 1..].iter().product();
            ln_scale += copies as f64 * divide(slots, s);
        }
        let s = top.amax();
        ln_scale += divide(std::slice::from_mut(&mut top), s);

        let alpha = (0..=k0).map(|e| alpha(&means, &noise, e)).collect();
        Self {
            shape,
            ranks,
            alpha,
            noise,
            edges,
            top,
            ln_scale,
        }
    }

    /// Instances at `level`: the product of the orders above it.
    fn instances(&self, level: usize) -> usize {
        self.shape[level + 1..].iter().product()
    }
}

/// Divides every matrix by `s` and returns `ln s` (`-∞` for `s = 0`, the
/// matrices then left as they are).
fn divide(ms: &mut [DMatrix<f64>], s: f64) -> f64 {
    if s > 0.0 && s.is_finite() {
        ms.iter_mut().for_each(|m| *m /= s);
    }
    s.ln()
}

/// Slot `j`'s rows under every permutation `σ` of the `k` slots: block `σ`
/// of the new slot `j` is old slot `σ(j)`.
fn symmetrise_rows(slots: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    let k = slots.len();
    if k == 1 {
        return slots.to_vec();
    }
    let perms = permutations(k);
    let (r, c) = slots[0].shape();
    (0..k)
        .map(|j| {
            let mut m = DMatrix::zeros(r * perms.len(), c);
            for (p, sigma) in perms.iter().enumerate() {
                m.rows_mut(p * r, r).copy_from(&slots[sigma[j]]);
            }
            m
        })
        .collect()
}

/// The level above a symmetrised one (or the outputs): each column repeated
/// `k!` times with weight `1/k!`.
fn spread_columns(above: Option<&mut [DMatrix<f64>]>, top: &mut DMatrix<f64>, k: usize) {
    if k == 1 {
        return;
    }
    let copies: usize = (1..=k).product();
    let spread = |m: &DMatrix<f64>| {
        let (r, c) = m.shape();
        let mut out = DMatrix::zeros(r, c * copies);
        for p in 0..copies {
            out.columns_mut(p * c, c).copy_from(&(m / copies as f64));
        }
        out
    };
    match above {
        Some(slots) => slots.iter_mut().for_each(|m| *m = spread(m)),
        None => *top = spread(top),
    }
}

/// `α_e[ρ]`: the sum over the partial matchings of legs `e..k` of one
/// bottom unit: a singleton its mean, a pair the dot product of its noise rows.
fn alpha(means: &[DMatrix<f64>], noise: &[DMatrix<f64>], e: usize) -> DVector<f64> {
    fn rec(legs: &[usize], means: &[DMatrix<f64>], noise: &[DMatrix<f64>]) -> DVector<f64> {
        let r = means[0].nrows();
        let Some((&first, rest)) = legs.split_first() else {
            return DVector::from_element(r, 1.0);
        };
        let mut out = rec(rest, means, noise).component_mul(&means[first].column(0));
        for (i, &other) in rest.iter().enumerate() {
            let mut left = rest.to_vec();
            left.remove(i);
            let pair = DVector::from_fn(r, |rho, _| {
                noise[first].row(rho).dot(&noise[other].row(rho))
            });
            out += rec(&left, means, noise).component_mul(&pair);
        }
        out
    }
    let legs: Vec<usize> = (e..means.len()).collect();
    rec(&legs, means, noise)
}

/// The networks of two trees: one variable per tree node (both trees'
/// bottom instances first, in the numbering of [`orbits`]), the fixed
/// factors (tree edges, the outputs' inner product), and per orbit the
/// bottom units' `α` and the pair matrices.
struct Network<'t> {
    trees: [&'t Tree; 2],
    sizes: Vec<usize>,
    /// A's bottom instances (B's follow).
    na: usize,
    fixed: Vec<Factor>,
    /// `pairs[x][y][s][t] = W_s W_tᵀ` between leg `s` of a bottom unit of
    /// tree `x` and leg `t` of one of tree `y` (empty without data).
    pairs: [[Vec<Vec<DMatrix<f64>>>; 2]; 2],
}

impl<'t> Network<'t> {
    fn new(a: &'t Tree, b: &'t Tree, data: bool) -> Self {
        let trees = [a, b];
        let (na, nb) = (bottom_instances(&a.shape), bottom_instances(&b.shape));
        let mut sizes = vec![a.ranks[0]; na];
        sizes.extend(std::iter::repeat_n(b.ranks[0], nb));
        // first[side][level]: the variable of that level's instance 0.
        let mut first = [vec![0usize; a.shape.len()], vec![na; b.shape.len()]];
        for (t, firsts) in trees.iter().zip(&mut first) {
            for (level, f) in firsts.iter_mut().enumerate().skip(1) {
                *f = sizes.len();
                sizes.extend(std::iter::repeat_n(t.ranks[level], t.instances(level)));
            }
        }
        let matrix = |row: usize, col: usize, m: &DMatrix<f64>| match data {
            true => Factor::matrix(row, col, m),
            false => Factor::shape(vec![row, col]),
        };
        let mut fixed = Vec::new();
        for (side, t) in trees.iter().enumerate() {
            for level in 1..t.shape.len() {
                let k = t.shape[level];
                for p in 0..t.instances(level) {
                    for (j, e) in t.edges[level - 1].iter().enumerate() {
                        let child = first[side][level - 1] + p * k + j;
                        fixed.push(matrix(first[side][level] + p, child, e));
                    }
                }
            }
        }
        let tops = (first[0][a.shape.len() - 1], first[1][b.shape.len() - 1]);
        let outputs = if data {
            a.top.tr_mul(&b.top)
        } else {
            DMatrix::zeros(0, 0)
        };
        fixed.push(matrix(tops.0, tops.1, &outputs));
        let pairs = [0, 1].map(|x| {
            [0, 1].map(|y| {
                if !data {
                    return Vec::new();
                }
                let (tx, ty) = (trees[x], trees[y]);
                tx.noise
                    .iter()
                    .map(|ws| ty.noise.iter().map(|wt| ws * wt.transpose()).collect())
                    .collect()
            })
        });
        Self {
            trees,
            sizes,
            na,
            fixed,
            pairs,
        }
    }

    /// The tree (0: A, 1: B) of a bottom instance.
    fn side(&self, n: usize) -> usize {
        usize::from(n >= self.na)
    }

    /// One orbit's factors; with `data` false their variables only.
    fn factors(&self, orbit: &orbits::Orbit, data: bool) -> Vec<Factor> {
        let mut factors = self.fixed.clone();
        for (n, &e) in orbit.degrees.iter().enumerate() {
            let t = self.trees[self.side(n)];
            if e < t.shape[0] {
                factors.push(match data {
                    true => Factor::vector(n, t.alpha[e].as_slice().to_vec()),
                    false => Factor::shape(vec![n]),
                });
            }
        }
        // Each instance's exported legs, in order, go to its edges.
        let mut next = vec![0usize; orbit.degrees.len()];
        for &(n, m, mu) in &orbit.edges {
            if !data {
                factors.push(Factor::shape(vec![n, m]));
                continue;
            }
            let pairs = &self.pairs[self.side(n)][self.side(m)];
            let mut h = pairs[next[n]][next[m]].clone();
            for _ in 1..mu {
                next[n] += 1;
                next[m] += 1;
                h.component_mul_assign(&pairs[next[n]][next[m]]);
            }
            next[n] += 1;
            next[m] += 1;
            factors.push(Factor::matrix(n, m, &h));
        }
        factors
    }
}

/// Each orbit's elimination order, and an estimate of the peak bytes of
/// [`inner`]: the largest elimination step of any orbit once per thread,
/// beside the trees, their pair matrices and each thread's fixed factors.
fn plans(a: &Tree, b: &Tree) -> (Vec<Vec<usize>>, f64) {
    let network = Network::new(a, b, false);
    let planned: Vec<(Vec<usize>, f64)> = orbits::orbits(&a.shape, &b.shape)
        .par_iter()
        .map(|orbit| {
            let vars = network
                .factors(orbit, false)
                .into_iter()
                .map(|f| f.vars)
                .collect();
            network::plan(&network.sizes, vars)
        })
        .collect();
    let step = planned.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let orders = planned.into_iter().map(|p| p.0).collect();
    let entries = |t: &Tree| {
        let m = |x: &DMatrix<f64>| x.len() as f64;
        t.noise.iter().map(m).sum::<f64>()
            + t.edges.iter().flatten().map(m).sum::<f64>()
            + m(&t.top)
    };
    let widest = network.sizes.iter().copied().max().unwrap_or(0) as f64;
    let legs = (a.shape[0] + b.shape[0]) as f64;
    let per_thread = step + (network.fixed.len() as f64 + 2.0 * legs) * widest * widest;
    let bytes = 8.0
        * (entries(a)
            + entries(b)
            + legs * legs * widest * widest
            + rayon::current_num_threads() as f64 * per_thread);
    (orders, bytes)
}

/// `E[f_A · f_B]` (one position) of two trees, in their scales: the sum
/// over the orbits, each contracted once in its planned order (in
/// parallel, summed in order).
fn inner(a: &Tree, b: &Tree, orders: &[Vec<usize>]) -> LogScaled {
    if !(a.ln_scale.is_finite() && b.ln_scale.is_finite()) {
        return LogScaled::ZERO;
    }
    let network = Network::new(a, b, true);
    let orbits = orbits::orbits(&a.shape, &b.shape);
    let terms: Vec<f64> = orbits
        .par_iter()
        .zip(orders)
        .map(|(orbit, order)| {
            orbit.count * contract(&network.sizes, order, network.factors(orbit, true))
        })
        .collect();
    LogScaled::from_scaled(terms.iter().sum(), a.ln_scale + b.ln_scale)
}

/// `⟨f_A, f_B⟩`, `⟨f_A, f_A⟩`, `⟨f_B, f_B⟩` exactly, for models whose
/// [`shape`] is `Some`, per position (the caller multiplies by the
/// context); an error if the estimated memory exceeds `limit`.
pub(crate) fn inner_products<T: Real>(
    a: &Model<T>,
    b: &Model<T>,
    (sa, sb): (Shape, Shape),
    law: &InputLaw<'_>,
    limit: MemoryLimit,
) -> Result<[LogScaled; 3]> {
    let ta = Tree::new(a, sa, law);
    let tb = Tree::new(b, sb, law);
    let pairs = [(&ta, &tb), (&ta, &ta), (&tb, &tb)];
    let plans = pairs.map(|(x, y)| plans(x, y));
    check_memory(plans.iter().map(|p| p.1).fold(0.0, f64::max), limit)?;
    Ok([0, 1, 2].map(|i| inner(pairs[i].0, pairs[i].1, &plans[i].0)))
}

/// `⟨f_A, f_A⟩` exactly, as [`inner_products`].
pub(crate) fn squared_norm<T: Real>(
    a: &Model<T>,
    sa: Shape,
    law: &InputLaw<'_>,
    limit: MemoryLimit,
) -> Result<LogScaled> {
    let t = Tree::new(a, sa, law);
    let (orders, need) = plans(&t, &t);
    check_memory(need, limit)?;
    Ok(inner(&t, &t, &orders))
}

fn check_memory(need: f64, limit: MemoryLimit) -> Result<()> {
    let (max, what) = limit.resolve();
    if need <= max {
        return Ok(());
    }
    Err(Error::ExactGaussianMemory {
        estimate: crate::resources::bytes(need),
        limit: what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bilinear, GaussianSimilarity, Linear, RecursiveSimilarity};

    fn m(rows: usize, cols: usize, seed: usize) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| {
            ((((i * 7 + j * 13 + seed * 31) * 2654435761) % 1000) as f64 / 500.0) - 1.0
        })
    }

    fn v(len: usize, seed: usize) -> DVector<f64> {
        m(len, 1, seed).column(0).into_owned()
    }

    fn bilinear(mi: usize, h: usize, n: usize, seed: usize, skip: bool) -> Bilinear {
        let b = Bilinear::builder(m(h, mi, seed), m(h, mi, seed + 1))
            .down(m(n, h, seed + 2))
            .left_bias(v(h, seed + 3))
            .right_bias(v(h, seed + 4))
            .down_bias(v(n, seed + 5));
        if skip { b.skip(1.0) } else { b }.build().unwrap()
    }

    fn linear(mi: usize, n: usize, seed: usize) -> Linear {
        Linear::new(m(n, mi, seed), Some(v(n, seed + 1))).unwrap()
    }

    /// The exact sum against moment propagation where that is exact too.
    #[test]
    fn agrees_with_moment_propagation_where_that_is_exact() {
        let mean = v(3, 40) * 0.5;
        let cov = {
            let f = m(3, 3, 41) * 0.6 + DMatrix::identity(3, 3);
            &f * f.transpose()
        };
        let metric = GaussianSimilarity::new()
            .with_input(mean.clone(), cov.clone())
            .unwrap();
        let factor = metric.factor.clone().unwrap();
        let law = InputLaw {
            mean: &mean,
            factor: Some(&factor),
        };
        let cases: Vec<(Model, Model)> = vec![
            (
                Model::builder()
                    .block(bilinear(3, 4, 2, 1, false))
                    .build()
                    .unwrap(),
                Model::builder()
                    .block(bilinear(3, 3, 2, 9, false))
                    .build()
                    .unwrap(),
            ),
            (
                Model::builder()
                    .block(linear(3, 3, 5))
                    .block(bilinear(3, 2, 3, 2, true))
                    .block(linear(3, 2, 6))
                    .build()
                    .unwrap(),
                Model::builder()
                    .block(linear(3, 2, 7))
                    .block(bilinear(2, 3, 2, 3, false))
                    .block(linear(2, 2, 8))
                    .build()
                    .unwrap(),
            ),
            (
                Model::builder().block(linear(3, 3, 10)).build().unwrap(),
                Model::builder()
                    .block(bilinear(3, 5, 3, 11, true))
                    .build()
                    .unwrap(),
            ),
        ];
        for (a, b) in cases {
            let shapes = (shape(&a).unwrap(), shape(&b).unwrap());
            let [cross, aa, bb] =
                inner_products(&a, &b, shapes, &law, MemoryLimit::Machine).unwrap();
            let close = |x: LogScaled, y: LogScaled| {
                (x.to_f64() - y.to_f64()).abs() <= 1e-11 * y.to_f64().abs().max(1e-300)
            };
            assert!(close(cross, metric.inner_product(&a, &b).unwrap()));
            assert!(close(aa, metric.squared_norm(&a).unwrap()));
            assert!(close(bb, metric.squared_norm(&b).unwrap()));
        }
    }
}
#[cfg(test)]
mod timing {
    use super::*;
    use crate::{Bilinear, Model};

    #[test]
    #[ignore]
    fn time_depth_three() {
        let m = |r: usize, c: usize, s: usize| {
            DMatrix::from_fn(r, c, |i, j| {
                (((i * 7 + j * 13 + s * 31) * 2654435761) % 1000) as f64 / 500.0 - 1.0
            })
        };
        let model = |s: usize, d: usize, h: usize| {
            let mut b = Model::builder();
            for k in 0..3 {
                b = b.block(
                    Bilinear::builder(m(h, d, s + k), m(h, d, s + k + 7))
                        .down(m(d, h, s + k + 3))
                        .build()
                        .unwrap(),
                );
            }
            b.build().unwrap()
        };
        let mean = DVector::zeros(2);
        let law = InputLaw {
            mean: &mean,
            factor: None,
        };
        let (a, b) = (model(1, 2, 2), model(2, 2, 2));
        let _ = orbits::orbits(&vec![2, 2, 2], &vec![2, 2, 2]);
        let (ta, tb) = (
            Tree::new(&a, shape(&a).unwrap(), &law),
            Tree::new(&b, shape(&b).unwrap(), &law),
        );
        let t = std::time::Instant::now();
        let (orders, x) = plans(&ta, &tb);
        eprintln!("peak {x} in {:?}, ranks {:?}", t.elapsed(), ta.ranks);
        let t = std::time::Instant::now();
        let v = inner(&ta, &tb, &orders);
        eprintln!("inner {v:?} in {:?}", t.elapsed());
    }
}
