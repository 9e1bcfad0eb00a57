//! Symmetry groups: the permutations of a block's input legs under which its
//! function does not change.
//!
//! A block of order `k` evaluates `B(x̃, …, x̃)` on `k` copies of one input,
//! so permuting its legs leaves the function alone while changing the tensor.
//! The tensor similarity compares tensors *symmetrised* over each block's
//! group `S ⊆ S_k` ([SPEC §1–2](crate::spec#1-blocks-and-models)), which makes it blind to, e.g., swapping the
//! left and right factor of a bilinear unit.
//!
//! | group | elements | use |
//! |---|---|---|
//! | [`Full`] | all of `S_k` | every block of a [`Model`](crate::Model) (the default: all legs read the same `x̃`) |
//! | [`Trivial`] | the identity | symmetrisation off: compares raw CP tensors |
//! | [`PermutationGroup`] | an explicit list, closed under composition | a partial symmetrisation |
//!
//! **Declare [`Full`] in a model.** The function depends only on the fully
//! symmetrised tensor, so a smaller group makes the similarity depend on how
//! the factors are written (swap `L_r ↔ R_r` and it changes): right only to
//! study the parameterisation itself, with the same group on both sides.
//! Mixing groups at one position computes `⟨P_A T_A, P_B T_B⟩`; identical
//! weights declared `Full` on one side and [`Trivial`] on the other give
//! `‖P T‖ / ‖T‖`, not 1. [The symmetry guide](crate::guide::symmetry) explains further.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// A permutation `σ` of `k` legs, stored as its images `σ(0), …, σ(k−1)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permutation(Vec<usize>);

impl Permutation {
    /// The permutation `j ↦ images[j]`; an error if `images` is not a
    /// rearrangement of `0..k`.
    ///
    /// ```
    /// use tensor_similarity::Permutation;
    /// let swap = Permutation::new(vec![1, 0])?;
    /// assert_eq!(swap.compose(&swap), Permutation::identity(2));
    /// assert!(Permutation::new(vec![0, 0]).is_err());
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn new(images: Vec<usize>) -> Result<Self> {
        let mut seen = vec![false; images.len()];
        for &i in &images {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(Error::Symmetry(format!(
                        "{images:?} is not a permutation of 0..{}",
                        images.len()
                    )));
                }
            }
        }
        Ok(Self(images))
    }

    /// The identity on `k` legs.
    pub fn identity(k: usize) -> Self {
        Self((0..k).collect())
    }

    /// Number of legs `k`.
    pub fn degree(&self) -> usize {
        self.0.len()
    }

    /// The images `σ(0), …, σ(k−1)`.
    pub fn images(&self) -> &[usize] {
        &self.0
    }

    /// `σ(j)`.
    pub fn apply(&self, j: usize) -> usize {
        self.0[j]
    }

    /// The composition `self ∘ other`: `j ↦ self(other(j))`.
    ///
    /// # Panics
    ///
    /// If the degrees differ.
    #[track_caller]
    pub fn compose(&self, other: &Self) -> Self {
        assert_eq!(
            self.degree(),
            other.degree(),
            "composing permutations of different degrees"
        );
        Self(other.0.iter().map(|&j| self.0[j]).collect())
    }

    /// The inverse `σ⁻¹`.
    pub fn inverse(&self) -> Self {
        let mut inv = vec![0; self.0.len()];
        for (j, &i) in self.0.iter().enumerate() {
            inv[i] = j;
        }
        Self(inv)
    }

    /// All `k!` permutations of `k` legs, identity first.
    pub fn all(k: usize) -> Vec<Self> {
        // Heap's algorithm would do; lexicographic order keeps the identity first.
        fn extend(prefix: &mut Vec<usize>, used: &mut [bool], out: &mut Vec<Permutation>) {
            if prefix.len() == used.len() {
                out.push(Permutation(prefix.clone()));
                return;
            }
            for i in 0..used.len() {
                if !used[i] {
                    used[i] = true;
                    prefix.push(i);
                    extend(prefix, used, out);
                    prefix.pop();
                    used[i] = false;
                }
            }
        }
        let mut out = Vec::new();
        extend(&mut Vec::with_capacity(k), &mut vec![false; k], &mut out);
        out
    }
}

/// A group of permutations of a block's `k` input legs.
///
/// Implementations are immutable descriptions; the trait is dyn-safe so a
/// block can return `&dyn SymmetryGroup`.
pub trait SymmetryGroup: core::fmt::Debug + Send + Sync {
    /// The group's elements acting on `k` legs: they contain the identity and
    /// are closed under composition. An error if the group is not defined on
    /// `k` legs.
    fn elements(&self, k: usize) -> Result<Vec<Permutation>>;
}

impl<G: SymmetryGroup + ?Sized> SymmetryGroup for &G {
    fn elements(&self, k: usize) -> Result<Vec<Permutation>> {
        (**self).elements(k)
    }
}

impl<G: SymmetryGroup + ?Sized> SymmetryGroup for std::sync::Arc<G> {
    fn elements(&self, k: usize) -> Result<Vec<Permutation>> {
        (**self).elements(k)
    }
}

/// The trivial group `{id}`: symmetrisation off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trivial;

impl SymmetryGroup for Trivial {
    fn elements(&self, k: usize) -> Result<Vec<Permutation>> {
        Ok(vec![Permutation::identity(k)])
    }
}

/// The full symmetric group `S_k`: every leg reads the same input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Full;

impl SymmetryGroup for Full {
    fn elements(&self, k: usize) -> Result<Vec<Permutation>> {
        Ok(Permutation::all(k))
    }
}

/// An explicit permutation group, checked to be one on construction.
///
/// ```
/// use tensor_similarity::{Permutation, PermutationGroup, SymmetryGroup};
/// // Swap legs 0 and 1 of an order-3 block; leg 2 stays apart.
/// let g = PermutationGroup::generated_by(&[Permutation::new(vec![1, 0, 2])?])?;
/// assert_eq!(g.elements(3)?.len(), 2);
/// assert!(g.elements(2).is_err());
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermutationGroup {
    degree: usize,
    elements: Vec<Permutation>,
}

impl PermutationGroup {
    /// The group with exactly these elements; an error unless they share one
    /// degree, contain the identity and are closed under composition.
    pub fn new(mut elements: Vec<Permutation>) -> Result<Self> {
        let degree = common_degree(&elements, "a group needs at least the identity")?;
        elements.sort();
        elements.dedup();
        if elements
            .binary_search(&Permutation::identity(degree))
            .is_err()
        {
            return Err(Error::Symmetry(
                "the elements do not contain the identity".into(),
            ));
        }
        for a in &elements {
            for b in &elements {
                let ab = a.compose(b);
                if elements.binary_search(&ab).is_err() {
                    return Err(Error::Symmetry(format!(
                        "not closed under composition: {:?} ∘ {:?} = {:?} is missing",
                        a.images(),
                        b.images(),
                        ab.images()
                    )));
                }
            }
        }
        Ok(Self { degree, elements })
    }

    /// The smallest group containing `generators`.
    pub fn generated_by(generators: &[Permutation]) -> Result<Self> {
        let degree = common_degree(generators, "no generators given")?;
        let mut elements = vec![Permutation::identity(degree)];
        let mut frontier = elements.clone();
        while let Some(p) = frontier.pop() {
            for g in generators {
                let q = g.compose(&p);
                if !elements.contains(&q) {
                    elements.push(q.clone());
                    frontier.push(q);
                }
            }
        }
        Self::new(elements)
    }

    /// Number of legs the group acts on.
    pub fn degree(&self) -> usize {
        self.degree
    }
}

/// The degree all `perms` share; an error if there are none or they differ.
fn common_degree(perms: &[Permutation], if_empty: &str) -> Result<usize> {
    let degree = perms
        .first()
        .map(Permutation::degree)
        .ok_or_else(|| Error::Symmetry(if_empty.into()))?;
    match perms.iter().find(|p| p.degree() != degree) {
        Some(p) => Err(Error::Symmetry(format!(
            "{:?} does not act on {degree} legs",
            p.images()
        ))),
        None => Ok(degree),
    }
}

impl SymmetryGroup for PermutationGroup {
    fn elements(&self, k: usize) -> Result<Vec<Permutation>> {
        if k != self.degree {
            return Err(Error::Symmetry(format!(
                "the group acts on {} legs, the block has {k}",
                self.degree
            )));
        }
        Ok(self.elements.clone())
    }
}

/// The leg pairings of `⟨P_A T_A, P_B T_B⟩` with their weights: permutations
/// `π` with `Σ_π w_π = 1` such that the symmetrised inner product of two
/// blocks is `Σ_π w_π Π_j X_{j, π(j)}` with `X_{i,j} = U^A_i G (U^B_j)ᵀ`.
///
/// With `P_S` the (orthogonal) average over `S`, `P_A P_B` averages over the
/// products `τ σ⁻¹`; when one group contains the other this is just the
/// larger group, uniformly weighted (the usual case: both blocks `Full`).
pub(crate) fn leg_pairings(
    a: &dyn SymmetryGroup,
    b: &dyn SymmetryGroup,
    k: usize,
) -> Result<Vec<(Permutation, f64)>> {
    let ea = a.elements(k)?;
    let eb = b.elements(k)?;
    let uniform = |e: Vec<Permutation>| {
        let w = 1.0 / e.len() as f64;
        e.into_iter().map(|p| (p, w)).collect()
    };
    if eb.iter().all(|p| ea.contains(p)) {
        return Ok(uniform(ea));
    }
    if ea.iter().all(|p| eb.contains(p)) {
        return Ok(uniform(eb));
    }
    let w = 1.0 / (ea.len() * eb.len()) as f64;
    let mut weights: HashMap<Permutation, f64> = HashMap::new();
    for sigma in &ea {
        let sigma_inv = sigma.inverse();
        for tau in &eb {
            *weights.entry(tau.compose(&sigma_inv)).or_default() += w;
        }
    }
    let mut out: Vec<_> = weights.into_iter().collect();
    out.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_group_has_k_factorial_elements_and_is_a_group() {
        for k in 1..=4 {
            let e = Full.elements(k).unwrap();
            assert_eq!(e.len(), (1..=k).product::<usize>());
            PermutationGroup::new(e).unwrap();
        }
    }

    #[test]
    fn rejects_non_groups() {
        let swap01 = Permutation::new(vec![1, 0, 2]).unwrap();
        let swap12 = Permutation::new(vec![0, 2, 1]).unwrap();
        assert!(PermutationGroup::new(vec![swap01.clone()]).is_err());
        assert!(
            PermutationGroup::new(vec![
                Permutation::identity(3),
                swap01.clone(),
                swap12.clone()
            ])
            .is_err()
        );
        assert_eq!(
            PermutationGroup::generated_by(&[swap01, swap12])
                .unwrap()
                .elements(3)
                .unwrap()
                .len(),
            6
        );
        assert!(Permutation::new(vec![0, 3, 1]).is_err());
    }

    #[test]
    fn pairings_of_mixed_groups_sum_to_one() {
        let g =
            PermutationGroup::generated_by(&[Permutation::new(vec![1, 0, 2]).unwrap()]).unwrap();
        let h =
            PermutationGroup::generated_by(&[Permutation::new(vec![0, 2, 1]).unwrap()]).unwrap();
        let p = leg_pairings(&g, &h, 3).unwrap();
        assert_eq!(p.len(), 4);
        assert!((p.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(leg_pairings(&Full, &Trivial, 2).unwrap().len(), 2);
    }
}
