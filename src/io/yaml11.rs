//! Plain YAML scalars read as PyYAML reads them (YAML 1.1), for run
//! configs: the research code writes and reads its configs with PyYAML's
//! `safe_load`, so a value means here what it meant to the run.
//!
//! YAML 1.2 (which the parser's own loader follows) reads some scalars
//! otherwise, silently: `01750` is octal 1000 in YAML 1.1 and 1750 in 1.2,
//! `1e3` and `0o17` are numbers in 1.2 and strings in 1.1, and 1.1 reads
//! `1_000`, `0b101`, sexagesimal `1:30` (90) and `yes`/`on`/`off` too.
//!
//! The rules are PyYAML's implicit resolvers (`yaml/resolver.py`), tried in
//! its order (bool, float, int, merge, null, timestamp, value), and its
//! `SafeConstructor.construct_yaml_{bool,int,float}`:
//!
//! ```text
//! bool  yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
//! float [-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?  |  \.[0-9][0-9_]*([eE][-+][0-9]+)?
//!       | [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*  |  [-+]?\.(inf|Inf|INF)  |  \.(nan|NaN|NAN)
//! int   [-+]?0b[0-1_]+  |  [-+]?0[0-7_]+  |  [-+]?(0|[1-9][0-9_]*)  |  [-+]?0x[0-9a-fA-F_]+
//!       | [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+
//! null  ~|null|Null|NULL|(empty)
//! ```
//!
//! (the float pattern of PyYAML ≥ 5.1, which requires a digit after a
//! leading dot). Underscores are dropped before a number is built; a
//! leading `0` is octal; `a:b:c` is base 60. A float needs a dot, and an
//! exponent needs its sign: `1.0e+3` is a float, `1.0e3` and `1e3` are
//! strings. Anything else plain, and every quoted scalar, is a string.
//!
//! Where this reader departs from PyYAML, it refuses or keeps text: a
//! timestamp (`2024-01-01`, a `datetime` to PyYAML) is kept as its text
//! (JSON has no date; no model key takes one); a merge key `<<` is refused
//! (PyYAML merges the mapping in); an integer beyond `±2¹²⁷` becomes the
//! nearest float (no model key takes one).

use serde_json::{Number, Value};
use yaml_rust2::parser::Tag;

use crate::error::{CLIPPED, clipped};

/// The handle of the standard tags (`!!int` is `tag:yaml.org,2002:int`).
const STANDARD: &str = "tag:yaml.org,2002:";

/// A node of the document: a scalar as YAML 1.1 types it, or a finished
/// sequence or mapping.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// `~`, `null`, empty.
    Null,
    /// `yes`, `off`, `True`, ….
    Bool(bool),
    /// An integer (any base, sexagesimal).
    Int(i128),
    /// A float, with the text it was read from (non-finite ones are kept
    /// as that text: JSON has no value for them).
    Float(f64, String),
    /// Everything else, and every quoted or `!!str` scalar.
    Str(String),
    /// A finished sequence or mapping.
    Tree(Value),
}

impl Node {
    /// The node as a JSON value.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Int(i) => {
                if let Ok(i) = i64::try_from(i) {
                    Value::from(i)
                } else if let Ok(u) = u64::try_from(i) {
                    Value::from(u)
                } else {
                    float_value(i as f64, &i.to_string())
                }
            }
            Node::Float(x, text) => float_value(x, &text),
            Node::Str(s) => Value::String(s),
            Node::Tree(v) => v,
        }
    }

    /// The node as a mapping key: strings as they are, integers and
    /// booleans as their text (`1`, `true`); other keys are refused.
    pub(crate) fn into_key(self) -> Result<String, String> {
        match self {
            Node::Str(s) => Ok(s),
            Node::Int(i) => Ok(i.to_string()),
            Node::Bool(b) => Ok(b.to_string()),
            Node::Null => Err("a mapping key that is null".into()),
            Node::Float(_, text) => Err(format!(
                "a mapping key {:?} that is a float, not a string",
                clipped(&text, CLIPPED)
            )),
            Node::Tree(_) => Err("a mapping key that is a sequence or mapping".into()),
        }
    }
}

/// A finite float as a JSON number; a non-finite one as its text.
fn float_value(x: f64, text: &str) -> Value {
    Number::from_f64(x).map_or_else(|| Value::String(text.to_owned()), Value::Number)
}

/// The scalar `text` as PyYAML's `safe_load` reads it: a `plain`
/// (unquoted) one resolved by YAML 1.1's rules, a quoted one a string,
/// `tag` honoured if standard. `key`: the scalar is a mapping key (where
/// PyYAML reads `=` as the string `"="`).
pub(crate) fn scalar(
    text: &str,
    plain: bool,
    tag: Option<&Tag>,
    key: bool,
) -> Result<Node, String> {
    let resolved = || resolve(text).map_err(|e| format!("{:?}: {e}", clipped(text, CLIPPED)));
    let Some(tag) = tag else {
        return match (plain, text) {
            (false, _) => Ok(Node::Str(text.to_owned())),
            (true, "=") if key => Ok(Node::Str(text.to_owned())),
            (true, "=") => {
                Err("a plain `=` (YAML 1.1's value key) is not a value: quote it".into())
            }
            (true, _) => resolved(),
        };
    };
    let standard = (tag.handle == STANDARD).then_some(tag.suffix.as_str());
    // An explicit tag is honoured when the text is of that type (PyYAML
    // would also convert some texts of other types; a config that relies
    // on that is refused rather than guessed at).
    let wanted = match standard {
        Some("str") => return Ok(Node::Str(text.to_owned())),
        Some(kind @ ("int" | "float" | "bool" | "null")) => kind,
        _ => {
            return Err(format!(
                "the tag {} is not read in a config (only !!str, !!int, !!float, !!bool, !!null)",
                tag_text(tag)
            ));
        }
    };
    let node = resolved()?;
    match (wanted, &node) {
        ("int", Node::Int(_))
        | ("float", Node::Float(..))
        | ("bool", Node::Bool(_))
        | ("null", Node::Null) => Ok(node),
        _ => Err(format!(
            "!!{wanted} {:?}: the text is not a YAML 1.1 {wanted}",
            clipped(text, CLIPPED)
        )),
    }
}

/// PyYAML's implicit resolvers, in its order (bool, float, int, merge,
/// null; a timestamp is kept as text), then its constructors.
fn resolve(text: &str) -> Result<Node, String> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Ok(Node::Bool(true))
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Ok(Node::Bool(false))
        }
        _ if is_float(text) => float(text).map(|x| Node::Float(x, text.to_owned())),
        _ if is_int(text) => int(text),
        "<<" => Err("YAML merge keys (<<) are not read in a config: write the keys out".into()),
        "~" | "null" | "Null" | "NULL" | "" => Ok(Node::Null),
        _ => Ok(Node::Str(text.to_owned())),
    }
}

/// A cursor over the bytes of a scalar, for matching the resolvers'
/// patterns by hand (each is a sequence of character classes with no
/// ambiguity that backtracking would resolve otherwise).
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            rest: text.as_bytes(),
        }
    }

    /// Consumes one byte satisfying `class`.
    fn one(&mut self, class: impl Fn(u8) -> bool) -> bool {
        match self.rest.first() {
            Some(&b) if class(b) => {
                self.rest = &self.rest[1..];
                true
            }
            _ => false,
        }
    }

    /// Consumes `[-+]?`.
    fn sign(&mut self) {
        self.one(|b| b == b'-' || b == b'+');
    }

    /// Consumes the literal `s`.
    fn literal(&mut self, s: &str) -> bool {
        match self.rest.strip_prefix(s.as_bytes()) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Consumes a run of bytes satisfying `class`; how many.
    fn many(&mut self, class: impl Fn(u8) -> bool) -> usize {
        let n = self.rest.iter().take_while(|&&b| class(b)).count();
        self.rest = &self.rest[n..];
        n
    }

    fn end(&self) -> bool {
        self.rest.is_empty()
    }

    /// Consumes `(?::[0-5]?[0-9])+`. Taking two digits whenever they fit
    /// is what the pattern's backtracking finds too: each group is followed
    /// by `:`, `.` or the end, never by a digit.
    fn sexagesimal(&mut self) -> bool {
        let mut groups = 0;
        while self.rest.first() == Some(&b':') {
            match self.rest.get(1..3) {
                Some([a, b]) if (b'0'..=b'5').contains(a) && b.is_ascii_digit() => {
                    self.rest = &self.rest[3..];
                }
                _ => match self.rest.get(1) {
                    Some(a) if a.is_ascii_digit() => self.rest = &self.rest[2..],
                    _ => return false,
                },
            }
            groups += 1;
        }
        groups > 0
    }

    /// Consumes `(?:[eE][-+][0-9]+)?`; false if it starts but does not match.
    fn exponent(&mut self) -> bool {
        if !self.one(|b| b == b'e' || b == b'E') {
            return true;
        }
        self.one(|b| b == b'-' || b == b'+') && self.many(|b| b.is_ascii_digit()) > 0
    }
}

fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn digit_(b: u8) -> bool {
    b.is_ascii_digit() || b == b'_'
}

/// PyYAML's float pattern.
fn is_float(text: &str) -> bool {
    // [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?
    let decimal = || {
        let mut c = Cursor::new(text);
        c.sign();
        c.one(digit)
            && {
                c.many(digit_);
                c.literal(".")
            }
            && {
                c.many(digit_);
                c.exponent()
            }
            && c.end()
    };
    // \.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    let fraction = || {
        let mut c = Cursor::new(text);
        c.literal(".")
            && c.one(digit)
            && {
                c.many(digit_);
                c.exponent()
            }
            && c.end()
    };
    // [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    let base60 = || {
        let mut c = Cursor::new(text);
        c.sign();
        c.one(digit)
            && {
                c.many(digit_);
                c.sexagesimal()
            }
            && c.literal(".")
            && {
                c.many(digit_);
                c.end()
            }
    };
    // [-+]?\.(?:inf|Inf|INF)
    let inf = || {
        let mut c = Cursor::new(text);
        c.sign();
        matches!(c.rest, b".inf" | b".Inf" | b".INF")
    };
    let nan = || matches!(text, ".nan" | ".NaN" | ".NAN");
    decimal() || fraction() || base60() || inf() || nan()
}

/// PyYAML's int pattern.
fn is_int(text: &str) -> bool {
    let signed = || {
        let mut c = Cursor::new(text);
        c.sign();
        c
    };
    // [-+]?0b[0-1_]+
    let binary = || {
        let mut c = signed();
        c.literal("0b") && c.many(|b| b == b'0' || b == b'1' || b == b'_') > 0 && c.end()
    };
    // [-+]?0[0-7_]+
    let octal = || {
        let mut c = signed();
        c.literal("0") && c.many(|b| (b'0'..=b'7').contains(&b) || b == b'_') > 0 && c.end()
    };
    // [-+]?(?:0|[1-9][0-9_]*), one alternative at a time
    let zero = || {
        let mut c = signed();
        c.literal("0") && c.end()
    };
    let decimal = || {
        let mut c = signed();
        c.one(|b| (b'1'..=b'9').contains(&b)) && {
            c.many(digit_);
            c.end()
        }
    };
    // [-+]?0x[0-9a-fA-F_]+
    let hex = || {
        let mut c = signed();
        c.literal("0x") && c.many(|b| b.is_ascii_hexdigit() || b == b'_') > 0 && c.end()
    };
    // [-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    let base60 = || {
        let mut c = signed();
        c.one(|b| (b'1'..=b'9').contains(&b))
            && {
                c.many(digit_);
                c.sexagesimal()
            }
            && c.end()
    };
    binary() || octal() || zero() || decimal() || hex() || base60()
}

/// `SafeConstructor.construct_yaml_int` of a text that [`is_int`].
fn int(text: &str) -> Result<Node, String> {
    let value: String = text.chars().filter(|&c| c != '_').collect();
    let (negative, value) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, &value[..]),
    };
    let magnitude = if value == "0" {
        Magnitude::Exact(0)
    } else if let Some(digits) = value.strip_prefix("0b") {
        Magnitude::radix(digits, 2)?
    } else if let Some(digits) = value.strip_prefix("0x") {
        Magnitude::radix(digits, 16)?
    } else if value.starts_with('0') {
        Magnitude::radix(value, 8)?
    } else if value.contains(':') {
        let mut total = Magnitude::Exact(0);
        let mut base = Magnitude::Exact(1);
        for part in value.split(':').rev() {
            let digit = Magnitude::radix(part, 10)?;
            total = total.add(&digit.mul(&base));
            base = base.mul(&Magnitude::Exact(60));
        }
        total
    } else {
        Magnitude::radix(value, 10)?
    };
    Ok(match magnitude {
        Magnitude::Exact(m) => {
            let signed = if negative {
                0i128.checked_sub_unsigned(m)
            } else {
                i128::try_from(m).ok()
            };
            match signed {
                Some(i) => Node::Int(i),
                None => Node::Float(signed_f64(negative, m as f64), text.to_owned()),
            }
        }
        Magnitude::Approx(x) => Node::Float(signed_f64(negative, x), text.to_owned()),
    })
}

fn signed_f64(negative: bool, x: f64) -> f64 {
    if negative { -x } else { x }
}

/// A non-negative integer: exact while it fits 128 bits, else a float.
#[derive(Clone, Copy, Debug)]
enum Magnitude {
    Exact(u128),
    Approx(f64),
}

impl Magnitude {
    /// The digits in `radix`, as Python's `int(digits, radix)`: an empty
    /// string is an error (PyYAML fails on `0b_`).
    fn radix(digits: &str, radix: u32) -> Result<Self, String> {
        if digits.is_empty() {
            return Err(format!(
                "no digits after the base prefix (PyYAML cannot read it either: int('', {radix}))"
            ));
        }
        let mut m = Magnitude::Exact(0);
        for c in digits.chars() {
            let d = c
                .to_digit(radix)
                .ok_or_else(|| format!("{c:?} is not a digit in base {radix}"))?;
            m = m
                .mul(&Magnitude::Exact(radix.into()))
                .add(&Magnitude::Exact(d.into()));
        }
        // A decimal too large for 128 bits: the correctly rounded float.
        if let (Magnitude::Approx(_), 10) = (m, radix) {
            m = Magnitude::Approx(digits.parse().map_err(|e| format!("{e}"))?);
        }
        Ok(m)
    }

    fn to_f64(self) -> f64 {
        match self {
            Magnitude::Exact(m) => m as f64,
            Magnitude::Approx(x) => x,
        }
    }

    fn add(&self, other: &Self) -> Self {
        match (self, other) {
            (Magnitude::Exact(a), Magnitude::Exact(b)) => a.checked_add(*b).map_or_else(
                || Magnitude::Approx(*a as f64 + *b as f64),
                Magnitude::Exact,
            ),
            _ => Magnitude::Approx(self.to_f64() + other.to_f64()),
        }
    }

    fn mul(&self, other: &Self) -> Self {
        match (self, other) {
            (Magnitude::Exact(a), Magnitude::Exact(b)) => a.checked_mul(*b).map_or_else(
                || Magnitude::Approx(*a as f64 * *b as f64),
                Magnitude::Exact,
            ),
            _ => Magnitude::Approx(self.to_f64() * other.to_f64()),
        }
    }
}

/// `SafeConstructor.construct_yaml_float` of a text that [`is_float`].
fn float(text: &str) -> Result<f64, String> {
    let value: String = text
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_lowercase();
    let (negative, value) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, &value[..]),
    };
    let parse = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| format!("{s:?} is not a float (PyYAML cannot read it either)"))
    };
    let x = match value {
        ".inf" => f64::INFINITY,
        ".nan" => f64::NAN,
        _ if value.contains(':') => {
            // As PyYAML sums it: the parts from the last, times 60^k
            // (an integer in Python, exact here while it fits 128 bits).
            let mut total = 0.0;
            let mut base = Magnitude::Exact(1);
            for part in value.split(':').rev() {
                total += parse(part)? * base.to_f64();
                base = base.mul(&Magnitude::Exact(60));
            }
            total
        }
        _ => parse(value)?,
    };
    Ok(signed_f64(negative, x))
}

/// A sequence's or mapping's tag: none, or the standard `!!seq`/`!!map`
/// (`kind`).
pub(crate) fn collection_tag(tag: Option<&Tag>, kind: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(t) if t.handle == STANDARD && t.suffix == kind => Ok(()),
        Some(t) => Err(format!(
            "the tag {} is not read in a config (a {} has none, or !!{kind})",
            tag_text(t),
            if kind == "seq" { "list" } else { "mapping" }
        )),
    }
}

/// A tag as written: `!!int` for the standard ones, else its handle and
/// suffix.
fn tag_text(tag: &Tag) -> String {
    let text = if tag.handle == STANDARD {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    };
    clipped(&text, CLIPPED)
}

#[cfg(test)]
mod tests {
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
}
