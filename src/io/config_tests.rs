use super::*;

#[test]
fn yaml_and_json_read_alike() {
    let yaml = parse_yaml(
        "model:\n  d_model: 8\n  attn_scale: 0.35\n  norm_places: []\n  use_bias_qk: true\n  rope_base: 500.0\ntrain:\n  lr: 1.0e-3\n",
    )
    .unwrap();
    let json: Value = serde_json::from_str(
        r#"{"model": {"d_model": 8, "attn_scale": 0.35, "norm_places": [], "use_bias_qk": true, "rope_base": 500.0}, "train": {"lr": 0.001}}"#,
    )
    .unwrap();
    assert_eq!(yaml, json);
}

#[test]
fn bad_yaml_is_an_error() {
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_owned()
        + &(b'b'..=b'z')
            .map(|c| {
                let (c, p) = (c as char, (c - 1) as char);
                format!("{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n")
            })
            .collect::<String>();
    let deep = "[".repeat(100) + &"]".repeat(100);
    for text in [
        "",
        "a: [1, 2",
        "--- 1\n--- 2\n",
        "a: &x 1\nb: *x\n",
        "? [1]\n: 2\n",
        &laughs,
        &deep,
    ] {
        assert!(parse_yaml(text).is_err(), "{text:?}");
    }
}
