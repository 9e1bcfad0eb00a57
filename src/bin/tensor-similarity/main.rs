//! `tensor-similarity`: compare model files from the shell (SPEC §6).
//!
//! ```text
//! tensor-similarity compare A B [--metric tensor|gaussian|weight] [--context N] [--json] [loading options]
//! tensor-similarity matrix FILE... [--metric …] [--context N] [-o out.csv] [--plot out.png] [--keep-order]
//! tensor-similarity inspect FILE [--json] [loading options]
//! ```
//!
//! Loading options, for files without metadata: `--residual-scale S`,
//! `--config FILE`, `--heads H`, `--mask causal|none|diag`, `--attn-scale A`.
//!
//! A thin layer over the library: [`tensor_similarity::io`] reads the
//! files (safetensors or PyTorch), [`Metric`] picks the similarity,
//! [`tensor_similarity::matrix`] runs the pairs in parallel. Errors print
//! one line on stderr and exit 1.

mod inspect;
mod metric;
mod plot;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rayon::prelude::*;
use tensor_similarity::io::{self, LoadOptions};
use tensor_similarity::{Mask, Model, Real};

use metric::Metric;

/// Exact, symmetry-invariant similarity of tensor-based networks
/// (bilinear MLPs, linear layers) stored as safetensors files.
#[derive(Debug, Parser)]
#[command(name = "tensor-similarity", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that load models; they fill in what a
/// file without metadata and its run config do not say (and must agree
/// with the config where it does).
#[derive(Debug, clap::Args)]
struct Loading {
    /// Residual scale s of every bilinear block, for files without
    /// tensor_similarity metadata (default 1: no residual); the one α of
    /// the research Transformer layout.
    #[arg(long, value_name = "S")]
    residual_scale: Option<f64>,
    /// The run config (config.json or config.yaml) to read, instead of
    /// looking beside the checkpoint and one and two folders up.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Attention heads, where no config gives n_head.
    #[arg(long, value_name = "H")]
    heads: Option<usize>,
    /// Attention mask, where no config gives one (default causal).
    #[arg(long, value_enum, value_name = "MASK")]
    mask: Option<MaskArg>,
    /// Attention scale α of the attention-only LM layout, where no config
    /// gives attn_scale (it has no default).
    #[arg(long, value_name = "A")]
    attn_scale: Option<f64>,
}

/// The scalar type of the computation: `f64` (the default) or `f32`, for
/// `f32` checkpoints (half the memory, faster GEMMs; documented error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Precision {
    /// IEEE binary64.
    F64,
    /// IEEE binary32: each weight rounded once to f32, all arithmetic in f32.
    F32,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Precision::F64 => "f64",
            Precision::F32 => "f32",
        }
    }
}

/// The masks a command line can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MaskArg {
    /// t ≤ s.
    Causal,
    /// Every position.
    None,
    /// t = s only.
    Diag,
}

impl Loading {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            residual_scale: self.residual_scale,
            config: self.config.clone(),
            heads: self.heads,
            mask: self.mask.map(|m| match m {
                MaskArg::Causal => Mask::Causal,
                MaskArg::None => Mask::None,
                MaskArg::Diag => Mask::Diagonal,
            }),
            attn_scale: self.attn_scale,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the similarity of two models.
    Compare {
        /// The first model (.safetensors, or a PyTorch .pt/.pth/.bin).
        a: PathBuf,
        /// The second model.
        b: PathBuf,
        /// The similarity to compute.
        #[arg(long, value_enum, default_value_t = Metric::Tensor)]
        metric: Metric,
        /// Positions compared, for sequence models (required for them).
        #[arg(long, value_name = "N")]
        context: Option<usize>,
        /// The precision the models are computed in.
        #[arg(long, value_enum, default_value_t = Precision::F64)]
        precision: Precision,
        #[command(flatten)]
        loading: Loading,
        /// Print a JSON object instead of the bare number.
        #[arg(long)]
        json: bool,
    },
    /// Write the N×N similarity matrix of several models as CSV.
    Matrix {
        /// The models (.safetensors or PyTorch files, mixed), listed in
        /// natural order of their paths (step_500 before step_1000); the
        /// CSV header holds their file stems, the first column their paths.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The similarity to compute.
        #[arg(long, value_enum, default_value_t = Metric::Tensor)]
        metric: Metric,
        /// Positions compared, for sequence models (required for them).
        #[arg(long, value_name = "N")]
        context: Option<usize>,
        /// Keep the files in the order given instead of natural order.
        #[arg(long)]
        keep_order: bool,
        /// The precision the models are computed in.
        #[arg(long, value_enum, default_value_t = Precision::F64)]
        precision: Precision,
        #[command(flatten)]
        loading: Loading,
        /// Write the CSV here instead of to stdout.
        #[arg(short, long, value_name = "CSV")]
        output: Option<PathBuf>,
        /// Also draw the matrix as a heatmap PNG.
        #[arg(long, value_name = "PNG")]
        plot: Option<PathBuf>,
    },
    /// Describe a model file: layout, blocks, widths, parameters, dtypes.
    Inspect {
        /// The model (.safetensors or a PyTorch file).
        file: PathBuf,
        #[command(flatten)]
        loading: Loading,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, whatever the error's text holds.
            let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Compare {
            a,
            b,
            metric,
            context,
            precision,
            loading,
            json,
        } => {
            let paths = [a.clone(), b.clone()];
            let options = loading.options();
            let (sim, exact) = match precision {
                Precision::F64 => similarity_in::<f64>(&paths, metric, context, &options)?,
                Precision::F32 => similarity_in::<f32>(&paths, metric, context, &options)?,
            };
            let text = if json {
                let mut value = serde_json::json!({
                    "a": a.display().to_string(),
                    "b": b.display().to_string(),
                    "metric": metric.name(),
                    "similarity": sim,
                });
                if let Some(n) = context {
                    value["context"] = n.into();
                }
                if precision != Precision::F64 {
                    value["precision"] = precision.name().into();
                }
                if let Some(exact) = exact {
                    value["exact"] = exact.into();
                }
                value.to_string()
            } else {
                // `{}` prints the shortest string that parses back to the same f64.
                format!("{sim}")
            };
            println!("{text}");
            Ok(())
        }
        Command::Matrix {
            mut files,
            metric,
            context,
            keep_order,
            precision,
            loading,
            output,
            plot,
        } => {
            if !keep_order {
                files.sort_by(|x, y| natural_order(&x.to_string_lossy(), &y.to_string_lossy()));
            }
            // A full matrix can take hours: learn that an output cannot be
            // written before computing it, not after.
            let mut outputs = Outputs::default();
            if let Some(path) = &output {
                outputs.claim(path)?;
            }
            if let Some(path) = &plot {
                outputs.claim(path)?;
            }
            let options = loading.options();
            let matrix = match precision {
                Precision::F64 => matrix_in::<f64>(&files, metric, context, &options)?,
                Precision::F32 => matrix_in::<f32>(&files, metric, context, &options)?,
            };
            let labels: Vec<String> = files.iter().map(|f| stem(f)).collect();
            let rows: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let csv = to_csv(&labels, &rows, &matrix);
            match &output {
                Some(path) => outputs.write(path, csv.as_bytes())?,
                None => std::io::stdout()
                    .write_all(csv.as_bytes())
                    .map_err(|e| e.to_string())?,
            }
            if let Some(path) = &plot {
                plot::heatmap(path, &labels, &matrix, metric.name())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                outputs.done(path);
            }
            Ok(())
        }
        Command::Inspect {
            file,
            loading,
            json,
        } => {
            let opened = io::open(&file, &loading.options()).map_err(|e| e.to_string())?;
            check_options_used(std::iter::once(&opened))?;
            let text = if json {
                inspect::json(&file, &opened)
            } else {
                inspect::table(&file, &opened)
            };
            print!("{text}");
            Ok(())
        }
    }
}

/// The similarity of the two models in `paths`, computed in `T`, and
/// whether it is exact (for the metrics that can be approximate).
fn similarity_in<T: Real>(
    paths: &[PathBuf; 2],
    metric: Metric,
    context: Option<usize>,
    options: &LoadOptions,
) -> Result<(f64, Option<bool>), String> {
    let models = load_all::<T>(paths, options)?;
    let [a, b] = &models[..] else {
        return Err("compare needs two models".into());
    };
    check_context(context, paths.iter().zip(&models))?;
    let sim = metric.compare(a, b, context).map_err(|e| e.to_string())?;
    Ok((sim, metric.exact(a, b)))
}

/// The similarity matrix of the models in `files`, computed in `T`, with a
/// progress bar.
fn matrix_in<T: Real>(
    files: &[PathBuf],
    metric: Metric,
    context: Option<usize>,
    options: &LoadOptions,
) -> Result<nalgebra::DMatrix<f64>, String> {
    let models = load_all::<T>(files, options)?;
    check_context(context, files.iter().zip(&models))?;
    let n = models.len();
    let bar = indicatif::ProgressBar::new((n * n.saturating_sub(1) / 2) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} pairs (eta {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    let matrix = metric.matrix(&models, context, || bar.inc(1));
    bar.finish_and_clear();
    matrix.map_err(|e| e.to_string())
}

/// The models in `paths` in `T`, read in parallel; an error if a loading
/// option was given that no file's layout reads (it would change nothing,
/// and the user meant it to).
fn load_all<T: Real>(paths: &[PathBuf], options: &LoadOptions) -> Result<Vec<Model<T>>, String> {
    let files = paths
        .par_iter()
        .map(|f| io::open_as::<T>(f, options).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    check_options_used(files.iter())?;
    Ok(files.into_iter().map(|f| f.model).collect())
}

/// An option that none of `files` reads is refused.
fn check_options_used<'a, T: Real>(
    files: impl Iterator<Item = &'a io::ModelFile<T>> + Clone,
) -> Result<(), String> {
    let Some(first) = files.clone().next() else {
        return Ok(());
    };
    for option in &first.unused_options {
        if files.clone().all(|f| f.unused_options.contains(option)) {
            return Err(format!(
                "--{} applies to none of the files: {} (files with tensor_similarity metadata name \
                 every setting; vector layouts have no attention)",
                option.replace('_', "-"),
                files
                    .clone()
                    .map(|f| f.layout.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// The file name without its last extension, for CSV headers and labels.
fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// A context length for sequence models, none for the others: `--context`
/// is required exactly when a model reads sequences.
fn check_context<'a, T: Real>(
    context: Option<usize>,
    models: impl IntoIterator<Item = (&'a PathBuf, &'a Model<T>)>,
) -> Result<(), String> {
    if context == Some(0) {
        return Err("--context 0: a sequence has at least one position".into());
    }
    let models: Vec<_> = models.into_iter().collect();
    let sequence = models.iter().find(|(_, m)| m.is_sequence());
    match (context, sequence) {
        (None, Some((path, _))) => Err(format!(
            "{} is a sequence model: give the number of positions to compare with --context N \
             (`inspect` shows its native context where its config gives one)",
            path.display()
        )),
        (Some(n), None) => Err(format!(
            "--context {n}: none of the models is a sequence model (the option would change nothing)"
        )),
        _ => Ok(()),
    }
}

/// Output files claimed before the work: each is created (or opened, if
/// it exists, without truncating) so a missing folder or a read-only path
/// fails at once; one created here and never written is removed on exit.
#[derive(Default)]
struct Outputs {
    created: Vec<PathBuf>,
}

impl Outputs {
    fn claim(&mut self, path: &Path) -> Result<(), String> {
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: cannot write the output: {e}", path.display()))?;
        if !existed {
            self.created.push(path.to_owned());
        }
        Ok(())
    }

    fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        self.done(path);
        Ok(())
    }

    fn done(&mut self, path: &Path) {
        self.created.retain(|p| p != path);
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for path in &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Natural order: runs of digits compare as numbers (`step_500` before
/// `step_1000`), everything else as text.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (&(da, x), &(db, y)) in ca.iter().zip(&cb) {
        let order = if da && db {
            // As numbers, of any length: fewer significant digits is smaller.
            let (x0, y0) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x0.len()
                .cmp(&y0.len())
                .then_with(|| x0.cmp(y0))
                .then_with(|| x.len().cmp(&y.len()))
        } else {
            x.cmp(y)
        };
        if order.is_ne() {
            return order;
        }
    }
    ca.len().cmp(&cb.len())
}

/// RFC 4180 CSV: a header row of labels (after an empty corner), then one
/// row per model, led by its path so that equal stems stay apart.
fn to_csv(labels: &[String], rows: &[String], m: &nalgebra::DMatrix<f64>) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::from("model");
    for l in labels {
        out.push(',');
        out.push_str(&field(l));
    }
    out.push('\n');
    for (i, row) in rows.iter().enumerate().take(m.nrows()) {
        out.push_str(&field(row));
        for j in 0..m.ncols() {
            out.push_str(&format!(",{}", m[(i, j)]));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
