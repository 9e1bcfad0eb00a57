//! The sum against Isserlis written out by brute force: every partition
//! of the scalar legs into singletons and pairs, on small widths.
use super::*;

/// A leg: its node (or end), and its coordinate index range.
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// Brute force: legs are blocks of a Gaussian vector `g` with mean `mu`
/// and covariance `c`; `E[ε_A[i] ε_B[j] Π_ν (q_ν·k_ν)]` by summing every
/// index assignment and, for each, Isserlis over the scalar factors.
fn brute(
    nodes: &[(usize, usize)],
    ends: &[usize],
    width: &[usize],
    offset: &[usize],
    mu: &DVector<f64>,
    c: &DMatrix<f64>,
) -> DMatrix<f64> {
    let wa = ends.first().map_or(1, |&e| width[e]);
    let wb = ends.get(1).map_or(1, |&e| width[e]);
    let mut out = DMatrix::zeros(wa, wb);
    // Node index assignments.
    let dims: Vec<usize> = nodes.iter().map(|&(q, _)| width[q]).collect();
    let total: usize = dims.iter().product();
    for i in 0..wa {
        for j in 0..wb {
            let mut acc = 0.0;
            for flat in 0..total {
                let mut rem = flat;
                let mut factors = Vec::new();
                for (&(q, k), &d) in nodes.iter().zip(&dims) {
                    let a = rem % d;
                    rem /= d;
                    factors.push(offset[q] + a);
                    factors.push(offset[k] + a);
                }
                if let Some(&e) = ends.first() {
                    factors.push(offset[e] + i);
                }
                if let Some(&e) = ends.get(1) {
                    factors.push(offset[e] + j);
                }
                acc += isserlis(&factors, mu, c);
            }
            out[(i, j)] = acc;
        }
    }
    out
}

/// `E[Π g_f]` for a Gaussian `g`: singletons and pairs, recursively.
fn isserlis(f: &[usize], mu: &DVector<f64>, c: &DMatrix<f64>) -> f64 {
    let Some((&first, rest)) = f.split_first() else {
        return 1.0;
    };
    let mut acc = mu[first] * isserlis(rest, mu, c);
    for i in 0..rest.len() {
        let mut others = rest.to_vec();
        let partner = others.remove(i);
        acc += c[(first, partner)] * isserlis(&others, mu, c);
    }
    acc
}

fn inputs(
    nodes: &[(usize, usize)],
    ends: &[usize],
    width: &[usize],
    offset: &[usize],
    mu: &DVector<f64>,
    c: &DMatrix<f64>,
) -> Inputs<f64> {
    let block = |x: usize, y: usize| {
        c.view((offset[x], offset[y]), (width[x], width[y]))
            .into_owned()
    };
    let mean = |x: usize| mu.rows(offset[x], width[x]).into_owned();
    let stack_rows = |top: DMatrix<f64>, bottom: DMatrix<f64>| {
        let mut m = DMatrix::zeros(top.nrows() + bottom.nrows(), top.ncols());
        m.rows_mut(0, top.nrows()).copy_from(&top);
        m.rows_mut(top.nrows(), bottom.nrows()).copy_from(&bottom);
        m
    };
    let stack_cols =
        |l: DMatrix<f64>, r: DMatrix<f64>| stack_rows(l.transpose(), r.transpose()).transpose();
    let k = nodes.len();
    let mut transfer = vec![None; k * k];
    for (a, &(qa, ka)) in nodes.iter().enumerate() {
        for (b, &(qb, kb)) in nodes.iter().enumerate() {
            if a != b {
                transfer[a * k + b] = Some(stack_rows(
                    stack_cols(block(ka, qb), block(ka, kb)),
                    stack_cols(block(qa, qb), block(qa, kb)),
                ));
            }
        }
    }
    let vstack = |a: DVector<f64>, b: DVector<f64>| {
        DVector::from_iterator(a.len() + b.len(), a.iter().chain(b.iter()).copied())
    };
    let end = |e: usize| End {
        mean: mean(e),
        to_node: nodes
            .iter()
            .map(|&(q, k)| Some(stack_cols(block(e, q), block(e, k))))
            .collect(),
    };
    Inputs {
        transfer,
        start: nodes
            .iter()
            .map(|&(q, k)| vstack(mean(q), mean(k)))
            .collect(),
        stop: nodes
            .iter()
            .map(|&(q, k)| vstack(mean(k), mean(q)))
            .collect(),
        single: nodes
            .iter()
            .map(|&(q, k)| mean(q).dot(&mean(k)) + block(q, k).trace())
            .collect(),
        ends: ends.iter().map(|&e| end(e)).collect(),
        between: (ends.len() == 2).then(|| Between {
            direct: block(ends[0], ends[1]),
            from_node: nodes
                .iter()
                .map(|&(q, k)| Some(stack_rows(block(k, ends[1]), block(q, ends[1]))))
                .collect(),
        }),
    }
}

#[test]
fn matches_isserlis_by_brute_force() {
    let mut seed = 3;
    // Legs: 0..8 node legs (4 nodes), 8, 9 ends; widths small.
    let width = [2, 2, 1, 1, 2, 2, 1, 1, 2, 3];
    let mut offset = vec![0];
    for w in width {
        offset.push(offset.last().unwrap() + w);
    }
    let dim = *offset.last().unwrap();
    let f = DMatrix::from_fn(dim, dim, |_, _| lcg(&mut seed));
    let c = &f * f.transpose() * 0.5;
    let mu = DVector::from_fn(dim, |_, _| lcg(&mut seed));
    let nodes = [(0, 1), (2, 3), (4, 5), (6, 7)];
    for (k, ends) in [
        (4, vec![8, 9]),
        (2, vec![8]),
        (3, vec![9, 8]),
        (4, vec![]),
        (1, vec![8, 9]),
        (0, vec![8, 9]),
    ] {
        let fast = moment(&inputs(&nodes[..k], &ends, &width, &offset, &mu, &c));
        let slow = brute(&nodes[..k], &ends, &width, &offset, &mu, &c);
        let err = (&fast - &slow).amax() / slow.amax();
        assert!(
            err < 1e-12,
            "{k} nodes, ends {ends:?}: {err:e}\n{fast}\n{slow}"
        );
    }
}

#[test]
fn zero_blocks_are_skipped_exactly() {
    let mut seed = 5;
    let width = [2, 2, 2, 2, 3, 3];
    let mut offset = vec![0];
    for w in width {
        offset.push(offset.last().unwrap() + w);
    }
    let dim = *offset.last().unwrap();
    let f = DMatrix::from_fn(dim, dim, |_, _| lcg(&mut seed));
    let c = &f * f.transpose();
    let mu = DVector::from_fn(dim, |_, _| lcg(&mut seed));
    let nodes = [(0, 1), (2, 3)];
    let mut inp = inputs(&nodes, &[4, 5], &width, &offset, &mu, &c);
    let dense = moment(&inp);
    // Dropping a block that is zero gives the same sum.
    let zeroed = |m: &mut Option<DMatrix<f64>>| *m = m.as_ref().map(|m| m * 0.0);
    zeroed(&mut inp.transfer[1]);
    let with_zero = moment(&inp);
    inp.transfer[1] = None;
    let skipped = moment(&inp);
    assert!((&with_zero - &skipped).amax() < 1e-14);
    assert!((&dense - &with_zero).amax() > 1e-6);
}
