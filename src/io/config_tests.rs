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

#[test]
fn yaml_is_read_as_pyyaml_reads_it() {
    let yaml = parse_yaml(
        "model:\n  rope_base: 01750\n  n_ctx: 0x10\n  use_bias_qk: on\n  attn_scale: 1e3\n  lr: 1.0e+3\n  \
         d: 1:30\n  e: '01750'\n  f: !!str 12\n  g: .inf\n1: one\nyes: true\n=: value key\n",
    )
    .unwrap();
    let want: Value = serde_json::from_str(
        r#"{"model": {"rope_base": 1000, "n_ctx": 16, "use_bias_qk": true, "attn_scale": "1e3",
            "lr": 1000.0, "d": 90, "e": "01750", "f": "12", "g": ".inf"},
            "1": "one", "true": true, "=": "value key"}"#,
    )
    .unwrap();
    assert_eq!(yaml, want);
}

#[test]
fn yaml_documents_are_bounded_and_unambiguous() {
    // A line of block sequences a million deep is refused at depth 65,
    // without recursion (it would overflow the stack).
    let deep = "- ".repeat(500_000) + "x\n";
    assert_eq!(
        parse_yaml(&deep).unwrap_err(),
        "nested more than 64 levels deep"
    );
    let ok = "- ".repeat(64) + "x\n";
    assert!(parse_yaml(&ok).is_ok());
    // A key twice: PyYAML keeps the last, which the writer may not have meant.
    let e = parse_yaml("model:\n  n_head: 2\n  n_head: 4\n").unwrap_err();
    assert!(e.contains("\"n_head\" appears twice"), "{e}");
    // 1 and "1" are one key here.
    assert!(parse_yaml("1: a\n'1': b\n").is_err());
    // Merge keys, tags that are not the standard ones, and null or float keys.
    for text in [
        "model:\n  <<: {n_head: 2}\n",
        "model: !!python/object:argparse.Namespace {}\n",
        "model: !!omap [a: 1]\n",
        "model:\n  n: !!python/tuple [1, 2]\n",
        "model:\n  ~: 1\n",
        "model:\n  1.5: 1\n",
        "model:\n  n: =\n",
    ] {
        assert!(parse_yaml(text).is_err(), "{text:?}");
    }
    assert_eq!(
        parse_yaml("# only a comment\n").unwrap_err(),
        "the file is empty"
    );
}
