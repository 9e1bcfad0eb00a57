use super::*;

#[test]
fn arithmetic_matches_f64_in_range() {
    let values = [-3.5, -1.0, -1e-3, 0.0, 2e-7, 1.0, 7.25, 1e10];
    for &a in &values {
        for &b in &values {
            let (la, lb) = (LogScaled::from(a), LogScaled::from(b));
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + x.abs().max(y.abs()));
            assert!(close((la + lb).to_f64(), a + b), "{a} + {b}");
            assert!(close((la - lb).to_f64(), a - b), "{a} - {b}");
            assert!(close((la * lb).to_f64(), a * b), "{a} * {b}");
            if b != 0.0 {
                assert!(close((la / lb).to_f64(), a / b), "{a} / {b}");
            }
        }
        if a >= 0.0 {
            assert!(
                (LogScaled::from(a).sqrt().to_f64() - a.sqrt()).abs() <= 1e-12 * a.sqrt().max(1.0)
            );
        }
    }
}

#[test]
fn beyond_f64_range() {
    let x = LogScaled::from_ln(1.0, 1000.0);
    let y = LogScaled::from_ln(-1.0, 1000.0 + 2f64.ln());
    // x + y = -e^1000
    let s = x + y;
    assert_eq!(s.signum(), -1.0);
    assert!((s.ln_abs() - 1000.0).abs() < 1e-12);
    assert!((x - x).is_zero());
    assert!((((x * x).sqrt() / x).to_f64() - 1.0).abs() < 1e-12);
    assert_eq!(
        format!(
            "{}",
            LogScaled::from_ln(1.0, 1000.0 * core::f64::consts::LN_10)
        ),
        "1e1000"
    );
    let minus_two = LogScaled::from_ln(-1.0, 1000.0 * core::f64::consts::LN_10 + 2f64.ln());
    assert_eq!(format!("{minus_two:.3}"), "-2.000e1000");
    assert_eq!(format!("{}", LogScaled::from(2.5)), "2.5");
}
