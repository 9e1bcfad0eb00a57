//! The Wick pairings of two trees' legs, grouped into orbits.
//!
//! Each tree's first-level nodes (the *bottom* instances) carry `k` legs
//! each; with every node symmetric in its legs (the trees are symmetrised
//! before they are contracted), a partial matching of all legs matters only
//! through the **multigraph** it draws on the bottom instances: an edge of
//! multiplicity `μ` between two instances for the `μ` legs of one paired
//! with legs of the other. The legs an instance does not export are summed
//! apart (singletons and pairs within the instance, `α` of the parent
//! module). A multigraph with degrees `e_n` stands for
//!
//! ```text
//! Π_n C(k_n, e_n) e_n!  /  Π_edges μ!
//! ```
//!
//! partial matchings: the exported legs of each instance, and the ways to
//! pair them along the edges. Permuting the children of an upper node (a
//! symmetry of the symmetrised tree) permutes the bottom instances and
//! leaves the contraction unchanged, so the multigraphs are grouped into
//! orbits under those permutations of both trees, each contracted once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One orbit: a representative multigraph and how many matchings it stands
/// for (the orbit's size times the matchings per multigraph).
#[derive(Clone, Debug)]
pub(crate) struct Orbit {
    /// Edges `(n, m, μ)`, `n < m`, on the bottom instances of both trees
    /// (A's first).
    pub(crate) edges: Vec<(usize, usize, usize)>,
    /// Exported legs per bottom instance (its degree).
    pub(crate) degrees: Vec<usize>,
    /// The number of partial matchings this representative stands for.
    pub(crate) count: f64,
}

/// The branching orders of a tree, bottom first (`[2, 2, 2]`: three
/// bilinear levels).
pub(crate) type Shape = Vec<usize>;

/// The orbits for two tree shapes, computed once per process and shape pair.
pub(crate) fn orbits(a: &Shape, b: &Shape) -> Arc<Vec<Orbit>> {
    type Cache = Mutex<HashMap<(Shape, Shape), Arc<Vec<Orbit>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (a.clone(), b.clone());
    if let Some(found) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return found.clone();
    }
    let computed = Arc::new(enumerate(a, b));
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(computed)
        .clone()
}

/// The number of bottom instances of a tree: the product of its upper
/// levels' orders.
pub(crate) fn bottom_instances(shape: &Shape) -> usize {
    shape[1..].iter().product()
}

/// Every multigraph on the bottom instances of both trees (no loops,
/// degree at most the instance's order), grouped into orbits.
fn enumerate(a: &Shape, b: &Shape) -> Vec<Orbit> {
    let (na, nb) = (bottom_instances(a), bottom_instances(b));
    let n = na + nb;
    let cap: Vec<usize> = (0..n).map(|i| if i < na { a[0] } else { b[0] }).collect();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let pair_index = |i: usize, j: usize| {
        let (i, j) = (i.min(j), i.max(j));
        // Pairs (i, j) are listed row by row.
        i * n - i * (i + 1) / 2 + (j - i - 1)
    };
    // The bottom-instance permutations of each tree, combined.
    let group: Vec<Vec<usize>> = {
        let (ga, gb) = (leaf_permutations(a), leaf_permutations(b));
        let mut g = Vec::with_capacity(ga.len() * gb.len());
        for pa in &ga {
            for pb in &gb {
                g.push(
                    pa.iter()
                        .copied()
                        .chain(pb.iter().map(|&x| x + na))
                        .collect(),
                );
            }
        }
        g
    };
    let mut seen: HashMap<Vec<u8>, (Vec<u8>, usize)> = HashMap::new();
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut mult = vec![0u8; pairs.len()];
    let mut degree = vec![0usize; n];
    // Depth-first over the pairs, each taking a multiplicity that fits.
    fn walk(
        p: usize,
        pairs: &[(usize, usize)],
        cap: &[usize],
        mult: &mut Vec<u8>,
        degree: &mut Vec<usize>,
        visit: &mut dyn FnMut(&[u8]),
    ) {
        if p == pairs.len() {
            visit(mult);
            return;
        }
        let (i, j) = pairs[p];
        let most = (cap[i] - degree[i]).min(cap[j] - degree[j]);
        for m in 0..=most {
            mult[p] = m as u8;
            degree[i] += m;
            degree[j] += m;
            walk(p + 1, pairs, cap, mult, degree, visit);
            degree[i] -= m;
            degree[j] -= m;
        }
        mult[p] = 0;
    }
    let mut image = vec![0u8; pairs.len()];
    walk(
        0,
        &pairs,
        &cap,
        &mut mult,
        &mut degree,
        &mut |m: &[u8]| {
            // The canonical form: the least image under the group.
            let mut best: Option<Vec<u8>> = None;
            for g in &group {
                image.iter_mut().for_each(|x| *x = 0);
                for (p, &(i, j)) in pairs.iter().enumerate() {
                    if m[p] > 0 {
                        image[pair_index(g[i], g[j])] = m[p];
                    }
                }
                if best.as_ref().is_none_or(|b| image < *b) {
                    best = Some(image.clone());
                }
            }
            let key = best.unwrap_or_else(|| m.to_vec());
            match seen.get_mut(&key) {
                Some((_, size)) => *size += 1,
                None => {
                    order.push(key.clone());
                    seen.insert(key, (m.to_vec(), 1));
                }
            }
        },
    );
    order
        .into_iter()
        .map(|key| {
            let (rep, size) = &seen[&key];
            let mut edges = Vec::new();
            let mut degrees = vec![0usize; n];
            let mut per_graph = 1.0;
            for (p, &(i, j)) in pairs.iter().enumerate() {
                let m = rep[p] as usize;
                if m > 0 {
                    edges.push((i, j, m));
                    degrees[i] += m;
                    degrees[j] += m;
                    per_graph /= factorial(m);
                }
            }
            for (i, &e) in degrees.iter().enumerate() {
                per_graph *= binomial(cap[i], e) * factorial(e);
            }
            Orbit {
                edges,
                degrees,
                count: per_graph * *size as f64,
            }
        })
        .collect()
}

/// The permutations of a tree's bottom instances that permuting the
/// children of its upper nodes makes: `Π_nodes k!` of them, as images of
/// the instances in their natural order.
pub(crate) fn leaf_permutations(shape: &Shape) -> Vec<Vec<usize>> {
    // Instances of level ℓ under one node of level ℓ+1 are consecutive; a
    // node's bottom instances are the concatenation of its children's.
    fn below(shape: &Shape, level: usize, first: usize) -> Vec<Vec<usize>> {
        if level == 0 {
            return vec![vec![first]];
        }
        let k = shape[level];
        let size: usize = shape[1..level].iter().product();
        let children: Vec<Vec<Vec<usize>>> = (0..k)
            .map(|c| below(shape, level - 1, first + c * size))
            .collect();
        let mut out = Vec::new();
        for order in permutations(k) {
            // Every choice of each child's own arrangement.
            let mut partial: Vec<Vec<usize>> = vec![Vec::new()];
            for &c in &order {
                let mut next = Vec::with_capacity(partial.len() * children[c].len());
                for p in &partial {
                    for arrangement in &children[c] {
                        next.push(p.iter().chain(arrangement).copied().collect());
                    }
                }
                partial = next;
            }
            out.extend(partial);
        }
        out
    }
    below(shape, shape.len() - 1, 0)
}

/// All permutations of `0..k`, the identity first.
pub(crate) fn permutations(k: usize) -> Vec<Vec<usize>> {
    fn rec(rest: &mut Vec<usize>, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if rest.is_empty() {
            out.push(cur.clone());
            return;
        }
        for i in 0..rest.len() {
            let x = rest.remove(i);
            cur.push(x);
            rec(rest, cur, out);
            cur.pop();
            rest.insert(i, x);
        }
    }
    let mut out = Vec::new();
    rec(&mut (0..k).collect(), &mut Vec::with_capacity(k), &mut out);
    out
}

fn factorial(n: usize) -> f64 {
    (1..=n).map(|i| i as f64).product()
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of partial matchings of `legs` labelled legs.
    fn telephone(legs: usize) -> f64 {
        let mut t = vec![1.0f64, 1.0];
        for n in 2..=legs {
            t.push(t[n - 1] + (n - 1) as f64 * t[n - 2]);
        }
        t[legs]
    }

    /// Partial matchings whose pairs join legs of different instances, the
    /// legs within an instance being summed apart: counted by brute force.
    fn cross_matchings(cap: &[usize]) -> f64 {
        fn rec(legs: &[usize]) -> f64 {
            let Some((&first, rest)) = legs.split_first() else {
                return 1.0;
            };
            // The first leg stays at home (its own instance's sum) ...
            let mut total = rec(rest);
            // ... or pairs with a leg of another instance.
            for (i, &other) in rest.iter().enumerate() {
                if other != first {
                    let mut left = rest.to_vec();
                    left.remove(i);
                    total += rec(&left);
                }
            }
            total
        }
        let legs: Vec<usize> = cap
            .iter()
            .enumerate()
            .flat_map(|(i, &k)| std::iter::repeat_n(i, k))
            .collect();
        rec(&legs)
    }

    #[test]
    fn orbit_counts_add_up_to_every_matching() {
        for (a, b) in [
            (vec![2], vec![2]),
            (vec![2, 2], vec![2]),
            (vec![2, 2], vec![2, 2]),
            (vec![2, 3], vec![3, 2]),
            (vec![2, 2, 2], vec![2, 2]),
            (vec![1], vec![2, 2]),
        ] {
            let total: f64 = orbits(&a, &b).iter().map(|o| o.count).sum();
            let cap: Vec<usize> = std::iter::repeat_n(a[0], bottom_instances(&a))
                .chain(std::iter::repeat_n(b[0], bottom_instances(&b)))
                .collect();
            assert_eq!(total, cross_matchings(&cap), "{a:?} {b:?}");
        }
        // With one leg per instance nothing is summed apart.
        assert_eq!(cross_matchings(&[1; 6]), telephone(6));
    }

    #[test]
    fn groups_have_the_product_of_factorials() {
        assert_eq!(leaf_permutations(&vec![2, 2, 2]).len(), 8);
        assert_eq!(leaf_permutations(&vec![2, 3]).len(), 6);
        assert_eq!(leaf_permutations(&vec![4]).len(), 1);
        let g = leaf_permutations(&vec![2, 2, 2]);
        assert!(g.contains(&vec![0, 1, 2, 3]) && g.contains(&vec![3, 2, 1, 0]));
        assert!(!g.contains(&vec![0, 2, 1, 3]));
    }
}
#[cfg(test)]
mod timing {
    #[test]
    #[ignore]
    fn time_it() {
        let t = std::time::Instant::now();
        let o = super::orbits(&vec![2, 2, 2], &vec![2, 2, 2]);
        eprintln!("orbits {} in {:?}", o.len(), t.elapsed());
        let o = super::orbits(&vec![2, 2], &vec![2, 2]);
        eprintln!("orbits {} ", o.len());
        let o = super::orbits(&vec![2, 2, 2], &vec![2, 2]);
        eprintln!("orbits {} ", o.len());
    }
}
#[cfg(test)]
mod counts {
    /// The orbit and matching counts quoted in docs/metrics.md
    /// (`cargo test --lib orbit_table -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn orbit_table() {
        let shapes: Vec<Vec<usize>> = vec![
            vec![2],
            vec![2, 2],
            vec![2, 2, 2],
            vec![3],
            vec![2, 3],
            vec![4, 2],
            vec![2, 4],
        ];
        for a in &shapes {
            for b in &shapes {
                if a <= b {
                    let t = std::time::Instant::now();
                    let o = super::orbits(a, b);
                    let total: f64 = o.iter().map(|x| x.count).sum();
                    let graphs: f64 = o.len() as f64;
                    eprintln!(
                        "{a:?} {b:?}: {} orbits, {total} matchings, {:?}",
                        graphs,
                        t.elapsed()
                    );
                }
            }
        }
    }
}
