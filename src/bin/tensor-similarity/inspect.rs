//! `inspect`: what a model file holds.

use std::fmt::Write;
use std::path::Path;

use serde_json::json;
use tensor_similarity::io::{Layout, ModelFile, NormReading};
use tensor_similarity::{Description, Setting};

/// One block's summary.
struct Row {
    kind: &'static str,
    input: usize,
    output: usize,
    order: usize,
    hidden: Option<usize>,
    /// A bilinear block's `(α, r)`.
    residual: Option<(f64, f64)>,
    parameters: usize,
    dtypes: Vec<&'static str>,
    attention: Option<AttentionRow>,
}

/// What an attention block adds to its row.
struct AttentionRow {
    heads: usize,
    qk_width: usize,
    value_width: usize,
    mask: &'static str,
    rotary_base: Option<f64>,
    scale: f64,
    skip: f64,
    score_scale: f64,
}

impl AttentionRow {
    /// From an attention block's description; `None` for another kind.
    fn of(d: &Description<'_, f64>) -> Option<Self> {
        if d.kind != "attention" {
            return None;
        }
        let count = |name| match d.setting(name) {
            Some(Setting::Count(c)) => Some(*c),
            _ => None,
        };
        Some(Self {
            heads: count("heads")?,
            qk_width: count("qk_width")?,
            value_width: count("value_width")?,
            mask: match d.setting("mask")? {
                Setting::Name(name) => name,
                _ => return None,
            },
            rotary_base: match d.setting("rotary_base")? {
                Setting::Optional(base) => *base,
                _ => return None,
            },
            scale: d.real("scale")?,
            skip: d.real("skip")?,
            score_scale: d.real("score_scale")?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "heads {}, e {}, e_v {}, mask {}, rotary {}, α {}, skip r {}, score scale c {}",
            self.heads,
            self.qk_width,
            self.value_width,
            self.mask,
            self.rotary_base
                .map_or("off".into(), |b| format!("base {b}")),
            self.scale,
            self.skip,
            self.score_scale
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "heads": self.heads, "qk_width": self.qk_width, "value_width": self.value_width,
            "mask": self.mask, "rotary_base": self.rotary_base, "scale": self.scale,
            "skip": self.skip, "score_scale": self.score_scale,
        })
    }
}

fn rows(file: &ModelFile) -> Vec<Row> {
    file.model
        .blocks()
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let description = b.describe();
            let bilinear = description.kind == "bilinear";
            let tensors = file.tensors.iter().filter(|t| t.block == i);
            let mut dtypes: Vec<&'static str> = tensors.clone().map(|t| t.dtype.name()).collect();
            dtypes.sort_unstable();
            dtypes.dedup();
            Row {
                kind: b.kind(),
                input: b.input_width(),
                output: b.output_width(),
                order: b.order(),
                hidden: match description.setting("hidden") {
                    Some(Setting::Count(h)) if bilinear => Some(*h),
                    _ => None,
                },
                residual: description
                    .real("scale")
                    .zip(description.real("skip"))
                    .filter(|_| bilinear),
                parameters: file.block_parameter_count(i),
                dtypes,
                attention: AttentionRow::of(&description),
            }
        })
        .collect()
}

/// A human-readable table.
pub fn table(path: &Path, file: &ModelFile) -> String {
    let m = &file.model;
    let rows = rows(file);
    let total = file.parameter_count();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "file:       {}", path.display());
    let _ = writeln!(out, "layout:     {}", file.layout.name());
    let _ = writeln!(
        out,
        "model:      {} blocks, input width {}, output width {}, degree {}, {} parameters",
        m.depth(),
        m.input_width(),
        m.output_width(),
        m.degree(),
        total
    );
    if let Some(source) = &file.checkpoint {
        let _ = writeln!(
            out,
            "weights:    {}{}{}",
            source
                .key
                .as_ref()
                .map_or("the file's top-level state_dict".into(), |k| format!(
                    "the state_dict under {k:?}"
                )),
            source.step.map_or(String::new(), |s| format!(", step {s}")),
            if source.ignored.is_empty() {
                String::new()
            } else {
                format!(" (not weights: {})", source.ignored.join(", "))
            }
        );
    }
    if let Some(config) = &file.config {
        let _ = writeln!(out, "config:     {}", config.display());
    }
    for k in &file.ignored_config_keys {
        let _ = writeln!(
            out,
            "ignored:    model.{} = {} ({})",
            k.key.escape_debug(),
            shown(&k.value),
            k.why
        );
    }
    let _ = writeln!(out, "context:    {}", context_line(file));
    if file.layout == Layout::Transformer
        && let Some(base) = rows
            .iter()
            .find_map(|r| r.attention.as_ref().and_then(|a| a.rotary_base))
    {
        let _ = writeln!(
            out,
            "rotary:     base {base}, the research Transformer's fixed base (its Attention \
             hard-codes it; no config key or option changes it)"
        );
    }
    for n in &file.norms {
        let _ = writeln!(out, "norm:       {n}");
    }
    for a in &file.assumptions {
        let _ = writeln!(out, "assumed:    {a}");
    }
    let _ = writeln!(
        out,
        "\n{:>5}  {:<9} {:>6} {:>6} {:>5} {:>6} {:>6} {:>6} {:>10}  dtypes",
        "block", "kind", "in", "out", "order", "hidden", "α", "r", "parameters"
    );
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>5}  {:<9} {:>6} {:>6} {:>5} {:>6} {:>6} {:>6} {:>10}  {}",
            i,
            r.kind,
            r.input,
            r.output,
            r.order,
            r.hidden.map_or("-".into(), |h| h.to_string()),
            r.residual
                .map_or("-".into(), |(alpha, _)| alpha.to_string()),
            r.residual.map_or("-".into(), |(_, skip)| skip.to_string()),
            r.parameters,
            r.dtypes.join(",")
        );
        if let Some(a) = &r.attention {
            let _ = writeln!(out, "{:>5}  attention: {}", "", a.describe());
        }
    }
    let _ = writeln!(out, "\ntensors:");
    let width = file.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in &file.tensors {
        let _ = writeln!(
            out,
            "  {:<width$}  block {} {:<10} {:<4} {:?}",
            t.name,
            t.block,
            t.role,
            t.dtype.name(),
            t.shape
        );
    }
    out
}

/// A config value on one line of bounded length.
fn shown(value: &serde_json::Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// What a comparison of this model needs as its context length.
fn context_line(file: &ModelFile) -> String {
    if !file.model.is_sequence() {
        return "not a sequence model (no --context)".into();
    }
    match file.native_context {
        Some(n) => format!("sequence model: compare with --context N (native context n_ctx = {n})"),
        None => "sequence model: compare with --context N".into(),
    }
}

/// The same as JSON.
pub fn json(path: &Path, file: &ModelFile) -> String {
    let m = &file.model;
    let blocks: Vec<_> = rows(file)
        .into_iter()
        .map(|r| {
            json!({
                "kind": r.kind, "input_width": r.input, "output_width": r.output,
                "order": r.order, "hidden_width": r.hidden,
                "scale": r.residual.map(|(alpha, _)| alpha),
                "skip": r.residual.map(|(_, skip)| skip),
                // The research lerp s, when the block is one (α = s, r = 1 − s).
                "residual": r.residual.and_then(|(alpha, skip)| (skip == 1.0 - alpha).then_some(alpha)),
                "parameters": r.parameters, "dtypes": r.dtypes,
                "attention": r.attention.as_ref().map(AttentionRow::json),
            })
        })
        .collect();
    let tensors: Vec<_> = file
        .tensors
        .iter()
        .map(|t| json!({"name": t.name, "block": t.block, "role": t.role, "dtype": t.dtype.name(), "shape": t.shape}))
        .collect();
    let mut s = json!({
        "file": path.display().to_string(),
        "layout": file.layout.name(),
        "input_width": m.input_width(),
        "output_width": m.output_width(),
        "degree": m.degree(),
        "parameters": file.parameter_count(),
        "sequence": m.is_sequence(),
        "native_context": file.native_context,
        "config": file.config.as_ref().map(|c| c.display().to_string()),
        "checkpoint": file.checkpoint.as_ref().map(|c| json!({
            "key": c.key, "step": c.step, "ignored": c.ignored,
        })),
        "ignored_config_keys": file.ignored_config_keys.iter().map(|k| json!({
            "key": k.key, "value": k.value, "why": k.why,
        })).collect::<Vec<_>>(),
        "assumptions": file.assumptions,
        "norms": file.norms.iter().map(|n| {
            let (folded, scale, shift) = match &n.reading {
                NormReading::Folded { scale, shift } => (true, Some(*scale), *shift),
                _ => (false, None, None),
            };
            json!({
                "kind": n.kind, "place": n.place.to_string(), "eps": n.eps,
                "folded": folded, "scale": scale, "shift": shift,
            })
        }).collect::<Vec<_>>(),
        "norms_removed": file.norms_removed(),
        "blocks": blocks,
        "tensors": tensors,
    })
    .to_string();
    s.push('\n');
    s
}
