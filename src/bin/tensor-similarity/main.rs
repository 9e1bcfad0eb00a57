//! `tensor-similarity`: compare model files from the shell (SPEC §6).
//!
//! ```text
//! tensor-similarity compare A B [--metric tensor|gaussian|weight] [--residual-scale S] [--json]
//! tensor-similarity matrix FILE... [--metric …] [-o out.csv] [--plot out.png]
//! tensor-similarity inspect FILE [--json]
//! ```
//!
//! A thin layer over the library: [`tensor_similarity::io`] reads the
//! files, [`Metric`] picks the similarity, [`tensor_similarity::matrix`]
//! runs the pairs in parallel. Errors print one line on stderr and exit 1.

mod inspect;
mod metric;
mod plot;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rayon::prelude::*;
use tensor_similarity::Model;
use tensor_similarity::io::{self, LoadOptions};

use metric::Metric;

/// Exact, symmetry-invariant similarity of tensor-based networks
/// (bilinear MLPs, linear layers) stored as safetensors files.
#[derive(Debug, Parser)]
#[command(name = "tensor-similarity", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that load models.
#[derive(Debug, clap::Args)]
struct Loading {
    /// Residual scale s of every bilinear block, for files without
    /// tensor_similarity metadata (default 1: no residual).
    #[arg(long, value_name = "S")]
    residual_scale: Option<f64>,
}

impl Loading {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            residual_scale: self.residual_scale,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the similarity of two models.
    Compare {
        /// The first model (.safetensors).
        a: PathBuf,
        /// The second model (.safetensors).
        b: PathBuf,
        /// The similarity to compute.
        #[arg(long, value_enum, default_value_t = Metric::Tensor)]
        metric: Metric,
        #[command(flatten)]
        loading: Loading,
        /// Print a JSON object instead of the bare number.
        #[arg(long)]
        json: bool,
    },
    /// Write the N×N similarity matrix of several models as CSV.
    Matrix {
        /// The models (.safetensors); the CSV header holds their file stems.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The similarity to compute.
        #[arg(long, value_enum, default_value_t = Metric::Tensor)]
        metric: Metric,
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
        /// The model (.safetensors).
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
            loading,
            json,
        } => {
            let options = loading.options();
            let (ma, mb) = (load(&a, &options)?, load(&b, &options)?);
            let sim = metric.compare(&ma, &mb).map_err(|e| e.to_string())?;
            let text = if json {
                let mut value = serde_json::json!({
                    "a": a.display().to_string(),
                    "b": b.display().to_string(),
                    "metric": metric.name(),
                    "similarity": sim,
                });
                if let Some(exact) = metric.exact(&ma, &mb) {
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
            files,
            metric,
            loading,
            output,
            plot,
        } => {
            let options = loading.options();
            let models = files
                .par_iter()
                .map(|f| load(f, &options))
                .collect::<Result<Vec<_>, _>>()?;
            let n = models.len();
            let bar = indicatif::ProgressBar::new((n * n.saturating_sub(1) / 2) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} pairs (eta {eta})",
                )
                .map_err(|e| e.to_string())?,
            );
            let matrix = metric.matrix(&models, || bar.inc(1));
            bar.finish_and_clear();
            let matrix = matrix.map_err(|e| e.to_string())?;
            let labels: Vec<String> = files.iter().map(|f| stem(f)).collect();
            let csv = to_csv(&labels, &matrix);
            match &output {
                Some(path) => {
                    std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => std::io::stdout()
                    .write_all(csv.as_bytes())
                    .map_err(|e| e.to_string())?,
            }
            if let Some(path) = &plot {
                plot::heatmap(path, &labels, &matrix, metric.name())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        }
        Command::Inspect {
            file,
            loading,
            json,
        } => {
            let opened = io::open(&file, &loading.options()).map_err(|e| e.to_string())?;
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

fn load(path: &Path, options: &LoadOptions) -> Result<Model<f64>, String> {
    io::load_with(path, options).map_err(|e| e.to_string())
}

/// The file name without its last extension, for CSV headers and labels.
fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// RFC 4180 CSV: a header row of labels, then one row per model.
fn to_csv(labels: &[String], m: &nalgebra::DMatrix<f64>) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = labels
        .iter()
        .map(|l| field(l))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for i in 0..m.nrows() {
        let row: Vec<String> = (0..m.ncols()).map(|j| format!("{}", m[(i, j)])).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
