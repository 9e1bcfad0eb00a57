use serde_json::json;

use super::*;

/// A plain scalar as a value, or the error.
fn plain(text: &str) -> Result<Value, String> {
    scalar(text, true, None, false).map(Node::into_value)
}

/// Each rule of PyYAML's resolver and constructors (PyYAML 6.0, YAML 1.1):
/// the scalar and the value `yaml.safe_load` gives (Python's `int`,
/// `float`, `bool`, `None`, `str` as JSON). Written from PyYAML's
/// resolver.py and constructor.py, and checked once against PyYAML 6.0.3
/// (`yaml.safe_load("a: " + text)["a"]`); no test runs PyYAML.
#[test]
fn plain_scalars_resolve_as_pyyaml_reads_them() {
    let table: &[(&str, Value)] = &[
        // Octal with a leading 0; 8 and 9 are not octal digits, and there
        // is no dot, so 09 is neither int nor float: a string.
        ("01750", json!(1000)),
        ("-012", json!(-10)),
        ("00", json!(0)),
        ("0_7", json!(7)),
        ("09", json!("09")),
        ("0_8", json!("0_8")),
        ("0o1750", json!("0o1750")),
        ("0o", json!("0o")),
        // Decimal, with underscores and signs.
        ("0", json!(0)),
        ("-0", json!(0)),
        ("+12", json!(12)),
        ("1_000", json!(1000)),
        ("1__", json!(1)),
        ("_1", json!("_1")),
        ("9223372036854775807", json!(9_223_372_036_854_775_807_i64)),
        (
            "18446744073709551615",
            json!(18_446_744_073_709_551_615_u64),
        ),
        // Beyond 64 bits: a Python int, read here as the nearest float.
        ("99999999999999999999999", json!(1e23)),
        // Binary and hexadecimal (lower-case prefixes only).
        ("0b101", json!(5)),
        ("-0b11", json!(-3)),
        ("0b2", json!("0b2")),
        ("0b", json!("0b")),
        ("0B101", json!("0B101")),
        ("0x1F", json!(31)),
        ("+0x_1f", json!(31)),
        ("0x1F_", json!(31)),
        ("0x", json!("0x")),
        ("0X1F", json!("0X1F")),
        // Sexagesimal (base 60) integers and floats.
        ("1:30", json!(90)),
        ("-1:30", json!(-90)),
        ("1:30:00", json!(5400)),
        ("1_:30", json!(90)),
        ("1:5", json!(65)),
        ("1:0", json!(60)),
        ("1:60", json!("1:60")),
        ("0:30", json!("0:30")),
        ("1:3_0", json!("1:3_0")),
        ("1:30.5", json!(90.5)),
        ("1:2:3.5", json!(3723.5)),
        ("1:30.5e+3", json!("1:30.5e+3")),
        // Floats need a dot, and an exponent needs its sign.
        ("1.0e+3", json!(1000.0)),
        ("1.0E+3", json!(1000.0)),
        ("1.5e-3", json!(0.0015)),
        ("1.0e3", json!("1.0e3")),
        ("1e3", json!("1e3")),
        ("12e03", json!("12e03")),
        ("1e+3", json!("1e+3")),
        ("1.", json!(1.0)),
        ("0.", json!(0.0)),
        ("1_0.5_0", json!(10.5)),
        ("0.5_", json!(0.5)),
        ("1.0e+3_", json!("1.0e+3_")),
        ("1.0e_+3", json!("1.0e_+3")),
        // A leading dot needs a digit after it, and takes no sign.
        (".5", json!(0.5)),
        (".5e+3", json!(500.0)),
        ("-.5", json!("-.5")),
        ("+.5", json!("+.5")),
        ("._", json!("._")),
        (".", json!(".")),
        // Infinities and NaN: kept as their text (JSON has no value).
        (".inf", json!(".inf")),
        ("-.inf", json!("-.inf")),
        ("+.INF", json!("+.INF")),
        (".NaN", json!(".NaN")),
        ("+.nan", json!("+.nan")),
        ("inf", json!("inf")),
        // Booleans: these eighteen words only.
        ("yes", json!(true)),
        ("Yes", json!(true)),
        ("YES", json!(true)),
        ("on", json!(true)),
        ("On", json!(true)),
        ("ON", json!(true)),
        ("true", json!(true)),
        ("True", json!(true)),
        ("TRUE", json!(true)),
        ("no", json!(false)),
        ("No", json!(false)),
        ("NO", json!(false)),
        ("off", json!(false)),
        ("Off", json!(false)),
        ("OFF", json!(false)),
        ("false", json!(false)),
        ("False", json!(false)),
        ("FALSE", json!(false)),
        ("y", json!("y")),
        ("n", json!("n")),
        ("Y", json!("Y")),
        ("tRue", json!("tRue")),
        ("yEs", json!("yEs")),
        // Null.
        ("~", json!(null)),
        ("null", json!(null)),
        ("Null", json!(null)),
        ("NULL", json!(null)),
        ("", json!(null)),
        ("nULL", json!("nULL")),
        // Timestamps are datetimes to PyYAML; kept as their text here.
        ("2024-01-01", json!("2024-01-01")),
        // Strings.
        ("bilinear", json!("bilinear")),
        ("+", json!("+")),
        ("1.2.3", json!("1.2.3")),
    ];
    for (text, want) in table {
        assert_eq!(plain(text).as_ref(), Ok(want), "{text:?}");
    }
    // The infinities and NaN are floats (so that keys and tags see them as
    // such) before they become text.
    assert!(
        matches!(scalar("-.inf", true, None, false), Ok(Node::Float(x, _)) if x == f64::NEG_INFINITY)
    );
    assert!(matches!(scalar(".nan", true, None, false), Ok(Node::Float(x, _)) if x.is_nan()));
}

#[test]
fn what_pyyaml_cannot_read_is_an_error() {
    // PyYAML's constructor fails on these (int('', 2)), and on `=` and
    // `<<` as values; a merge key is refused here where PyYAML merges.
    for text in ["0b_", "0x_", "-0b__", "=", "<<"] {
        assert!(plain(text).is_err(), "{text:?}");
    }
    assert!(scalar("<<", true, None, true).is_err());
    // `=` as a key is the string "=" (PyYAML's flatten_mapping).
    assert_eq!(scalar("=", true, None, true), Ok(Node::Str("=".into())));
}

#[test]
fn quoted_scalars_are_strings() {
    for text in ["01750", "yes", "1.0e+3", "~", "", "<<", "="] {
        assert_eq!(
            scalar(text, false, None, false).map(Node::into_value),
            Ok(json!(text)),
            "{text:?}"
        );
    }
}

#[test]
fn standard_tags_are_honoured_when_they_fit() {
    let tag = |suffix: &str| Tag {
        handle: STANDARD.into(),
        suffix: suffix.into(),
    };
    let tagged = |text: &str, suffix: &str, plain: bool| {
        scalar(text, plain, Some(&tag(suffix)), false).map(Node::into_value)
    };
    assert_eq!(tagged("12", "str", true), Ok(json!("12")));
    assert_eq!(tagged("12", "int", false), Ok(json!(12)));
    assert_eq!(tagged("017", "int", true), Ok(json!(15)));
    assert_eq!(tagged("1.5", "float", true), Ok(json!(1.5)));
    assert_eq!(tagged("off", "bool", true), Ok(json!(false)));
    assert_eq!(tagged("~", "null", true), Ok(json!(null)));
    // A tag that would change the type is refused, not guessed at.
    for (text, suffix) in [("1e3", "int"), ("1", "float"), ("1", "bool"), ("x", "null")] {
        let e = tagged(text, suffix, true).unwrap_err();
        assert!(e.contains(&format!("!!{suffix}")), "{e}");
    }
    let e = tagged("x", "binary", true).unwrap_err();
    assert!(e.contains("!!binary"), "{e}");
    let local = Tag {
        handle: "!".into(),
        suffix: "thing".into(),
    };
    let e = scalar("x", true, Some(&local), false).unwrap_err();
    assert!(e.contains("!thing"), "{e}");
    assert!(collection_tag(Some(&tag("map")), "map").is_ok());
    assert!(collection_tag(Some(&tag("seq")), "map").is_err());
    assert!(collection_tag(Some(&tag("python/tuple")), "seq").is_err());
}

#[test]
fn keys_are_strings_integers_or_booleans() {
    let key = |text: &str| scalar(text, true, None, true).and_then(Node::into_key);
    assert_eq!(key("d_model"), Ok("d_model".into()));
    assert_eq!(key("0x10"), Ok("16".into()));
    assert_eq!(key("1"), Ok("1".into()));
    assert_eq!(key("on"), Ok("true".into()));
    assert_eq!(
        key("99999999999999999999"),
        Ok("99999999999999999999".into())
    );
    for text in ["1.5", "~", ".inf"] {
        assert!(key(text).is_err(), "{text:?}");
    }
}
