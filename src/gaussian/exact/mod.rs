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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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
    outline: Outline,
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
        let k0 = shape[0];
        means = symmetrise_rows(&means);
        noise = symmetrise_rows(&noise);
        spread_columns(edges.first_mut().map(|e| &mut e[..]), &mut top, k0);
        for level in 0..edges.len() {
            let k = edges[level].len();
            edges[level] = symmetrise_rows(&edges[level]);
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
        let noise_width = noise[0].ncols();
        let outline = Outline::of(model, shape, noise_width);
        // The plans are made from the outline alone: it must be these matrices'.
        debug_assert_eq!(outline.ranks[0], means[0].nrows());
        debug_assert!(
            edges
                .iter()
                .zip(&outline.ranks[1..])
                .all(|(e, &r)| e[0].nrows() == r)
        );
        Self {
            outline,
            alpha,
            noise,
            edges,
            top,
            ln_scale,
        }
    }
}

/// What the cost of a tree's sums depends on: its shape, its levels'
/// symmetrised ranks and the width of `g`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Outline {
    shape: Shape,
    /// Per level (bottom first): the symmetrised rank.
    ranks: Vec<usize>,
    /// The columns of the noise maps `W_j`: the width of `g`.
    noise_width: usize,
}

impl Outline {
    /// A model's outline without building its tree: the ranks
    /// [`Tree::new`]'s symmetrised matrices have (the one place they are
    /// computed).
    pub(crate) fn of<T: Real>(model: &Model<T>, shape: Shape, noise_width: usize) -> Self {
        let factorial = |k: usize| (1..=k).product::<usize>();
        let mut ranks: Vec<usize> = model
            .blocks()
            .iter()
            .filter_map(|b| b.as_cp())
            .filter(|cp| cp.order() >= 2)
            .map(|cp| cp.rank().saturating_mul(factorial(cp.order())))
            .collect();
        if ranks.is_empty() {
            ranks.push(model.output_width() + 1);
        }
        Self {
            shape,
            ranks,
            noise_width,
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

/// The network of two trees for one orbit. Variables: one per tree node
/// (both trees' bottom instances first, in the numbering of [`orbits`]),
/// and with `Pairing::ByNoise` one per matched pair of legs (a coordinate
/// of `g`). Factors: the tree edges, the outputs' inner product between the
/// roots, `α` at the bottom units, and the matched pairs, as one matrix
/// `W_s W_tᵀ` between the two units (`ByUnits`) or as the two noise maps
/// meeting at the pair's variable (`ByNoise`, cheaper when `g` is narrower
/// than the units).
struct Network<'t> {
    outlines: [&'t Outline; 2],
    /// The trees' data; `None` to plan only.
    trees: Option<[&'t Tree; 2]>,
    sizes: Vec<usize>,
    /// A's bottom instances (B's follow).
    na: usize,
    fixed: Vec<Factor>,
    /// `pairs[x][y][s][t] = W_s W_tᵀ` between leg `s` of a bottom unit of
    /// tree `x` and leg `t` of one of tree `y` (empty without data).
    pairs: [[Vec<Vec<DMatrix<f64>>>; 2]; 2],
}

/// How a matched pair of legs enters an orbit's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pairing {
    ByUnits,
    ByNoise,
}

impl<'t> Network<'t> {
    fn new(outlines: [&'t Outline; 2], trees: Option<[&'t Tree; 2]>) -> Self {
        let [a, b] = outlines;
        let (na, nb) = (bottom_instances(&a.shape), bottom_instances(&b.shape));
        let mut sizes = vec![a.ranks[0]; na];
        sizes.extend(std::iter::repeat_n(b.ranks[0], nb));
        // first[side][level]: the variable of that level's instance 0.
        let mut first = [vec![0usize; a.shape.len()], vec![na; b.shape.len()]];
        for (t, firsts) in outlines.iter().zip(&mut first) {
            for (level, f) in firsts.iter_mut().enumerate().skip(1) {
                *f = sizes.len();
                sizes.extend(std::iter::repeat_n(t.ranks[level], t.instances(level)));
            }
        }
        let matrix = |row: usize, col: usize, m: Option<&DMatrix<f64>>| match m {
            Some(m) => Factor::matrix(row, col, m),
            None => Factor::shape(vec![row, col]),
        };
        let mut fixed = Vec::new();
        for (side, t) in outlines.iter().enumerate() {
            for level in 1..t.shape.len() {
                let k = t.shape[level];
                for p in 0..t.instances(level) {
                    for j in 0..k {
                        let child = first[side][level - 1] + p * k + j;
                        let e = trees.map(|tr| &tr[side].edges[level - 1][j]);
                        fixed.push(matrix(first[side][level] + p, child, e));
                    }
                }
            }
        }
        let tops = (first[0][a.shape.len() - 1], first[1][b.shape.len() - 1]);
        let outputs = trees.map(|[ta, tb]| ta.top.tr_mul(&tb.top));
        fixed.push(matrix(tops.0, tops.1, outputs.as_ref()));
        let pairs = [0, 1].map(|x| {
            [0, 1].map(|y| match trees {
                None => Vec::new(),
                Some(tr) => tr[x]
                    .noise
                    .iter()
                    .map(|ws| tr[y].noise.iter().map(|wt| ws * wt.transpose()).collect())
                    .collect(),
            })
        });
        Self {
            outlines,
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

    /// One orbit's variables' sizes and factors (their variables only,
    /// without data).
    fn factors(&self, orbit: &orbits::Orbit, pairing: Pairing) -> (Vec<usize>, Vec<Factor>) {
        let mut sizes = self.sizes.clone();
        let mut factors = self.fixed.clone();
        for (n, &e) in orbit.degrees.iter().enumerate() {
            let side = self.side(n);
            if e < self.outlines[side].shape[0] {
                factors.push(match self.trees {
                    Some(tr) => Factor::vector(n, tr[side].alpha[e].as_slice().to_vec()),
                    None => Factor::shape(vec![n]),
                });
            }
        }
        // Each instance's exported legs, in order, go to its edges.
        let mut next = vec![0usize; orbit.degrees.len()];
        for &(n, m, mu) in &orbit.edges {
            let (sn, sm) = (self.side(n), self.side(m));
            match pairing {
                Pairing::ByUnits => {
                    let mut h = self.pairs[sn][sm].get(next[n]).map(|p| p[next[m]].clone());
                    for _ in 1..mu {
                        next[n] += 1;
                        next[m] += 1;
                        if let Some(h) = h.as_mut() {
                            h.component_mul_assign(&self.pairs[sn][sm][next[n]][next[m]]);
                        }
                    }
                    next[n] += 1;
                    next[m] += 1;
                    factors.push(match h {
                        Some(h) => Factor::matrix(n, m, &h),
                        None => Factor::shape(vec![n, m]),
                    });
                }
                Pairing::ByNoise => {
                    for _ in 0..mu {
                        let g = sizes.len();
                        sizes.push(self.outlines[sn].noise_width);
                        for (unit, side, slot) in [(n, sn, next[n]), (m, sm, next[m])] {
                            factors.push(match self.trees {
                                Some(tr) => Factor::matrix(unit, g, &tr[side].noise[slot]),
                                None => Factor::shape(vec![unit, g]),
                            });
                        }
                        next[n] += 1;
                        next[m] += 1;
                    }
                }
            }
        }
        (sizes, factors)
    }
}

/// The plans of one pair of trees: per orbit how its pairs enter and the
/// elimination order, with the largest step's entries and the total work.
struct Plans {
    orbits: Vec<(Pairing, Vec<usize>)>,
    peak: f64,
    flops: f64,
}

/// The cheaper of the two networks of each orbit, planned (in parallel);
/// computed once per process and pair of outlines.
fn plans(a: &Outline, b: &Outline) -> Arc<Plans> {
    type Cache = Mutex<HashMap<(Outline, Outline), Arc<Plans>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (a.clone(), b.clone());
    if let Some(found) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return found.clone();
    }
    let network = Network::new([a, b], None);
    let planned: Vec<(Pairing, network::Plan)> = orbits::orbits(&a.shape, &b.shape)
        .par_iter()
        .map(|orbit| {
            [Pairing::ByUnits, Pairing::ByNoise]
                .map(|pairing| {
                    let (sizes, factors) = network.factors(orbit, pairing);
                    let vars = factors.into_iter().map(|f| f.vars).collect();
                    (pairing, network::plan(&sizes, vars))
                })
                .into_iter()
                .min_by(|x, y| x.1.flops.total_cmp(&y.1.flops))
                .expect("two plans")
        })
        .collect();
    let plans = Arc::new(Plans {
        peak: planned.iter().map(|p| p.1.peak).fold(0.0, f64::max),
        flops: planned.iter().map(|p| p.1.flops).sum(),
        orbits: planned
            .into_iter()
            .map(|(pairing, p)| (pairing, p.order))
            .collect(),
    });
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    // A matrix over many architectures must not grow the cache without end.
    if cache.len() >= 64 {
        cache.clear();
    }
    cache.entry(key).or_insert(plans).clone()
}

/// An estimate of the peak bytes of [`inner`] under `plans`: the largest
/// step once per thread, beside the trees, their pair matrices and each
/// thread's copy of the fixed factors.
fn peak_bytes(a: &Outline, b: &Outline, plans: &Plans) -> f64 {
    let rank = |o: &Outline| o.ranks.iter().copied().max().unwrap_or(0) as f64;
    let widest = rank(a).max(rank(b));
    let legs = (a.shape[0] + b.shape[0]) as f64;
    let nodes = |o: &Outline| (0..o.shape.len()).map(|l| o.instances(l)).sum::<usize>() as f64;
    let per_thread = plans.peak + (nodes(a) + nodes(b) + 2.0 * legs) * widest * widest;
    8.0 * (2.0 * legs * widest * (widest + a.noise_width as f64)
        + legs * legs * widest * widest
        + rayon::current_num_threads() as f64 * per_thread)
}

/// `E[f_A · f_B]` (one position) of two trees, in their scales: the sum
/// over the orbits, each contracted once by its plan (in parallel, summed
/// in order).
fn inner(a: &Tree, b: &Tree, plans: &Plans) -> LogScaled {
    if !(a.ln_scale.is_finite() && b.ln_scale.is_finite()) {
        return LogScaled::ZERO;
    }
    let network = Network::new([&a.outline, &b.outline], Some([a, b]));
    let orbits = orbits::orbits(&a.outline.shape, &b.outline.shape);
    let terms: Vec<f64> = orbits
        .par_iter()
        .zip(&plans.orbits)
        .map(|(orbit, (pairing, order))| {
            let (sizes, factors) = network.factors(orbit, *pairing);
            orbit.count * contract(&sizes, order, factors)
        })
        .collect();
    LogScaled::from_scaled(terms.iter().sum(), a.ln_scale + b.ln_scale)
}

/// The multiply-adds of the exact sum for two models (their three inner
/// products, or one for a model with itself) and the estimated peak bytes.
pub(crate) fn cost(a: &Outline, b: &Outline) -> (f64, f64) {
    let pairs = if a == b {
        vec![(a, a)]
    } else {
        vec![(a, b), (a, a), (b, b)]
    };
    pairs.iter().fold((0.0, 0.0), |(flops, bytes), (x, y)| {
        let p = plans(x, y);
        (flops + p.flops, f64::max(bytes, peak_bytes(x, y, &p)))
    })
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
    check_memory(cost(&ta.outline, &tb.outline).1, limit)?;
    let pairs = [(&ta, &tb), (&ta, &ta), (&tb, &tb)];
    Ok(pairs.map(|(x, y)| inner(x, y, &plans(&x.outline, &y.outline))))
}

/// `⟨f_A, f_A⟩` exactly, as [`inner_products`].
pub(crate) fn squared_norm<T: Real>(
    a: &Model<T>,
    sa: Shape,
    law: &InputLaw<'_>,
    limit: MemoryLimit,
) -> Result<LogScaled> {
    let t = Tree::new(a, sa, law);
    check_memory(cost(&t.outline, &t.outline).1, limit)?;
    Ok(inner(&t, &t, &plans(&t.outline, &t.outline)))
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
        let factor = metric.input.factor(3).unwrap().unwrap().clone();
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
mod work {
    use super::*;
    use crate::{Bilinear, Linear};

    /// The planned work of the bench's chains (`benches/gaussian.rs`,
    /// `gaussian_depth`), to set the default work limit against measured
    /// times (`cargo test --lib planned_work -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn planned_work() {
        let m = |r: usize, c: usize| DMatrix::from_element(r, c, 0.1);
        for (depth, d, h) in [
            (2, 16, 32),
            (2, 32, 64),
            (3, 4, 4),
            (3, 6, 6),
            (3, 8, 8),
            (2, 64, 128),
        ] {
            let mut b = Model::builder();
            for _ in 0..depth {
                b = b.block(
                    Bilinear::builder(m(h, d), m(h, d))
                        .down(m(d, h))
                        .left_bias(DVector::from_element(h, 0.1))
                        .right_bias(DVector::from_element(h, 0.1))
                        .down_bias(DVector::from_element(d, 0.1))
                        .skip(1.0)
                        .build()
                        .unwrap(),
                );
            }
            let model = b
                .block(Linear::new(m(10, d), None).unwrap())
                .build()
                .unwrap();
            let o = Outline::of(&model, shape(&model).unwrap(), d);
            let (flops, bytes) = cost(&o, &o);
            eprintln!(
                "depth {depth} d {d} h {h}: ranks {:?}, {flops:.3e} multiply-adds per product, {bytes:.3e} bytes",
                o.ranks
            );
        }
    }
}
