use super::*;

#[test]
fn json_round_trips() {
    let blocks = vec![
        BlockSpec::Linear {
            weight: "w".into(),
            bias: Some("b".into()),
            transpose: true,
            energy: None,
        },
        BlockSpec::Attention(Box::new(AttentionSpec {
            weights: ["a", "b", "c", "d", "e", "f"].map(String::from),
            biases: [Some("g".into()), None, None, None, None, Some("h".into())],
            heads: 2,
            mask: Mask::Diagonal,
            rotary_base: None,
            scale: Some(0.5),
            skip: None,
            score_scale: Some(3.0),
        })),
        BlockSpec::Bilinear {
            factors: Factors::Fused {
                fused: "f".into(),
                bias: None,
            },
            down: Some("d".into()),
            down_bias: None,
            residual: Some(0.25),
        },
        BlockSpec::Bilinear {
            factors: Factors::Split {
                left: "l".into(),
                right: "r".into(),
                left_bias: Some("lb".into()),
                right_bias: None,
            },
            down: None,
            down_bias: Some("db".into()),
            residual: None,
        },
    ];
    for sequence in [false, true] {
        let layout = LayoutSpec {
            blocks: blocks.clone(),
            sequence,
        };
        // An attention block makes it a sequence model either way.
        let back = from_json(&to_json(&layout)).unwrap();
        assert_eq!(back.blocks, blocks);
        assert!(back.sequence);
    }
    let vector = LayoutSpec {
        blocks: blocks[..1].to_vec(),
        sequence: false,
    };
    assert_eq!(from_json(&to_json(&vector)).unwrap(), vector);
    let marked = LayoutSpec {
        sequence: true,
        ..vector
    };
    assert_eq!(from_json(&to_json(&marked)).unwrap(), marked);
}

#[test]
fn attention_defaults_and_errors() {
    let one = |extra: &str| {
        from_json(&format!(
            r#"{{"version": 1, "blocks": [{{"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "e", "o": "f"{extra}}}]}}"#
        ))
    };
    let Ok(LayoutSpec {
        blocks,
        sequence: true,
    }) = one(r#", "heads": 2"#)
    else {
        panic!("a minimal attention block reads");
    };
    let BlockSpec::Attention(a) = &blocks[0] else {
        panic!("attention")
    };
    assert_eq!(a.mask, Mask::Causal);
    assert_eq!(a.rotary_base, Some(crate::block::DEFAULT_ROTARY_BASE));
    assert_eq!((a.scale, a.skip, a.score_scale), (None, None, None));
    for bad in [
        "",
        r#", "heads": 0"#,
        r#", "heads": 1.5"#,
        r#", "heads": 2, "mask": "upper""#,
        r#", "heads": 2, "rotary_base": "big""#,
        r#", "heads": 2, "scale": null"#,
        r#", "heads": 2, "rope_base": 10"#,
    ] {
        assert!(matches!(one(bad), Err(FileError::Metadata { .. })), "{bad}");
    }
    let no_o = r#"{"version": 1, "blocks": [{"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "e", "heads": 1}]}"#;
    assert!(matches!(from_json(no_o), Err(FileError::Metadata { .. })));
    let contradiction = r#"{"version": 1, "sequence": false, "blocks": [{"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "e", "o": "f", "heads": 1}]}"#;
    assert!(matches!(
        from_json(contradiction),
        Err(FileError::Metadata { .. })
    ));
}

#[test]
fn rejects_bad_metadata() {
    for text in [
        "",
        "[1]",
        r#"{"version": 2, "blocks": [{"kind": "linear", "weight": "w"}]}"#,
        r#"{"blocks": [{"kind": "linear", "weight": "w"}]}"#,
        r#"{"version": 1, "blocks": []}"#,
        r#"{"version": 1, "blocks": [{"kind": "conv", "weight": "w"}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "linear", "wieght": "w"}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "linear", "weight": 3}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l"}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l", "right": "r", "fused": "f"}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "bilinear", "fused": "f", "left_bias": "b"}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l", "right": "r", "residual": "x"}]}"#,
        r#"{"version": 1, "sequence": 1, "blocks": [{"kind": "linear", "weight": "w"}]}"#,
        r#"{"version": 1, "blocks": [{"kind": "linear", "weight": "w", "transpose": "yes"}]}"#,
    ] {
        assert!(
            matches!(from_json(text), Err(FileError::Metadata { .. })),
            "{text}"
        );
    }
}
