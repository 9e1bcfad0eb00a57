//! Assertions the studies' tests share.

use std::collections::BTreeMap;
use std::path::Path;

use nalgebra::DMatrix;
use serde_json::Value;

/// A similarity matrix: square, symmetric, unit diagonal, entries finite
/// in [−1, 1].
pub fn assert_similarity_matrix(name: &str, m: &DMatrix<f64>) {
    assert!(m.is_square(), "{name}: {:?}", m.shape());
    for i in 0..m.nrows() {
        assert!(
            (m[(i, i)] - 1.0).abs() < 1e-12,
            "{name} diagonal {i}: {}",
            m[(i, i)]
        );
        for j in 0..m.ncols() {
            let v = m[(i, j)];
            assert!(v.is_finite() && v.abs() <= 1.0, "{name} ({i}, {j}): {v}");
            assert_eq!(v, m[(j, i)], "{name} ({i}, {j})");
        }
    }
}

/// A value read back from `summary.json` equals the one written, to the
/// last bit or two: serde_json writes floats in shortest round-trip form
/// but parses them (without its `float_roundtrip` feature) to within an
/// ulp.
pub fn assert_close(json: f64, value: f64, what: &str) {
    assert!(
        (json - value).abs() <= 4.0 * f64::EPSILON * value.abs().max(1.0),
        "{what}: {json} in summary.json, {value} computed"
    );
}

/// A matrix in `summary.json` equals `m` (see [`assert_close`]).
pub fn assert_json_close(json: &Value, m: &DMatrix<f64>, what: &str) {
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), m.nrows(), "{what}");
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), m.ncols(), "{what}");
        for (j, v) in row.iter().enumerate() {
            assert_close(
                v.as_f64().unwrap(),
                m[(i, j)],
                &format!("{what} ({i}, {j})"),
            );
        }
    }
}

/// `summary.json` of a run in `dir`.
pub fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Every file under `dir`, by path relative to it, with its bytes.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Two runs wrote the same files, byte for byte.
pub fn assert_same_files(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (name, bytes) in &ta {
        assert!(bytes == &tb[name], "{name} differs between two runs");
    }
}
