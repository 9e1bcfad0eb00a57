//! Contraction of a tensor network by variable elimination.
//!
//! A network is a set of dense factors over named index variables (here the
//! hidden units of tree nodes); its value is the sum over every index of
//! the product of the factors. Variables are eliminated one at a time, the
//! cheapest first (the fewest entries in the product of the factors that
//! hold it); where one factor's other indices are its own, the step is a
//! matrix product (one GEMM), otherwise an explicit product and sum.

use nalgebra::DMatrix;

use crate::linalg::mul;

/// A dense factor: `data` over `vars`, the first variable varying fastest.
#[derive(Clone, Debug)]
pub(crate) struct Factor {
    pub(crate) vars: Vec<usize>,
    pub(crate) data: Vec<f64>,
}

impl Factor {
    /// A vector over one variable.
    pub(crate) fn vector(var: usize, data: Vec<f64>) -> Self {
        Self {
            vars: vec![var],
            data,
        }
    }

    /// A factor's variables without its data (for planning).
    pub(crate) fn shape(vars: Vec<usize>) -> Self {
        Self {
            vars,
            data: Vec::new(),
        }
    }

    /// A matrix `m[(i, j)]` over `(row, col)`.
    pub(crate) fn matrix(row: usize, col: usize, m: &DMatrix<f64>) -> Self {
        // nalgebra stores column-major: the row index varies fastest.
        Self {
            vars: vec![row, col],
            data: m.as_slice().to_vec(),
        }
    }
}

/// The value of the network, `Σ_indices Π_factors`, eliminating the
/// variables in `order` (a [`plan`]'s, for the same variables). `sizes[v]` is
/// the range of variable `v`.
pub(crate) fn contract(sizes: &[usize], order: &[usize], mut factors: Vec<Factor>) -> f64 {
    for &v in order {
        let (with, without): (Vec<Factor>, Vec<Factor>) =
            factors.into_iter().partition(|f| f.vars.contains(&v));
        factors = without;
        if !with.is_empty() {
            factors.push(eliminate(sizes, v, with));
        }
    }
    factors.iter().map(|f| f.data[0]).product()
}

/// How much an entry computed by an explicit product of factors costs
/// against one multiply-add of a GEMM (measured: the steps that are not a
/// matrix product run as scalar loops).
const SCALAR_WEIGHT: f64 = 20.0;

/// An elimination order and what it costs.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) order: Vec<usize>,
    /// The most entries one step holds at once (its dense operands and
    /// result): what the contraction's memory grows with.
    pub(crate) peak: f64,
    /// The work, in GEMM multiply-adds: those of the steps that are one
    /// GEMM, and each entry computed by explicit products as
    /// `SCALAR_WEIGHT` of them.
    pub(crate) flops: f64,
}

/// The cheapest of three greedy elimination orders for factors over
/// `vars`: always the variable with the smallest index space of its step,
/// with the smallest result, or whose result grows the network least.
pub(crate) fn plan(sizes: &[usize], vars: Vec<Vec<usize>>) -> Plan {
    let space = |f: &[&[usize]], v: usize| -> f64 {
        let mut union: Vec<usize> = f
            .iter()
            .filter(|g| g.contains(&v))
            .flat_map(|g| g.iter().copied())
            .collect();
        union.sort_unstable();
        union.dedup();
        union.iter().map(|&u| sizes[u] as f64).product()
    };
    let result = |f: &[&[usize]], v: usize| space(f, v) / sizes[v] as f64;
    // The growth of the network: the result less the factors it replaces.
    let fill = |f: &[&[usize]], v: usize| {
        let removed: f64 = f
            .iter()
            .filter(|g| g.contains(&v))
            .map(|g| g.iter().map(|&u| sizes[u] as f64).product::<f64>())
            .sum();
        result(f, v) - removed
    };
    let costs: [&Cost<'_>; 3] = [&space, &result, &fill];
    costs
        .into_iter()
        .map(|cost| greedy(sizes, vars.clone(), cost))
        .min_by(|x, y| x.flops.total_cmp(&y.flops))
        .expect("three plans")
}

/// A greedy order's cost of eliminating a variable next, given the
/// factors' variables.
type Cost<'a> = dyn Fn(&[&[usize]], usize) -> f64 + 'a;

/// The order that always eliminates the variable of least `cost`.
fn greedy(sizes: &[usize], mut vars: Vec<Vec<usize>>, cost: &Cost<'_>) -> Plan {
    let mut plan = Plan {
        order: Vec::new(),
        peak: 0.0,
        flops: 0.0,
    };
    loop {
        vars.retain(|f| !f.is_empty());
        let view: Vec<&[usize]> = vars.iter().map(|f| &f[..]).collect();
        let mut candidates: Vec<usize> = view.iter().flat_map(|f| f.iter().copied()).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let Some(v) = candidates
            .into_iter()
            .map(|v| (cost(&view, v), v))
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .map(|(_, v)| v)
        else {
            return plan;
        };
        plan.order.push(v);
        let (with, without): (Vec<Vec<usize>>, Vec<Vec<usize>>) =
            vars.into_iter().partition(|f| f.contains(&v));
        let step = Step::new(v, &with.iter().map(|f| &f[..]).collect::<Vec<_>>());
        plan.peak = plan.peak.max(step.entries(sizes));
        let (gemm, scalar) = step.work(sizes);
        plan.flops += gemm + SCALAR_WEIGHT * scalar;
        vars = without;
        vars.push(step.out);
    }
}

/// How one variable is summed out of the factors that hold it.
struct Step {
    v: usize,
    /// A factor whose other variables no other factor holds: the right
    /// operand of a matrix product `R[left, own] = Σ_v L[left, v] F[v, own]`.
    right: Option<usize>,
    /// The variables of `L` (all but `v` of the other factors).
    left: Vec<usize>,
    /// The right operand's variables but `v`.
    own: Vec<usize>,
    /// The result's variables.
    out: Vec<usize>,
    /// How many factors hold `v`.
    factors: usize,
}

impl Step {
    fn new(v: usize, factors: &[&[usize]]) -> Self {
        let own = |i: usize| {
            factors[i].iter().filter(|&&u| u != v).all(|u| {
                factors
                    .iter()
                    .enumerate()
                    .all(|(j, g)| j == i || !g.contains(u))
            })
        };
        let right = (0..factors.len())
            .filter(|&i| factors.len() > 1 && factors[i].len() > 1 && own(i))
            .max_by_key(|&i| factors[i].len());
        let others = |skip: Option<usize>| {
            let mut vars: Vec<usize> = factors
                .iter()
                .enumerate()
                .filter(|&(j, _)| Some(j) != skip)
                .flat_map(|(_, g)| g.iter().copied())
                .filter(|&u| u != v)
                .collect();
            vars.sort_unstable();
            vars.dedup();
            vars
        };
        let left = others(right);
        let own_vars: Vec<usize> = match right {
            Some(i) => factors[i].iter().copied().filter(|&u| u != v).collect(),
            None => Vec::new(),
        };
        let mut out = left.clone();
        out.extend(&own_vars);
        Self {
            v,
            right,
            left,
            own: own_vars,
            out,
            factors: factors.len(),
        }
    }

    /// The step's multiply-adds in one GEMM, and its entries computed by
    /// explicit products (each a product of its factors).
    fn work(&self, sizes: &[usize]) -> (f64, f64) {
        let size = |vars: &[usize]| vars.iter().map(|&u| sizes[u] as f64).product::<f64>();
        let rv = sizes[self.v] as f64;
        let left = size(&self.left) * rv * self.factors as f64;
        match self.right {
            Some(_) => (size(&self.left) * rv * size(&self.own), left),
            None => (0.0, left),
        }
    }

    /// The entries held at once: `L` (or the full product) and the result.
    fn entries(&self, sizes: &[usize]) -> f64 {
        let size = |vars: &[usize]| vars.iter().map(|&u| sizes[u] as f64).product::<f64>();
        let rv = sizes[self.v] as f64;
        let operands = match self.right {
            Some(_) => size(&self.left) * rv + rv * size(&self.own),
            None => size(&self.left) * rv,
        };
        operands + size(&self.out)
    }
}

/// The sum over `v` of the product of `factors` (all holding `v`).
fn eliminate(sizes: &[usize], v: usize, mut factors: Vec<Factor>) -> Factor {
    let step = Step::new(v, &factors.iter().map(|f| &f.vars[..]).collect::<Vec<_>>());
    let rows: usize = step.left.iter().map(|&u| sizes[u]).product();
    let mut l_vars = step.left.clone();
    l_vars.push(v);
    match step.right {
        Some(i) => {
            let f = factors.remove(i);
            // L over (left…, v), F over (v, own…): both as matrices.
            let l = product(sizes, &l_vars, &factors);
            let mut f_vars = vec![v];
            f_vars.extend(&step.own);
            let f = product(sizes, &f_vars, &[f]);
            let cols: usize = step.own.iter().map(|&u| sizes[u]).product();
            let l = DMatrix::from_vec(rows, sizes[v], l);
            let f = DMatrix::from_vec(sizes[v], cols, f);
            Factor {
                vars: step.out,
                data: mul(&l, &f).data.into(),
            }
        }
        None => {
            // The product over (left…, v), summed over v (the slowest).
            let full = product(sizes, &l_vars, &factors);
            let mut data = vec![0.0; rows];
            for chunk in full.chunks_exact(rows.max(1)) {
                data.iter_mut().zip(chunk).for_each(|(d, x)| *d += x);
            }
            Factor {
                vars: step.out,
                data,
            }
        }
    }
}

/// The product of `factors` as a dense array over `vars` (the first
/// fastest); every variable of a factor must be in `vars`.
fn product(sizes: &[usize], vars: &[usize], factors: &[Factor]) -> Vec<f64> {
    let shape: Vec<usize> = vars.iter().map(|&u| sizes[u]).collect();
    let total: usize = shape.iter().product();
    // Each factor's stride along each target variable (0 where it lacks it).
    let strides: Vec<Vec<usize>> = factors
        .iter()
        .map(|f| {
            let mut own = vec![0usize; f.vars.len()];
            let mut s = 1;
            for (k, &u) in f.vars.iter().enumerate() {
                own[k] = s;
                s *= sizes[u];
            }
            vars.iter()
                .map(|u| f.vars.iter().position(|w| w == u).map_or(0, |k| own[k]))
                .collect()
        })
        .collect();
    let mut out = vec![0.0; total];
    if total == 0 {
        return out;
    }
    let mut index = vec![0usize; vars.len()];
    let mut offsets = vec![0usize; factors.len()];
    let inner = shape.first().copied().unwrap_or(1);
    let mut at = 0;
    while at < total {
        // The fastest variable, in one pass.
        for i in 0..inner {
            let mut x = 1.0;
            for (f, (o, s)) in factors.iter().zip(offsets.iter().zip(&strides)) {
                x *= f.data[o + i * s.first().copied().unwrap_or(0)];
            }
            out[at + i] = x;
        }
        at += inner;
        // The odometer over the slower variables.
        let mut k = 1;
        while k < vars.len() {
            index[k] += 1;
            for (o, s) in offsets.iter_mut().zip(&strides) {
                *o += s[k];
            }
            if index[k] < shape[k] {
                break;
            }
            for (o, s) in offsets.iter_mut().zip(&strides) {
                *o -= s[k] * shape[k];
            }
            index[k] = 0;
            k += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DVector;

    fn planned(sizes: &[usize], factors: Vec<Factor>) -> f64 {
        let plan = plan(sizes, factors.iter().map(|f| f.vars.clone()).collect());
        contract(sizes, &plan.order, factors)
    }

    fn random(rows: usize, cols: usize, seed: u64) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| {
            (((i * 31 + j * 17) as u64 + seed * 7) % 13) as f64 / 6.0 - 1.0
        })
    }

    #[test]
    fn a_cycle_is_a_trace() {
        let sizes = [3, 4, 2];
        let (a, b, c) = (random(3, 4, 1), random(4, 2, 2), random(2, 3, 3));
        let want = (&a * &b * &c).trace();
        let got = planned(
            &sizes,
            vec![
                Factor::matrix(0, 1, &a),
                Factor::matrix(1, 2, &b),
                Factor::matrix(2, 0, &c),
            ],
        );
        assert!((got - want).abs() < 1e-12 * want.abs().max(1.0));
    }

    #[test]
    fn a_star_with_vectors_matches_the_sum() {
        // Σ_{i,j,k,l} x_i A_ij B_ik C_il y_l w_j: every index by hand.
        let sizes = [3, 2, 4, 3];
        let (a, b, c) = (random(3, 2, 4), random(3, 4, 5), random(3, 3, 6));
        let x = DVector::from_fn(3, |i, _| i as f64 - 0.5);
        let y = DVector::from_fn(3, |i, _| 1.0 + i as f64);
        let w = DVector::from_fn(2, |i, _| 2.0 - i as f64);
        let mut want = 0.0;
        for i in 0..3 {
            for j in 0..2 {
                for k in 0..4 {
                    for l in 0..3 {
                        want += x[i] * a[(i, j)] * b[(i, k)] * c[(i, l)] * y[l] * w[j];
                    }
                }
            }
        }
        let got = planned(
            &sizes,
            vec![
                Factor::vector(0, x.as_slice().to_vec()),
                Factor::matrix(0, 1, &a),
                Factor::matrix(0, 2, &b),
                Factor::matrix(0, 3, &c),
                Factor::vector(3, y.as_slice().to_vec()),
                Factor::vector(1, w.as_slice().to_vec()),
            ],
        );
        assert!((got - want).abs() < 1e-12 * want.abs().max(1.0));
    }

    #[test]
    fn a_dense_graph_matches_the_sum() {
        // K4 on four variables, every pair a matrix.
        let sizes = [2, 3, 2, 3];
        let m: Vec<((usize, usize), DMatrix<f64>)> =
            [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
                .iter()
                .enumerate()
                .map(|(s, &(i, j))| ((i, j), random(sizes[i], sizes[j], s as u64 + 9)))
                .collect();
        let mut want = 0.0;
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..2 {
                    for d in 0..3 {
                        let idx = [a, b, c, d];
                        want += m
                            .iter()
                            .map(|((i, j), x)| x[(idx[*i], idx[*j])])
                            .product::<f64>();
                    }
                }
            }
        }
        let got = planned(
            &sizes,
            m.iter()
                .map(|((i, j), x)| Factor::matrix(*i, *j, x))
                .collect(),
        );
        assert!((got - want).abs() < 1e-12 * want.abs().max(1.0));
    }
}
