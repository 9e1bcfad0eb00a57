//! Contraction of a tensor network by variable elimination.
//!
//! A network is a set of dense factors over named index variables (here the
//! hidden units of tree nodes); its value is the sum over every index of
//! the product of the factors. Variables are eliminated one at a time, the
//! cheapest first (the fewest entries in the product of the factors that
//! hold it); where one factor's other indices are its own, the step is a
//! matrix product (one GEMM), otherwise an explicit product and sum.

use nalgebra::DMatrix;

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

    /// A matrix `m[(i, j)]` over `(row, col)`.
    pub(crate) fn matrix(row: usize, col: usize, m: &DMatrix<f64>) -> Self {
        // nalgebra stores column-major: the row index varies fastest.
        Self {
            vars: vec![row, col],
            data: m.as_slice().to_vec(),
        }
    }
}

/// The value of the network: `Σ_indices Π_factors`. `sizes[v]` is the
/// range of variable `v`; every variable a factor names must be listed.
pub(crate) fn contract(sizes: &[usize], mut factors: Vec<Factor>) -> f64 {
    let mut scalar = 1.0;
    loop {
        factors.retain(|f| {
            if f.vars.is_empty() {
                scalar *= f.data[0];
                false
            } else {
                true
            }
        });
        let Some(v) = cheapest(sizes, &factors) else {
            return scalar;
        };
        let (with, without): (Vec<Factor>, Vec<Factor>) =
            factors.into_iter().partition(|f| f.vars.contains(&v));
        factors = without;
        factors.push(eliminate(sizes, v, with));
    }
}

/// The variable whose elimination costs least: the product of the ranges of
/// every variable that shares a factor with it (itself included).
fn cheapest(sizes: &[usize], factors: &[Factor]) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    let mut vars: Vec<usize> = factors.iter().flat_map(|f| f.vars.iter().copied()).collect();
    vars.sort_unstable();
    vars.dedup();
    for &v in &vars {
        let mut union: Vec<usize> = factors
            .iter()
            .filter(|f| f.vars.contains(&v))
            .flat_map(|f| f.vars.iter().copied())
            .collect();
        union.sort_unstable();
        union.dedup();
        let cost: f64 = union.iter().map(|&u| sizes[u] as f64).product();
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, v));
        }
    }
    best.map(|(_, v)| v)
}

/// The sum over `v` of the product of `factors` (all holding `v`).
fn eliminate(sizes: &[usize], v: usize, factors: Vec<Factor>) -> Factor {
    // A factor whose other variables no other factor holds is the right
    // operand of a matrix product: R[left, own] = Σ_v L[left, v] F[v, own].
    let own = |i: usize| {
        factors[i].vars.iter().filter(|&&u| u != v).all(|u| {
            factors
                .iter()
                .enumerate()
                .all(|(j, g)| j == i || !g.vars.contains(u))
        })
    };
    let right = (0..factors.len())
        .filter(|&i| factors.len() > 1 && factors[i].vars.len() > 1 && own(i))
        .max_by_key(|&i| factors[i].vars.len());
    match right {
        Some(i) => {
            let mut rest = factors;
            let f = rest.remove(i);
            let mut left_vars: Vec<usize> = rest
                .iter()
                .flat_map(|g| g.vars.iter().copied())
                .filter(|&u| u != v)
                .collect();
            left_vars.sort_unstable();
            left_vars.dedup();
            let own_vars: Vec<usize> = f.vars.iter().copied().filter(|&u| u != v).collect();
            // L over (left…, v), F over (v, own…): both as matrices.
            let mut l_vars = left_vars.clone();
            l_vars.push(v);
            let l = product(sizes, &l_vars, &rest);
            let mut f_vars = vec![v];
            f_vars.extend(&own_vars);
            let f = product(sizes, &f_vars, &[f]);
            let rows: usize = left_vars.iter().map(|&u| sizes[u]).product();
            let cols: usize = own_vars.iter().map(|&u| sizes[u]).product();
            let l = DMatrix::from_vec(rows, sizes[v], l);
            let f = DMatrix::from_vec(sizes[v], cols, f);
            let r = l * f;
            let mut vars = left_vars;
            vars.extend(own_vars);
            Factor {
                vars,
                data: r.as_slice().to_vec(),
            }
        }
        None => {
            let mut vars: Vec<usize> = factors
                .iter()
                .flat_map(|g| g.vars.iter().copied())
                .filter(|&u| u != v)
                .collect();
            vars.sort_unstable();
            vars.dedup();
            // The product over (v, vars…), summed over v (the fastest).
            let mut all = vec![v];
            all.extend(&vars);
            let full = product(sizes, &all, &factors);
            let data = full
                .chunks_exact(sizes[v])
                .map(|c| c.iter().sum())
                .collect();
            Factor { vars, data }
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
        let got = contract(
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
        let got = contract(
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
        let m: Vec<((usize, usize), DMatrix<f64>)> = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
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
        let got = contract(
            &sizes,
            m.iter().map(|((i, j), x)| Factor::matrix(*i, *j, x)).collect(),
        );
        assert!((got - want).abs() < 1e-12 * want.abs().max(1.0));
    }
}
