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
    let g = PermutationGroup::generated_by(&[Permutation::new(vec![1, 0, 2]).unwrap()]).unwrap();
    let h = PermutationGroup::generated_by(&[Permutation::new(vec![0, 2, 1]).unwrap()]).unwrap();
    let p = leg_pairings(&g, &h, 3).unwrap();
    assert_eq!(p.len(), 4);
    assert!((p.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-15);
    assert_eq!(leg_pairings(&Full, &Trivial, 2).unwrap().len(), 2);
}
