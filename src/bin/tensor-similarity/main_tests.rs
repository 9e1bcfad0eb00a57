use super::natural_order;

#[test]
fn natural_order_reads_numbers_as_numbers() {
    let mut names = vec![
        "runs/a/step_1000.pt",
        "runs/a/step_500.pt",
        "runs/a/step_20.pt",
        "runs/a/step_0020.pt",
        "runs/b/step_3.pt",
        "runs/a/step_99999999999999999999999.pt",
    ];
    names.sort_by(|a, b| natural_order(a, b));
    assert_eq!(
        names,
        [
            "runs/a/step_20.pt",
            "runs/a/step_0020.pt",
            "runs/a/step_500.pt",
            "runs/a/step_1000.pt",
            "runs/a/step_99999999999999999999999.pt",
            "runs/b/step_3.pt",
        ]
    );
}
