//! What a study writes besides checkpoints and figures: matrices as CSV (as
//! the command line's `matrix` writes them), tables of curves, and
//! `summary.json`; and reading a matrix back.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::Path;

use nalgebra::DMatrix;
use serde_json::Value;

/// The checkpoints' names as `matrix` heads its columns: the file stems.
pub fn stems(steps: &[usize]) -> Vec<String> {
    steps.iter().map(|s| format!("step_{s}")).collect()
}

/// The checkpoint files relative to the study's directory, as `matrix`
/// labels its rows when given them from there.
pub fn checkpoint_files(steps: &[usize]) -> Vec<String> {
    stems(steps)
        .iter()
        .map(|s| format!("checkpoints/{s}.safetensors"))
        .collect()
}

/// The corner cell `matrix` writes for the matrix of `key`: `model`, or
/// `model (output c)` for the class-`c` slice `tensor_class_c` (as
/// `--outputs-each` names each output's matrix).
pub fn corner(key: &str) -> String {
    match key.strip_prefix("tensor_class_") {
        Some(c) => format!("model (output {c})"),
        None => "model".to_owned(),
    }
}

/// The matrix `key` over the checkpoints at `steps` as CSV, byte for byte
/// as the command line writes it when run in the study's directory
/// (`tensor-similarity matrix checkpoints/*.safetensors -o tensor.csv`;
/// with `--outputs-each -o tensor_class.csv` for the class slices): a
/// header of the [`corner`] and the file stems, then one row per
/// checkpoint headed by its file, values as shortest round-trip floats.
pub fn write_matrix(
    path: &Path,
    key: &str,
    steps: &[usize],
    m: &DMatrix<f64>,
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(f, "{},{}", corner(key), stems(steps).join(","))?;
    for (file, row) in checkpoint_files(steps).iter().zip(m.row_iter()) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        writeln!(f, "{file},{}", cells.join(","))?;
    }
    f.flush()
}

/// A matrix CSV read back: its column names (without the corner) and
/// values (without the row labels).
pub fn read_matrix(path: &Path) -> Result<(Vec<String>, DMatrix<f64>), Box<dyn Error>> {
    let text = fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?;
    let names: Vec<String> = header.split(',').skip(1).map(str::to_owned).collect();
    let values: Vec<f64> = lines
        .flat_map(|l| l.split(',').skip(1))
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let n = names.len();
    if values.len() != n * n {
        return Err(format!(
            "{}: expected {n}×{n} values, found {}",
            path.display(),
            values.len()
        )
        .into());
    }
    Ok((names, DMatrix::from_row_slice(n, n, &values)))
}

/// A table as CSV: the header, then one row per entry of the columns
/// (all of the same length).
pub fn write_table(path: &Path, header: &[&str], columns: &[Vec<f64>]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(f, "{}", header.join(","))?;
    let rows = columns.first().map_or(0, Vec::len);
    for r in 0..rows {
        let cells: Vec<String> = columns.iter().map(|c| c[r].to_string()).collect();
        writeln!(f, "{}", cells.join(","))?;
    }
    f.flush()
}

/// The matrix as JSON rows.
pub fn matrix_json(m: &DMatrix<f64>) -> Value {
    m.row_iter()
        .map(|row| row.iter().copied().collect::<Vec<f64>>())
        .collect::<Vec<_>>()
        .into()
}

/// Writes `value` pretty-printed (keys in sorted order, so the same run
/// writes the same bytes).
pub fn write_json(path: &Path, value: &Value) -> Result<(), Box<dyn Error>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_round_trips_through_csv_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let m = DMatrix::from_fn(3, 3, |i, j| 1.0 / (1.0 + i as f64 + 3.0 * j as f64));
        write_matrix(&path, "tensor_class_7", &[0, 50, 100], &m).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "model (output 7),step_0,step_50,step_100\ncheckpoints/step_0.safetensors,1,"
        ));
        let (back_names, back) = read_matrix(&path).unwrap();
        assert_eq!(back_names, ["step_0", "step_50", "step_100"]);
        assert_eq!(back, m);
    }
}
