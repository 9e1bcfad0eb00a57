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

/// The matrix as CSV: a header row of checkpoint names, then one row per
/// checkpoint, values as shortest round-trip floats.
pub fn write_matrix(path: &Path, names: &[String], m: &DMatrix<f64>) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(f, "{}", names.join(","))?;
    for row in m.row_iter() {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        writeln!(f, "{}", cells.join(","))?;
    }
    f.flush()
}

/// A matrix CSV read back: its header names and values.
pub fn read_matrix(path: &Path) -> Result<(Vec<String>, DMatrix<f64>), Box<dyn Error>> {
    let text = fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?;
    let names: Vec<String> = header.split(',').map(str::to_owned).collect();
    let values: Vec<f64> = lines
        .flat_map(|l| l.split(','))
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
        let names = stems(&[0, 50, 100]);
        write_matrix(&path, &names, &m).unwrap();
        let (back_names, back) = read_matrix(&path).unwrap();
        assert_eq!(back_names, ["step_0", "step_50", "step_100"]);
        assert_eq!(back, m);
    }
}
