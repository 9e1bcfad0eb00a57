//! `heads` and `paths`: where two models differ (SPEC §9), as tables, JSON
//! and heatmaps.

use nalgebra::DMatrix;
use serde_json::{Value, json};
use tensor_similarity::{HeadPaths, LogScaled, PathFamilies};

use crate::plot::Panel;

/// A raw inner product as JSON: a number while it fits in `f64`, else its
/// log-scaled text (`"1.2e+812"`), so that nothing is printed as infinity.
fn inner_value(x: LogScaled) -> Value {
    let v = x.to_f64();
    if v.is_finite() {
        json!(v)
    } else {
        json!(x.to_string())
    }
}

/// A matrix as JSON rows, `null` for NaN (undefined cosines).
fn rows(m: &DMatrix<f64>) -> Value {
    (0..m.nrows())
        .map(|i| {
            (0..m.ncols())
                .map(|j| {
                    let v = m[(i, j)];
                    if v.is_nan() { Value::Null } else { json!(v) }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn inner_rows(m: &DMatrix<LogScaled>) -> Value {
    (0..m.nrows())
        .map(|i| {
            (0..m.ncols())
                .map(|j| inner_value(m[(i, j)]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `heads --json`: one entry per attention block under `"layers"`.
pub fn heads_json(
    a: &str,
    b: &str,
    metric: &str,
    context: Option<usize>,
    found: &[HeadPaths],
) -> Value {
    let layers: Vec<Value> = found
        .iter()
        .map(|p| {
            json!({
                "block": p.block,
                "cosine": rows(&p.cosine),
                "inner": inner_rows(&p.inner),
                "exact": p.exact,
            })
        })
        .collect();
    json!({ "a": a, "b": b, "metric": metric, "context": context, "layers": layers })
}

/// A family's name: `∅`, `{1}`, `{1,2}` (chain indices).
pub fn family_name(family: &[usize]) -> String {
    if family.is_empty() {
        "∅".into()
    } else {
        let inside: Vec<String> = family.iter().map(usize::to_string).collect();
        format!("{{{}}}", inside.join(","))
    }
}

/// `paths --json`.
pub fn paths_json(a: &str, b: &str, context: Option<usize>, found: &PathFamilies) -> Value {
    json!({
        "a": a,
        "b": b,
        "metric": "tensor",
        "context": context,
        "blocks": found.blocks,
        "families": found.families,
        "inner": inner_rows(&found.inner),
        "cosine": rows(&found.cosine),
        "total": inner_value(found.total),
        "similarity": found.similarity,
    })
}

/// A table of `m` with row and column labels; NaN printed as `—`.
fn table(
    row_labels: &[String],
    col_labels: &[String],
    cell: impl Fn(usize, usize) -> String,
) -> String {
    let width = |labels: &[String]| labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let first = width(row_labels);
    let mut cells: Vec<Vec<String>> = Vec::new();
    for i in 0..row_labels.len() {
        cells.push((0..col_labels.len()).map(|j| cell(i, j)).collect());
    }
    let col = cells
        .iter()
        .flatten()
        .chain(col_labels)
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{:first$}", "");
    for label in col_labels {
        out.push_str(&format!("  {label:>col$}"));
    }
    out.push('\n');
    for (label, row) in row_labels.iter().zip(&cells) {
        out.push_str(&format!("{label:<first$}"));
        for c in row {
            out.push_str(&format!("  {c:>col$}"));
        }
        out.push('\n');
    }
    out
}

fn cosine_cell(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{v:.6}")
    }
}

fn inner_cell(x: LogScaled) -> String {
    let v = x.to_f64();
    if v.is_finite() {
        format!("{v:.6e}")
    } else {
        x.to_string()
    }
}

/// `heads`: per attention block, the cosines and inner products.
pub fn heads_text(found: &[HeadPaths]) -> String {
    let mut out = String::new();
    for p in found {
        let rows: Vec<String> = (0..p.cosine.nrows()).map(|h| format!("A{h}")).collect();
        let cols: Vec<String> = (0..p.cosine.ncols()).map(|h| format!("B{h}")).collect();
        out.push_str(&format!(
            "block {}: head paths, cosine (A's heads in rows, B's in columns){}\n",
            p.block,
            if p.exact { "" } else { ", a Gaussian closure" }
        ));
        out.push_str(&table(&rows, &cols, |i, j| cosine_cell(p.cosine[(i, j)])));
        out.push_str(&format!("block {}: inner products ⟨A_h, B_h'⟩\n", p.block));
        out.push_str(&table(&rows, &cols, |i, j| inner_cell(p.inner[(i, j)])));
    }
    out
}

/// `paths`: the family cosines and inner products, and the total.
pub fn paths_text(found: &PathFamilies) -> String {
    let names: Vec<String> = found.families.iter().map(|f| family_name(f)).collect();
    let blocks: Vec<String> = found.blocks.iter().map(usize::to_string).collect();
    let mut out = format!(
        "path families over the splitting blocks {} (a family: the blocks whose active part \
         is on the path); cosine, A's families in rows, B's in columns\n",
        blocks.join(", ")
    );
    out.push_str(&table(&names, &names, |i, j| {
        cosine_cell(found.cosine[(i, j)])
    }));
    out.push_str("inner products ⟨A^S, B^S'⟩ (they sum to ⟨A, B⟩)\n");
    out.push_str(&table(&names, &names, |i, j| {
        inner_cell(found.inner[(i, j)])
    }));
    out.push_str(&format!(
        "⟨A, B⟩ = {}\nsimilarity = {:.15}\n",
        inner_cell(found.total),
        found.similarity
    ));
    out
}

/// The heatmap panels of `heads`: one per attention block.
pub fn heads_panels(found: &[HeadPaths]) -> Vec<Panel> {
    found
        .iter()
        .map(|p| Panel {
            rows: (0..p.cosine.nrows()).map(|h| format!("A{h}")).collect(),
            columns: (0..p.cosine.ncols()).map(|h| format!("B{h}")).collect(),
            values: p.cosine.clone(),
            caption: format!("block {}", p.block),
            row_axis: "head of A".into(),
            column_axis: "head of B".into(),
        })
        .collect()
}

/// The heatmap panel of `paths`.
pub fn paths_panel(found: &PathFamilies) -> Panel {
    let names: Vec<String> = found.families.iter().map(|f| family_name(f)).collect();
    Panel {
        rows: names.clone(),
        columns: names,
        values: found.cosine.clone(),
        caption: String::new(),
        row_axis: "family of A".into(),
        column_axis: "family of B".into(),
    }
}
