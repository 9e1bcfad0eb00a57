//! `tensor-similarity`: compare model files from the shell (SPEC §6).
//!
//! ```text
//! tensor-similarity compare A B [--metric tensor|gaussian|gaussian-closure|gaussian-mc|weight] [--samples N] [--seed S] [--context N] [--outputs LIST] [--json] [loading options]
//! tensor-similarity matrix FILE... [--metric …] [--samples N] [--seed S] [--context N] [--outputs LIST] [--outputs-each] [-o out.csv] [--plot out.png] [--keep-order]
//! tensor-similarity difference A1 A0 B1 B0 [--metric tensor|gaussian|gaussian-closure|gaussian-mc] [--samples N] [--seed S] [--context N] [--outputs LIST] [--json] [loading options]
//! tensor-similarity inspect FILE [--json] [loading options]
//! ```
//!
//! `--metric gaussian` is exact where it can be computed and otherwise the
//! Gaussian closure, `gaussian-closure` the closure by name; whenever a
//! value is a closure, one line on stderr says so,
//! `Gaussian closure (approximate); --metric gaussian-mc for an unbiased
//! estimate`, and `matrix` writes it in its CSV's corner cell.
//! `--metric gaussian-mc` is the Monte Carlo estimate from `--samples N`
//! draws (default 10000) of seed `--seed S` (default 0), the same on any
//! number of threads: `compare` prints `similarity ± standard error`
//! (`"standard_error"` in `--json`), `matrix -o FILE.csv` writes the
//! standard errors to `FILE-se.csv` and notes the largest in the corner
//! cell.
//!
//! `--outputs LIST` compares only those outputs (SPEC §2's selection `Q`:
//! 0-based indices and inclusive ranges, `9`, `3,9`, `0-4,9`);
//! `matrix --outputs-each -o FILE.csv` writes one matrix per output,
//! `FILE_0.csv`, `FILE_1.csv`, …; `difference` is the cosine of the
//! directions `A1 − A0` and `B1 − B0`.
//!
//! Loading options, for files without metadata: `--residual-scale S`,
//! `--skip R`, `--config FILE`, `--heads H`, `--mask causal|none|diag`, `--attn-scale A`,
//! `--rope-base B`.
//!
//! A thin layer over the library: [`tensor_similarity::io`] reads the
//! files (safetensors or PyTorch), [`Metric`] picks the similarity,
//! [`tensor_similarity::matrix`] runs the pairs in parallel. Errors print
//! one line on stderr and exit 1, naming options as flags
//! ([`Spelling::CommandLine`]); arguments that clap cannot check alone
//! (`--outputs` with `--metric weight`, `difference` without four models)
//! print one line and exit 2, as clap's usage errors do.

mod differ;
mod inspect;
mod metric;
mod plot;
mod selection;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rayon::prelude::*;
use tensor_similarity::io::{self, ConfigSource, LoadOptions};
use tensor_similarity::{Error, Mask, MemoryLimit, Model, Real, Side, Spelling};

use metric::{CLOSURE_NOTE, InnerMetric, Metric, Part, Sampling, Settings, Values};
use selection::OutputList;

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
    /// Residual scale of every bilinear block, for files without
    /// tensor_similarity metadata: alone, the research lerp s (α = s,
    /// r = 1 − s); with --skip, the output scale α (default 1). The one α
    /// of the research Transformer layout.
    #[arg(long, value_name = "S")]
    residual_scale: Option<f64>,
    /// Skip weight r of every bilinear block, for files without metadata:
    /// y = α·D(Lx ∘ Rx) + r·x; 1 is the usual additive residual
    /// x + D(Lx ∘ Rx) (default: no residual, stated by inspect).
    #[arg(long, value_name = "R")]
    skip: Option<f64>,
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
    /// Rotary base of the attention-only LM layout's attention, where no
    /// config gives rope_base (default 10000). Not read for the research
    /// Transformer, whose rotary base is fixed at 10000.
    #[arg(long, value_name = "B")]
    rope_base: Option<f64>,
    /// Read the attention-only LM without its normalisations (every one
    /// taken as the identity, as the research code's ignore_norms=True):
    /// for models whose norms depend on their input (rmsnorm, layernorm,
    /// …), refused otherwise. The similarity is then that of other
    /// functions, and every output says so.
    #[arg(long)]
    ignore_norms: bool,
}

/// The Monte Carlo options, read by `--metric gaussian-mc` only (given with
/// another metric, they are refused: they would change nothing).
#[derive(Debug, clap::Args)]
struct MonteCarloArgs {
    /// The number of Monte Carlo samples for --metric gaussian-mc: draws of
    /// x ~ N(0, I), each a sequence of --context positions for sequence
    /// models (at least 4) [default: 10000].
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// The seed of the Monte Carlo draws for --metric gaussian-mc: the same
    /// seed gives the same estimate on any number of threads [default: 0].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
}

impl MonteCarloArgs {
    fn sampling(&self) -> Sampling {
        let default = Sampling::default();
        Sampling {
            samples: self.samples.unwrap_or(default.samples),
            seed: self.seed.unwrap_or(default.seed),
        }
    }

    /// Exits with status 2 where the options cannot work with `metric`.
    fn check(&self, metric: Metric) {
        let given = match (self.samples, self.seed) {
            (Some(_), _) => Some("--samples"),
            (None, Some(_)) => Some("--seed"),
            (None, None) => None,
        };
        if let Some(flag) = given
            && metric != Metric::GaussianMc
        {
            argument_error(&format!(
                "{flag} with --metric {}: the Monte Carlo options apply to --metric gaussian-mc \
                 only",
                metric.name()
            ));
        }
        if let Some(n) = self.samples
            && n < 4
        {
            argument_error(&format!(
                "--samples {n}: a Monte Carlo standard error needs at least 4 samples (two \
                 batches of two)"
            ));
        }
    }
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
            skip: self.skip,
            config: self.config.clone().map(ConfigSource::File),
            heads: self.heads,
            mask: self.mask.map(|m| match m {
                MaskArg::Causal => Mask::Causal,
                MaskArg::None => Mask::None,
                MaskArg::Diag => Mask::Diagonal,
            }),
            attn_scale: self.attn_scale,
            rope_base: self.rope_base,
            ignore_norms: self.ignore_norms,
        }
    }
}

/// A library error as the command line reports it: its options named as
/// flags (`--heads`, `--context N`).
fn message(e: &Error) -> String {
    e.spelled(Spelling::CommandLine).to_string()
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
        #[command(flatten)]
        monte_carlo: MonteCarloArgs,
        /// Positions compared, for sequence models (required for them).
        #[arg(long, value_name = "N")]
        context: Option<usize>,
        /// Compare only these outputs (SPEC §2's selection Q, e.g. one
        /// class's logit): 0-based indices and inclusive ranges,
        /// comma-separated: 9, 3,9, 0-4,9. Tensor and gaussian metrics.
        #[arg(long, value_name = "LIST", value_parser = OutputList::parse)]
        outputs: Option<OutputList>,
        /// The precision the models are computed in.
        #[arg(long, value_enum, default_value_t = Precision::F64)]
        precision: Precision,
        /// The most memory the comparison may use (bytes, or with a suffix:
        /// 512M, 16G, 1.5T in powers of 1000; Ki, Mi, Gi, Ti in powers of
        /// 1024); default: what the machine has. A comparison whose
        /// estimated peak exceeds it is refused before it starts.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<u64>,
        /// The most multiply–adds the tensor metric may take (default
        /// 1e15: hours on a workstation). Attention's work grows as n⁴ with
        /// --context; a comparison whose estimate exceeds the limit is
        /// refused before it starts, naming the largest context within it.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_WORK, value_parser = parse_work)]
        max_work: f64,
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
        /// At least one (none given is an error, as is a shell pattern that
        /// matched no file).
        #[arg(value_name = "FILES")]
        files: Vec<PathBuf>,
        /// The similarity to compute.
        #[arg(long, value_enum, default_value_t = Metric::Tensor)]
        metric: Metric,
        #[command(flatten)]
        monte_carlo: MonteCarloArgs,
        /// Positions compared, for sequence models (required for them).
        #[arg(long, value_name = "N")]
        context: Option<usize>,
        /// Compare only these outputs (SPEC §2's selection Q, e.g. one
        /// class's logit): 0-based indices and inclusive ranges,
        /// comma-separated: 9, 3,9, 0-4,9. Tensor and gaussian metrics.
        #[arg(long, value_name = "LIST", value_parser = OutputList::parse)]
        outputs: Option<OutputList>,
        /// One matrix per output, written to -o FILE.csv as FILE_0.csv,
        /// FILE_1.csv, … (the suffix is the output index; --plot P.png
        /// likewise): every output of the models, or those of --outputs.
        /// Needs -o.
        #[arg(long)]
        outputs_each: bool,
        /// Keep the files in the order given instead of natural order.
        #[arg(long)]
        keep_order: bool,
        /// The matrix of one head path across the models (SPEC §9): the
        /// attention block's chain index and the head, e.g. 1:0. Tensor
        /// metric.
        #[arg(long, value_name = "BLOCK:H", value_parser = parse_head, conflicts_with_all = ["family", "outputs", "outputs_each"])]
        head: Option<(usize, usize)>,
        /// The matrix of one path family across the models (SPEC §9): the
        /// chain indices of the splitting blocks whose active part is on
        /// the path, e.g. 1,2 (none: the direct path). Tensor metric.
        #[arg(long, value_name = "S", value_parser = parse_family, conflicts_with_all = ["outputs", "outputs_each"])]
        family: Option<FamilyArg>,
        /// Which head became which (SPEC §9): for each attention block, the
        /// matrix of the mean cosine of the best one-to-one matching of
        /// every pair's head paths, and (FILE_block{i}_matching.csv, or
        /// after it on stdout) the matchings; -o FILE.csv is written as
        /// FILE_block{i}.csv, --plot P.png as P_block{i}.png. Tensor
        /// metric.
        #[arg(long, conflicts_with_all = ["head", "family", "outputs", "outputs_each"])]
        head_matching: bool,
        /// The precision the models are computed in.
        #[arg(long, value_enum, default_value_t = Precision::F64)]
        precision: Precision,
        /// The most memory one pair may use (as for `compare`).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<u64>,
        /// The most multiply–adds the tensor metric may take (default
        /// 1e15: hours on a workstation). Attention's work grows as n⁴ with
        /// --context; a comparison whose estimate exceeds the limit is
        /// refused before it starts, naming the largest context within it.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_WORK, value_parser = parse_work)]
        max_work: f64,
        #[command(flatten)]
        loading: Loading,
        /// Write the CSV here instead of to stdout.
        #[arg(short, long, value_name = "CSV")]
        output: Option<PathBuf>,
        /// Also draw the matrix as a heatmap PNG.
        #[arg(long, value_name = "PNG")]
        plot: Option<PathBuf>,
    },
    /// Print the cosine of the directions A1 − A0 and B1 − B0 (two
    /// fine-tunes of one base, two stretches of training runs), from
    /// bilinearity: ⟨A1−A0, B1−B0⟩ = ⟨A1,B1⟩ − ⟨A1,B0⟩ − ⟨A0,B1⟩ + ⟨A0,B0⟩.
    Difference {
        /// The four models, in the order A1 A0 B1 B0: each direction's end,
        /// then its start.
        #[arg(value_name = "A1 A0 B1 B0")]
        files: Vec<PathBuf>,
        /// The similarity, an inner product's cosine.
        #[arg(long, value_enum, default_value_t = InnerMetric::Tensor)]
        metric: InnerMetric,
        #[command(flatten)]
        monte_carlo: MonteCarloArgs,
        /// Positions compared, for sequence models (required for them).
        #[arg(long, value_name = "N")]
        context: Option<usize>,
        /// Compare only these outputs (SPEC §2's selection Q, e.g. one
        /// class's logit): 0-based indices and inclusive ranges,
        /// comma-separated: 9, 3,9, 0-4,9. Tensor and gaussian metrics.
        #[arg(long, value_name = "LIST", value_parser = OutputList::parse)]
        outputs: Option<OutputList>,
        /// The precision the models are computed in.
        #[arg(long, value_enum, default_value_t = Precision::F64)]
        precision: Precision,
        /// The most memory one inner product may use (as for `compare`).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<u64>,
        /// The most multiply–adds the tensor metric may take (default
        /// 1e15: hours on a workstation). Attention's work grows as n⁴ with
        /// --context; a comparison whose estimate exceeds the limit is
        /// refused before it starts, naming the largest context within it.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_WORK, value_parser = parse_work)]
        max_work: f64,
        #[command(flatten)]
        loading: Loading,
        /// Print a JSON object instead of the bare number.
        #[arg(long)]
        json: bool,
    },
    /// Where two models differ, head by head (SPEC §9): for each attention
    /// block, the tensor similarities of A's head paths with B's (the model
    /// with only that head at that block, and only the skip terms after it).
    Heads {
        #[command(flatten)]
        pair: Differ,
    },
    /// Where two models differ, path family by path family (SPEC §9): the
    /// tensor similarities and inner products of every pair of families (a
    /// family: the blocks with a skip term whose active part is on the
    /// path), which sum to ⟨A, B⟩.
    Paths {
        #[command(flatten)]
        pair: Differ,
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

/// The arguments of `heads` and `paths` (the tensor metric).
#[derive(Debug, clap::Args)]
struct Differ {
    /// The first model (.safetensors, or a PyTorch .pt/.pth/.bin).
    a: PathBuf,
    /// The second model.
    b: PathBuf,
    /// The metric: tensor, or for `heads` gaussian (exact at the first
    /// attention block, a closure elsewhere, and said).
    #[arg(long, value_enum, default_value_t = DifferMetric::Tensor)]
    metric: DifferMetric,
    /// Positions compared, for sequence models (required for them).
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// The precision the models are computed in.
    #[arg(long, value_enum, default_value_t = Precision::F64)]
    precision: Precision,
    /// The most memory one inner product may use (as for `compare`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// The most multiply–adds the comparison may take (as for `compare`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_WORK, value_parser = parse_work)]
    max_work: f64,
    #[command(flatten)]
    loading: Loading,
    /// Print a JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also draw the cosines as a PNG heatmap (`heads`: one panel per
    /// attention block).
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
}

/// The metrics of `heads` and `paths`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DifferMetric {
    Tensor,
    Gaussian,
}

/// Why a command stopped: an error to report, or a reader that closed
/// standard output (`head`, a pager quit early), which command-line tools
/// answer silently with exit status 141 (128 + SIGPIPE).
enum Failure {
    Error(String),
    ClosedPipe,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Error(message)
    }
}

/// The longest error line printed; longer ones are cut, with a count.
const MAX_ERROR_CHARS: usize = 400;

fn main() -> ExitCode {
    let cli = Cli::parse();
    keep_freed_memory(&cli.command);
    check_arguments(&cli.command);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::ClosedPipe) => ExitCode::from(141),
        Err(Failure::Error(message)) => {
            // A failing stderr has nowhere left to report to.
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&message));
            ExitCode::FAILURE
        }
    }
}

/// glibc gives the freed top of each thread's heap back to the system at
/// once (past 128 KiB, or the dynamic threshold), so that every attention
/// step faults in its per-position-pair tables again, page by zeroed page:
/// 10–25 % of a short comparison's time went to the kernel. The process
/// keeps up to 1 GiB of freed memory for the next step instead.
///
/// The tensor metric also runs in one arena: the tables a step's worker
/// threads allocate (hundreds of MB at context 4 of a `d = 256` LM) come
/// from their own arenas, whose heaps glibc unmaps whole once free, past
/// any trim threshold, so the next step faulted them in again (one arena:
/// 2.03–2.28 s → 1.83–2.03 s there, system time 0.47 → 0.18 s; a 5-model
/// matrix 10.7 → 9.5 s). The Gaussian metric's many small allocations
/// contend on one arena's lock (6.4–6.6 s → 7.0–8.0 s), so it keeps one
/// per thread. (A library cannot set this for its caller's process; the
/// command line is its own.)
fn keep_freed_memory(command: &Command) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tensor = matches!(
            command,
            Command::Compare {
                metric: Metric::Tensor,
                ..
            } | Command::Matrix {
                metric: Metric::Tensor,
                ..
            } | Command::Difference {
                metric: InnerMetric::Tensor,
                ..
            } | Command::Heads { .. }
                | Command::Paths { .. }
        );
        // SAFETY: mallopt only sets allocator parameters; called before
        // any thread exists.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            if tensor {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = command;
}

/// Checks what clap cannot about the arguments alone, before any file is
/// read: exits with status 2 where they cannot work.
fn check_arguments(command: &Command) {
    match command {
        Command::Matrix {
            files,
            metric,
            monte_carlo,
            outputs,
            outputs_each,
            output,
            ..
        } => {
            monte_carlo.check(*metric);
            if files.is_empty() {
                usage_error(
                    "matrix",
                    "no models given: matrix needs at least one model file (a shell pattern that \
                     matched no file expands to nothing under nullglob)",
                );
            }
            if (outputs.is_some() || *outputs_each) && !metric.takes_outputs() {
                let flag = if *outputs_each {
                    "--outputs-each"
                } else {
                    "--outputs"
                };
                let name = metric.name();
                argument_error(&format!(
                    "{flag} with --metric {name}: the {name} metric compares parameters, not \
                     outputs (use --metric tensor or gaussian)"
                ));
            }
            if *outputs_each && output.is_none() {
                argument_error(
                    "--outputs-each writes one CSV per output and needs -o FILE.csv (written as \
                     FILE_0.csv, FILE_1.csv, …, suffixed by the output index)",
                );
            }
        }
        Command::Compare {
            metric,
            monte_carlo,
            outputs,
            ..
        } => {
            monte_carlo.check(*metric);
            if outputs.is_some() && !metric.takes_outputs() {
                argument_error(&format!(
                    "--outputs with --metric {0}: the {0} metric compares parameters, not \
                     outputs (use --metric tensor or gaussian)",
                    metric.name()
                ));
            }
        }
        Command::Difference {
            files,
            metric,
            monte_carlo,
            ..
        } => {
            monte_carlo.check(Metric::from(*metric));
            if files.len() != 4 {
                argument_error(&format!(
                    "difference takes four models, A1 A0 B1 B0 (the directions A1 − A0 and \
                     B1 − B0); {} given",
                    files.len()
                ));
            }
        }
        Command::Paths { pair } if pair.metric == DifferMetric::Gaussian => argument_error(
            "paths --metric gaussian: path families are the tensor metric's (SPEC §9); heads \
             takes --metric gaussian",
        ),
        Command::Heads { .. } | Command::Paths { .. } | Command::Inspect { .. } => {}
    }
}

/// Exits with status 2 (bad arguments) after one line on stderr, for
/// combinations of arguments clap cannot check and that a one-line reason
/// says best.
fn argument_error(message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "error: {}", one_line(message));
    std::process::exit(2)
}

/// Exits with clap's usage error (status 2, the subcommand's usage) for
/// arguments clap itself cannot check.
fn usage_error(subcommand: &str, message: &str) -> ! {
    let mut cli = <Cli as clap::CommandFactory>::command();
    cli.build();
    let kind = clap::error::ErrorKind::MissingRequiredArgument;
    match cli.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(kind, message).exit(),
        None => cli.error(kind, message).exit(),
    }
}

/// The message on one line of at most [`MAX_ERROR_CHARS`] characters.
fn one_line(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = line.chars().count();
    if count <= MAX_ERROR_CHARS {
        return line;
    }
    let cut: String = line.chars().take(MAX_ERROR_CHARS).collect();
    format!("{cut}… ({} more characters)", count - MAX_ERROR_CHARS)
}

/// Writes `text` to standard output, reporting a failure (a full disk, a
/// closed pipe) instead of panicking as `print!` does.
fn print_out(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::ClosedPipe,
            _ => Failure::Error(format!("cannot write to standard output: {e}")),
        })
}

/// A memory size: bytes, or a number with a suffix (`k`, `M`, `G`, `T`
/// in powers of 1000; `Ki`, `Mi`, `Gi`, `Ti` in powers of 1024; an optional
/// trailing `B`).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix('B').unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => {
            return Err(format!(
                "unknown unit {unit:?} (use k, M, G, T or Ki, Mi, Gi, Ti)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 16G, 512Mi, 1000000)"))?;
    let bytes = value * scale;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is not a size between 1 byte and 16 EB"));
    }
    Ok(bytes as u64)
}

/// `--max-work`'s default: 10¹⁵ multiply–adds, hours at a workstation's
/// rate.
const DEFAULT_MAX_WORK: f64 = 1e15;

/// A `--max-work` value: a positive number of multiply–adds (`2e14`).
fn parse_work(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "{text:?} is not a positive number of multiply–adds (such as 2e14)"
        )),
    }
}

/// `--head BLOCK:H`.
fn parse_head(text: &str) -> Result<(usize, usize), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(b, h)| Some((b.trim().parse().ok()?, h.trim().parse().ok()?)));
    parsed.ok_or_else(|| {
        format!("{text:?} is not BLOCK:H (an attention block's chain index and a head, e.g. 1:0)")
    })
}

/// `--family S`: the chain indices (one value, not a list of arguments).
#[derive(Clone, Debug)]
struct FamilyArg(Vec<usize>);

/// `--family S`: chain indices, comma-separated; empty or `none` for the
/// direct path.
fn parse_family(text: &str) -> Result<FamilyArg, String> {
    let text = text.trim();
    if text.is_empty() || text == "none" || text == "∅" {
        return Ok(FamilyArg(Vec::new()));
    }
    text.split(',')
        .map(|k| {
            k.trim().parse().map_err(|_| {
                format!(
                    "{text:?} is not a family: chain indices, comma-separated (e.g. 1,2), or none"
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(FamilyArg)
}

/// The library's memory limit from `--max-memory`.
fn memory_limit(max_memory: Option<u64>) -> MemoryLimit {
    max_memory.map_or(MemoryLimit::Machine, MemoryLimit::Bytes)
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Compare {
            a,
            b,
            metric,
            monte_carlo,
            context,
            outputs,
            precision,
            max_memory,
            max_work,
            loading,
            json,
        } => {
            let paths = [a.clone(), b.clone()];
            let sampling = monte_carlo.sampling();
            let found = compared(
                &paths,
                metric,
                Settings {
                    context,
                    limit: memory_limit(max_memory),
                    work: max_work,
                    outputs: None,
                    sampling,
                    part: Part::Whole,
                },
                outputs.as_ref(),
                precision,
                &loading,
            )?;
            let text = if json {
                let value = serde_json::json!({
                    "a": a.display().to_string(),
                    "b": b.display().to_string(),
                    "metric": metric.name(),
                    "similarity": found.similarity,
                });
                found.json(value, context, precision, sampling).to_string()
            } else {
                found.plain()
            };
            print_out(&format!("{text}\n"))
        }
        Command::Difference {
            files,
            metric,
            monte_carlo,
            context,
            outputs,
            precision,
            max_memory,
            max_work,
            loading,
            json,
        } => {
            let metric = Metric::from(metric);
            let sampling = monte_carlo.sampling();
            let found = compared(
                &files,
                metric,
                Settings {
                    context,
                    limit: memory_limit(max_memory),
                    work: max_work,
                    outputs: None,
                    sampling,
                    part: Part::Whole,
                },
                outputs.as_ref(),
                precision,
                &loading,
            )?;
            let text = if json {
                let name = |i: usize| files[i].display().to_string();
                let value = serde_json::json!({
                    "a1": name(0),
                    "a0": name(1),
                    "b1": name(2),
                    "b0": name(3),
                    "metric": metric.name(),
                    "similarity": found.similarity,
                });
                found.json(value, context, precision, sampling).to_string()
            } else {
                found.plain()
            };
            print_out(&format!("{text}\n"))
        }
        Command::Matrix {
            mut files,
            metric,
            monte_carlo,
            context,
            outputs,
            outputs_each,
            keep_order,
            head,
            family,
            head_matching,
            precision,
            max_memory,
            max_work,
            loading,
            output,
            plot,
        } => {
            if !keep_order {
                files.sort_by(|x, y| natural_order(&x.to_string_lossy(), &y.to_string_lossy()));
            }
            if head_matching {
                if metric != Metric::Tensor {
                    argument_error(&format!(
                        "matrix --head-matching with --metric {}: head paths are the tensor metric's \
                         (SPEC §9)",
                        metric.name()
                    ));
                }
                let job = HeadsJob {
                    files: &files,
                    context,
                    limit: memory_limit(max_memory),
                    work: max_work,
                    options: loading.options(),
                    config: loading.config.as_deref(),
                    csv: output.as_deref(),
                    plot: plot.as_deref(),
                };
                return match precision {
                    Precision::F64 => head_matching_in::<f64>(&job),
                    Precision::F32 => head_matching_in::<f32>(&job),
                };
            }
            let job = MatrixJob {
                files: &files,
                metric,
                sampling: monte_carlo.sampling(),
                context,
                outputs: outputs.as_ref(),
                each: outputs_each,
                part: match (&head, &family) {
                    (Some((block, h)), _) => Part::Head(*block, *h),
                    (None, Some(family)) => Part::Family(&family.0),
                    (None, None) => Part::Whole,
                },
                precision,
                limit: memory_limit(max_memory),
                work: max_work,
                options: loading.options(),
                config: loading.config.as_deref(),
                csv: output.as_deref(),
                plot: plot.as_deref(),
            };
            match precision {
                Precision::F64 => matrix_in::<f64>(&job),
                Precision::F32 => matrix_in::<f32>(&job),
            }
        }
        Command::Heads { pair } => differ(&pair, true),
        Command::Paths { pair } => differ(&pair, false),
        Command::Inspect {
            file,
            loading,
            json,
        } => {
            unmatched_pattern(&file)?;
            let opened = io::open(&file, &loading.options()).map_err(|e| message(&e))?;
            check_options_used(std::iter::once(&opened))?;
            let text = if json {
                inspect::json(&file, &opened)
            } else {
                inspect::table(&file, &opened)
            };
            print_out(&text)
        }
    }
}

/// `matrix --head-matching`: what to read and write.
struct HeadsJob<'a> {
    files: &'a [PathBuf],
    context: Option<usize>,
    limit: MemoryLimit,
    work: f64,
    options: LoadOptions,
    config: Option<&'a Path>,
    csv: Option<&'a Path>,
    plot: Option<&'a Path>,
}

/// `path` with `_block{block}` (and `tail`) before its extension.
fn block_suffixed(path: &Path, block: usize, tail: &str) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(format!("_block{block}{tail}"));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// `matrix --head-matching`, computed in `T`: for each attention block, the mean
/// cosine of each pair's best head matching, and the matchings.
fn head_matching_in<T: Real>(job: &HeadsJob) -> Result<(), Failure> {
    let inputs: Vec<&Path> = job
        .files
        .iter()
        .map(PathBuf::as_path)
        .chain(job.config)
        .collect();
    let loaded = load_files::<T>(job.files, &job.options)?;
    let without_norms = norms_notice(job.files, &loaded);
    check_context(job.context, job.files.iter().zip(&loaded))?;
    let models: Vec<Model<T>> = loaded.into_iter().map(|f| f.model).collect();
    let blocks: Vec<usize> = match models.first() {
        Some(m) => (0..m.depth())
            .filter(|&k| m.blocks()[k].kind() == "attention")
            .collect(),
        None => Vec::new(),
    };
    let mut claimed = Outputs::default();
    let targets: Vec<PathBuf> = blocks
        .iter()
        .flat_map(|&b| {
            job.csv
                .iter()
                .flat_map(move |p| [block_suffixed(p, b, ""), block_suffixed(p, b, "_matching")])
                .chain(job.plot.iter().map(move |p| block_suffixed(p, b, "")))
        })
        .collect();
    claim_outputs(&mut claimed, &targets, &inputs)?;
    let mut metric = tensor_similarity::TensorSimilarity::new()
        .with_max_memory(job.limit)
        .with_max_work(job.work);
    if let Some(n) = job.context {
        metric = metric.with_context(n).map_err(|e| message(&e))?;
    }
    let n = models.len();
    let bar = indicatif::ProgressBar::new((n * n.saturating_sub(1) / 2) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} pairs (eta {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    let found = metric.head_matching(&models, || bar.inc(1));
    bar.finish_and_clear();
    let found = found.map_err(|e| message(&e))?;
    let labels: Vec<String> = job.files.iter().map(|f| stem(f)).collect();
    let rows: Vec<String> = job.files.iter().map(|f| f.display().to_string()).collect();
    let norms_note = if without_norms {
        "; without norms: --ignore-norms"
    } else {
        ""
    };
    let mut stdout = String::new();
    for f in &found {
        let corner = format!(
            "model (head matching at block {}: mean cosine of the best head matching{norms_note})",
            f.block
        );
        let csv = to_csv(&corner, &labels, &rows, &f.mean);
        // The matchings: for the row's model's heads in order, the heads
        // of the column's model they are matched with (- for none).
        let mut matching = format!(
            "model (head matching at block {}: the column's head matched with each head of the row's \
             model)",
            f.block
        );
        for l in &labels {
            matching.push(',');
            matching.push_str(l);
        }
        matching.push('\n');
        for (i, row) in rows.iter().enumerate() {
            matching.push_str(row);
            for j in 0..n {
                let cell: Vec<String> = f.matching[i][j]
                    .iter()
                    .map(|h| h.map_or("-".to_owned(), |h| h.to_string()))
                    .collect();
                matching.push(',');
                matching.push_str(&cell.join(" "));
            }
            matching.push('\n');
        }
        match job.csv {
            Some(path) => {
                claimed.write(&block_suffixed(path, f.block, ""), csv.as_bytes())?;
                claimed.write(
                    &block_suffixed(path, f.block, "_matching"),
                    matching.as_bytes(),
                )?;
            }
            None => {
                stdout.push_str(&csv);
                stdout.push('\n');
                stdout.push_str(&matching);
                stdout.push('\n');
            }
        }
        if let Some(path) = job.plot {
            let title = format!(
                "{}, head matching at block {}",
                plot::title("tensor", job.context, None, None),
                f.block
            );
            claimed.write_with(&block_suffixed(path, f.block, ""), |temporary| {
                plot::heatmap(temporary, &labels, &f.mean, &title)
            })?;
        }
    }
    if stdout.is_empty() {
        Ok(())
    } else {
        print_out(stdout.trim_end_matches('\n'))?;
        print_out("\n")
    }
}

/// What `heads` or `paths` found.
enum Found {
    Heads(Vec<tensor_similarity::HeadPaths>),
    Paths(tensor_similarity::PathFamilies),
}

/// `heads` (`by_head`) or `paths`: loads the pair, computes with the
/// tensor metric, prints, and plots with `--plot`.
fn differ(pair: &Differ, by_head: bool) -> Result<(), Failure> {
    let paths = [pair.a.clone(), pair.b.clone()];
    let mut claimed = Outputs::default();
    if let Some(plot) = &pair.plot {
        claim_outputs(
            &mut claimed,
            std::slice::from_ref(plot),
            &[&pair.a, &pair.b],
        )?;
    }
    let found = match pair.precision {
        Precision::F64 => differ_in::<f64>(pair, &paths, by_head)?,
        Precision::F32 => differ_in::<f32>(pair, &paths, by_head)?,
    };
    let (a, b) = (pair.a.display().to_string(), pair.b.display().to_string());
    if let Found::Heads(h) = &found
        && h.iter().any(|p| !p.exact)
    {
        eprintln!("{CLOSURE_NOTE} (the head paths of a block marked exact: false)");
    }
    let metric_name = match pair.metric {
        DifferMetric::Tensor => "tensor",
        DifferMetric::Gaussian => "gaussian",
    };
    let text = match (&found, pair.json) {
        (Found::Heads(h), true) => {
            differ::heads_json(&a, &b, metric_name, pair.context, h).to_string() + "\n"
        }
        (Found::Heads(h), false) => differ::heads_text(h),
        (Found::Paths(p), true) => differ::paths_json(&a, &b, pair.context, p).to_string() + "\n",
        (Found::Paths(p), false) => differ::paths_text(p),
    };
    if let Some(path) = &pair.plot {
        let precision = (pair.precision != Precision::F64).then(|| pair.precision.name());
        let what = if by_head {
            "head paths"
        } else {
            "path families"
        };
        let title = format!(
            "{}, {what}",
            plot::title(metric_name, pair.context, None, precision)
        );
        let panels = match &found {
            Found::Heads(h) => differ::heads_panels(h),
            Found::Paths(p) => vec![differ::paths_panel(p)],
        };
        claimed.write_with(path, |temporary| plot::panels(temporary, &panels, &title))?;
    }
    print_out(&text)
}

/// [`differ()`]'s models loaded and compared in `T`.
fn differ_in<T: Real>(pair: &Differ, paths: &[PathBuf], by_head: bool) -> Result<Found, String> {
    let files = load_files::<T>(paths, &pair.loading.options())?;
    norms_notice(paths, &files);
    check_context(pair.context, paths.iter().zip(&files))?;
    let mut metric = tensor_similarity::TensorSimilarity::new()
        .with_max_memory(memory_limit(pair.max_memory))
        .with_max_work(pair.max_work);
    if let Some(n) = pair.context {
        metric = metric.with_context(n).map_err(|e| message(&e))?;
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .map_err(|e| e.to_string())?,
    );
    spinner.set_message(if by_head {
        "head paths"
    } else {
        "path families"
    });
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let (a, b) = (&files[0].model, &files[1].model);
    let found = match (by_head, pair.metric) {
        (true, DifferMetric::Tensor) => metric.heads(a, b).map(Found::Heads),
        (true, DifferMetric::Gaussian) => {
            let mut gaussian = tensor_similarity::GaussianSimilarity::new()
                .with_max_memory(memory_limit(pair.max_memory));
            if let Some(n) = pair.context {
                gaussian = gaussian.with_context(n).map_err(|e| message(&e))?;
            }
            gaussian.heads(a, b).map(Found::Heads)
        }
        (false, _) => metric.paths(a, b).map(Found::Paths),
    };
    spinner.finish_and_clear();
    found.map_err(|e| message(&e))
}

/// What `compare` and `difference` found.
struct Compared {
    /// The similarity (of the two models, or of the two directions).
    similarity: f64,
    /// Its standard error, for a Monte Carlo estimate.
    standard_error: Option<f64>,
    /// Whether it is exact, for the metrics that can be approximate: every
    /// inner product it combines is.
    exact: Option<bool>,
    /// Whether a model was read without its norms (`--ignore-norms`).
    without_norms: bool,
    /// The outputs compared (`--outputs`), as indices.
    outputs: Option<Vec<usize>>,
}

impl Compared {
    /// The plain output: the similarity as the shortest string that parses
    /// back to the same `f64`, and `± standard error` for an estimate.
    fn plain(&self) -> String {
        match self.standard_error {
            Some(se) => format!("{} ± {se}", self.similarity),
            None => format!("{}", self.similarity),
        }
    }

    /// `value` (a JSON object naming the models, the metric and the
    /// similarity) with what else the comparison says, each only where it
    /// applies: the standard error with the samples and seed of an
    /// estimate, the context, the outputs, the precision when not `f64`,
    /// exactness, and that norms were removed.
    fn json(
        &self,
        mut value: serde_json::Value,
        context: Option<usize>,
        precision: Precision,
        sampling: Sampling,
    ) -> serde_json::Value {
        if let Some(se) = self.standard_error {
            value["standard_error"] = se.into();
            value["samples"] = sampling.samples.into();
            value["seed"] = sampling.seed.into();
        }
        if let Some(n) = context {
            value["context"] = n.into();
        }
        if let Some(outputs) = &self.outputs {
            value["outputs"] = outputs.clone().into();
        }
        if precision != Precision::F64 {
            value["precision"] = precision.name().into();
        }
        if let Some(exact) = self.exact {
            value["exact"] = exact.into();
        }
        if self.without_norms {
            value["norms_removed"] = true.into();
        }
        value
    }
}

/// The similarity of the two models in `paths` (`compare`), or of the
/// directions `A1 − A0` and `B1 − B0` of the four (`difference`, in that
/// order), in the precision asked for.
///
/// `settings` holds the context, memory limit and Monte Carlo draws; its
/// outputs are resolved here from `outputs`, against the models.
fn compared(
    paths: &[PathBuf],
    metric: Metric,
    settings: Settings,
    outputs: Option<&OutputList>,
    precision: Precision,
    loading: &Loading,
) -> Result<Compared, String> {
    let options = loading.options();
    match precision {
        Precision::F64 => compared_in::<f64>(paths, metric, settings, outputs, &options),
        Precision::F32 => compared_in::<f32>(paths, metric, settings, outputs, &options),
    }
}

/// [`compared`], computed in `T`.
fn compared_in<T: Real>(
    paths: &[PathBuf],
    metric: Metric,
    settings: Settings,
    outputs: Option<&OutputList>,
    options: &LoadOptions,
) -> Result<Compared, String> {
    let files = load_files::<T>(paths, options)?;
    let without_norms = norms_notice(paths, &files);
    check_context(settings.context, paths.iter().zip(&files))?;
    let models: Vec<&Model<T>> = files.iter().map(|f| &f.model).collect();
    let outputs = resolve_outputs(outputs, &models)?;
    let settings = Settings {
        outputs: outputs.as_deref(),
        ..settings
    };
    // A spinner with the elapsed time on a terminal's stderr (hidden
    // otherwise), for comparisons that take minutes.
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .map_err(|e| e.to_string())?,
    );
    spinner.set_message(format!("comparing with the {} metric", metric.name()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let sim = match models[..] {
        [a, b] => metric.compare(a, b, &settings).map_err(|e| message(&e)),
        [a1, a0, b1, b0] => metric
            .difference([a1, a0, b1, b0], &settings)
            .map_err(|e| match e {
                // The zero "model" is a direction: say which.
                Error::ZeroNorm(side) => {
                    let (x1, x0) = match side {
                        Side::A => ("A1", "A0"),
                        _ => ("B1", "B0"),
                    };
                    format!(
                        "the direction {x1} − {x0} is zero under this metric (or below rounding \
                         error): {} and {} compute the same function{}, so its cosine with \
                         anything is undefined",
                        paths[if x1 == "A1" { 0 } else { 2 }].display(),
                        paths[if x1 == "A1" { 1 } else { 3 }].display(),
                        if settings.outputs.is_some() {
                            " on these outputs"
                        } else {
                            ""
                        }
                    )
                }
                e => message(&e),
            }),
        _ => unreachable!("compare reads two models, difference four"),
    };
    spinner.finish_and_clear();
    let value = sim?;
    // Exact where every pair of models the value combines is.
    let mut exact = None;
    for (i, a) in models.iter().enumerate() {
        for b in &models[i + 1..] {
            if let Some(e) = metric.exact(a, b) {
                exact = Some(exact.unwrap_or(true) && e);
            }
        }
    }
    if exact == Some(false) {
        eprintln!("{CLOSURE_NOTE}");
    }
    Ok(Compared {
        similarity: value.similarity,
        standard_error: value.standard_error,
        exact,
        without_norms,
        outputs,
    })
}

/// `--outputs` as indices, checked against the models' output width (an
/// error naming the first index that does not exist, and the width); the
/// models' own error first if their widths differ.
fn resolve_outputs<T: Real>(
    outputs: Option<&OutputList>,
    models: &[&Model<T>],
) -> Result<Option<Vec<usize>>, String> {
    let (Some(outputs), Some(first)) = (outputs, models.first()) else {
        return Ok(None);
    };
    for other in &models[1..] {
        first.check_same_io(other).map_err(|e| message(&e))?;
    }
    outputs
        .resolve(first.output_width())
        .map(Some)
        .map_err(|e| message(&e))
}

/// Says on stderr which of `files` were read without their norms
/// (`--ignore-norms`), if any: the similarity is then that of other
/// functions. Whether any was.
fn norms_notice<T: Real>(paths: &[PathBuf], files: &[io::ModelFile<T>]) -> bool {
    let removed: Vec<String> = (paths.iter().zip(files))
        .filter(|(_, f)| f.norms_removed())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if removed.is_empty() {
        return false;
    }
    eprintln!(
        "note: --ignore-norms: {} of {} models read without their norms ({}); the similarity \
         is that of the models without their norms, other functions than the checkpoints'",
        removed.len(),
        files.len(),
        if removed.len() > 3 {
            format!(
                "{}, and {} more",
                removed[..3].join(", "),
                removed.len() - 3
            )
        } else {
            removed.join(", ")
        }
    );
    true
}

/// What `matrix` was asked to do.
struct MatrixJob<'a> {
    /// The models, in the order of the rows.
    files: &'a [PathBuf],
    metric: Metric,
    /// The draws of `gaussian-mc`.
    sampling: Sampling,
    context: Option<usize>,
    /// `--outputs`: the outputs compared, or with `each` those that get a
    /// matrix each.
    outputs: Option<&'a OutputList>,
    /// `--outputs-each`: one matrix per output.
    each: bool,
    /// `--head` or `--family`: the part of the models compared.
    part: Part<'a>,
    precision: Precision,
    limit: MemoryLimit,
    /// The tensor metric's work limit, in multiply–adds.
    work: f64,
    options: LoadOptions,
    /// The run config given, an input too.
    config: Option<&'a Path>,
    /// `-o`: the CSV (with `each`, the name the files are suffixed from).
    csv: Option<&'a Path>,
    /// `--plot`: the heatmap (likewise).
    plot: Option<&'a Path>,
}

/// `matrix`, computed in `T`: the models read once, then one matrix (with
/// `--outputs`, of those outputs) or, with `--outputs-each`, one per output,
/// each written as soon as it is computed, with one progress bar over all.
fn matrix_in<T: Real>(job: &MatrixJob) -> Result<(), Failure> {
    // Outputs never overwrite inputs (a model, or the run config).
    let inputs: Vec<&Path> = job
        .files
        .iter()
        .map(PathBuf::as_path)
        .chain(job.config)
        .collect();
    // With gaussian-mc, the standard errors beside the CSV: FILE-se.csv.
    let errors = job.metric == Metric::GaussianMc;
    let targets = |suffix: Option<usize>| -> Vec<PathBuf> {
        let named = |p: &Path| match suffix {
            Some(i) => suffixed(p, i),
            None => p.to_path_buf(),
        };
        job.csv
            .iter()
            .map(|p| named(p))
            .chain(
                job.csv
                    .iter()
                    .filter(|_| errors)
                    .map(|p| se_path(&named(p))),
            )
            .chain(job.plot.iter().map(|p| named(p)))
            .collect()
    };
    // A full matrix can take hours: learn that an output cannot be written
    // before computing it, not after. The files of --outputs-each are named
    // once the models' outputs are known, after reading them.
    let mut claimed = Outputs::default();
    if job.each {
        for path in job.csv.iter().chain(&job.plot) {
            if path.file_name().is_none() || std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                return Err(format!(
                    "{}: not a file name to suffix with the output index",
                    path.display()
                )
                .into());
            }
        }
    } else {
        claim_outputs(&mut claimed, &targets(None), &inputs)?;
    }
    let loaded = load_files::<T>(job.files, &job.options)?;
    let without_norms = norms_notice(job.files, &loaded);
    check_context(job.context, job.files.iter().zip(&loaded))?;
    let models: Vec<Model<T>> = loaded.into_iter().map(|f| f.model).collect();
    let selection = resolve_outputs(job.outputs, &models.iter().collect::<Vec<_>>())?;
    // Each matrix: the outputs it compares, and the index its files are
    // suffixed with (--outputs-each).
    let matrices: Vec<(Option<Vec<usize>>, Option<usize>)> = if job.each {
        let width = models.first().map_or(0, Model::output_width);
        selection
            .unwrap_or_else(|| (0..width).collect())
            .into_iter()
            .map(|o| (Some(vec![o]), Some(o)))
            .collect()
    } else {
        vec![(selection, None)]
    };
    if job.each {
        let all: Vec<PathBuf> = matrices.iter().flat_map(|(_, i)| targets(*i)).collect();
        claim_outputs(&mut claimed, &all, &inputs)?;
    }
    let labels: Vec<String> = job.files.iter().map(|f| stem(f)).collect();
    let rows: Vec<String> = job.files.iter().map(|f| f.display().to_string()).collect();
    let n = models.len();
    let pairs = n * n.saturating_sub(1) / 2;
    let bar = indicatif::ProgressBar::new((pairs * matrices.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} pairs (eta {eta})",
        )
        .map_err(|e| e.to_string())?,
    );
    // Whether some value is a Gaussian closure (the same for every output:
    // a selection changes no block), said once on stderr.
    let closure =
        (0..n).any(|i| (i..n).any(|j| job.metric.exact(&models[i], &models[j]) == Some(false)));
    let mut said = false;
    for (outputs, suffix) in &matrices {
        let settings = Settings {
            context: job.context,
            limit: job.limit,
            work: job.work,
            outputs: outputs.as_deref(),
            sampling: job.sampling,
            part: job.part,
        };
        let values = job.metric.matrix(&models, &settings, || bar.inc(1));
        if suffix.is_none() {
            bar.finish_and_clear();
        }
        let Values {
            similarity: matrix,
            standard_error,
        } = values.map_err(|e| message(&e))?;
        if closure && !said {
            bar.suspend(|| eprintln!("{CLOSURE_NOTE}"));
            said = true;
        }
        // What was compared, in the corner cell (which holds no comma) and
        // the plot's title.
        let (noted, titled) = match (suffix, job.outputs) {
            (Some(i), _) => (Some(format!("output {i}")), Some(format!("output {i}"))),
            (None, Some(list)) => (
                Some(format!("outputs {}", list.spaced())),
                Some(format!("outputs {}", list.bracketed())),
            ),
            (None, None) => match job.part {
                Part::Whole => (None, None),
                part => (Some(part.to_string()), Some(part.to_string())),
            },
        };
        // A Monte Carlo estimate: its draws and its largest standard error
        // (the whole matrix of them is FILE-se.csv beside -o FILE.csv).
        let estimated = standard_error.as_ref().map(|se| {
            format!(
                "Monte Carlo estimate: {} samples seed {} largest standard error {}",
                job.sampling.samples,
                job.sampling.seed,
                se.max()
            )
        });
        let notes: Vec<&str> = noted
            .as_deref()
            .into_iter()
            .chain(without_norms.then_some("without norms: --ignore-norms"))
            .chain(closure.then_some(CLOSURE_NOTE))
            .chain(estimated.as_deref())
            .collect();
        let corner = match notes.is_empty() {
            true => "model".to_owned(),
            false => format!("model ({})", notes.join("; ")),
        };
        let csv = to_csv(&corner, &labels, &rows, &matrix);
        let [csv_path, plot_path] = [job.csv, job.plot].map(|p| {
            p.map(|p| match suffix {
                Some(i) => suffixed(p, *i),
                None => p.to_path_buf(),
            })
        });
        match &csv_path {
            Some(path) => claimed.write(path, csv.as_bytes())?,
            None => print_out(&csv)?,
        }
        if let (Some(path), Some(se)) = (&csv_path, &standard_error) {
            let corner = format!(
                "model (standard errors of the Monte Carlo similarities in {}: {} samples seed {})",
                path.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
                job.sampling.samples,
                job.sampling.seed
            );
            let corner = corner.replace(',', " ");
            claimed.write(
                &se_path(path),
                to_csv(&corner, &labels, &rows, se).as_bytes(),
            )?;
        }
        if let Some(path) = &plot_path {
            let precision = (job.precision != Precision::F64).then(|| job.precision.name());
            let title = plot::title(job.metric.name(), job.context, titled.as_deref(), precision);
            claimed.write_with(path, |temporary| {
                plot::heatmap(temporary, &labels, &matrix, &title)
            })?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Claims `paths` for writing ([`Outputs::claim`]), refusing any that
/// names an input or another of them.
fn claim_outputs(claimed: &mut Outputs, paths: &[PathBuf], inputs: &[&Path]) -> Result<(), String> {
    for (k, path) in paths.iter().enumerate() {
        if paths[..k].iter().any(|other| same_file(path, other)) {
            return Err(format!(
                "{}: the CSV and the plot would be written to the same file",
                path.display()
            ));
        }
        if let Some(input) = inputs.iter().find(|i| same_file(path, i)) {
            return Err(format!(
                "{}: the output would overwrite the input {}",
                path.display(),
                input.display()
            ));
        }
        claimed.claim(path)?;
    }
    Ok(())
}

/// `FILE.EXT` as `FILE-se.EXT`: where `matrix --metric gaussian-mc -o
/// FILE.EXT` writes the standard errors of its estimates.
fn se_path(path: &Path) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push("-se");
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// `FILE.EXT` as `FILE_i.EXT` (`FILE_i` without an extension): where
/// `--outputs-each` writes output `i`'s matrix.
fn suffixed(path: &Path, index: usize) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(format!("_{index}"));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// The model files in `paths` in `T`, read in parallel; an error if a
/// loading option was given that no file's layout reads (it would change
/// nothing, and the user meant it to).
fn load_files<T: Real>(
    paths: &[PathBuf],
    options: &LoadOptions,
) -> Result<Vec<io::ModelFile<T>>, String> {
    let files = paths
        .par_iter()
        .map(|f| {
            unmatched_pattern(f)?;
            io::open_as::<T>(f, options).map_err(|e| message(&e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_options_used(files.iter())?;
    Ok(files)
}

/// A path that does not exist and holds a shell pattern's characters (`*`,
/// `?`, `[`) is a pattern that matched no file, which the shell passed on
/// as it is: said so, rather than "no such file".
fn unmatched_pattern(path: &Path) -> Result<(), String> {
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[']) && std::fs::symlink_metadata(path).is_err() {
        return Err(format!(
            "{}: the pattern matched no file (the shell passed it on unexpanded)",
            path.display()
        ));
    }
    Ok(())
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
            // Why no layout of these files reads it.
            let why = match *option {
                "rope_base" => {
                    "files with tensor_similarity metadata name every setting; vector layouts \
                     have no attention; the research Transformer's rotary base is fixed at 10000"
                }
                "ignore_norms" => {
                    "only the attention-only LM's layout has norms to remove; files with \
                     tensor_similarity metadata have none"
                }
                _ => {
                    "files with tensor_similarity metadata name every setting; vector layouts \
                     have no attention"
                }
            };
            return Err(format!(
                "{} applies to none of the files: {} ({why})",
                tensor_similarity::LoadOption::from_field(option).map_or_else(
                    || format!("--{}", option.replace('_', "-")),
                    |o| o.flag().to_owned()
                ),
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
///
/// A context beyond a model's native one (`n_ctx` in its config) is
/// compared, since the weights do not depend on it, with a warning.
fn check_context<'a, T: Real>(
    context: Option<usize>,
    files: impl IntoIterator<Item = (&'a PathBuf, &'a io::ModelFile<T>)>,
) -> Result<(), String> {
    if context == Some(0) {
        return Err("--context 0: a sequence has at least one position".into());
    }
    let files: Vec<_> = files.into_iter().collect();
    if let Some(n) = context {
        // One line per native context, not per checkpoint of a run.
        let mut natives: Vec<(usize, &PathBuf, usize)> = Vec::new();
        for (path, file) in &files {
            if let Some(native) = file.native_context.filter(|&native| native < n) {
                match natives.iter_mut().find(|(v, _, _)| *v == native) {
                    Some((_, _, count)) => *count += 1,
                    None => natives.push((native, path, 1)),
                }
            }
        }
        for (native, path, count) in natives {
            let others = match count {
                1 => String::new(),
                _ => format!(" and {} other files", count - 1),
            };
            let _ = writeln!(
                std::io::stderr(),
                "warning: --context {n} is beyond the native context of {}{others} (n_ctx = \
                 {native} in the config): compared all the same, on positions not trained on",
                path.display()
            );
        }
    }
    let models: Vec<(&PathBuf, &Model<T>)> = files.iter().map(|(p, f)| (*p, &f.model)).collect();
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

/// Output files claimed before the work. Each is written to a temporary
/// file beside it, created at once (so a missing folder or a read-only
/// path fails before the work), and renamed over the target only when
/// complete: a failed or interrupted run leaves an existing file as it was.
/// Temporary files never renamed are removed on exit.
#[derive(Default)]
struct Outputs {
    /// (target, temporary file beside it).
    pending: Vec<(PathBuf, PathBuf)>,
}

impl Outputs {
    fn claim(&mut self, path: &Path) -> Result<(), String> {
        let name = path
            .file_name()
            .ok_or_else(|| format!("{}: not a file name to write", path.display()))?;
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{}: is a directory", path.display()));
        }
        // `.NAME.PID.tmp.EXT`: hidden, unique to this process, and with the
        // target's extension (the plot's format follows it).
        let mut temporary = std::ffi::OsString::from(".");
        temporary.push(name);
        temporary.push(format!(".{}.tmp", std::process::id()));
        if let Some(ext) = path.extension() {
            temporary.push(".");
            temporary.push(ext);
        }
        let temporary = path.with_file_name(temporary);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|e| format!("{}: cannot write the output: {e}", path.display()))?;
        self.pending.push((path.to_owned(), temporary));
        Ok(())
    }

    fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        self.write_with(path, |temporary| {
            std::fs::write(temporary, bytes).map_err(|e| e.to_string())
        })
    }

    /// Writes the claimed output `path` through `write`, which is given the
    /// temporary file's path, then renames it into place.
    fn write_with(
        &mut self,
        path: &Path,
        write: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), String> {
        let Some(at) = self.pending.iter().position(|(p, _)| p == path) else {
            return Err(format!(
                "{}: an output written without being claimed",
                path.display()
            ));
        };
        let temporary = self.pending[at].1.clone();
        // A plotting library may panic on data it does not expect: that is a
        // failed output, reported like any other, not a crash.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&temporary)))
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "an internal error".into());
                Err(format!("could not be drawn: {why}"))
            });
        written
            .and_then(|()| std::fs::rename(&temporary, path).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.pending.remove(at);
        Ok(())
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for (_, temporary) in &self.pending {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

/// Whether `a` and `b` name the same existing file (through links, `..`
/// or hard links too).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => std::fs::canonicalize(a)
            .ok()
            .is_some_and(|x| std::fs::canonicalize(b).ok() == Some(x)),
        // A path that does not exist yet is the same file as another only
        // if they are spelled alike once their folders are resolved.
        _ => match (a.parent(), b.parent()) {
            (Some(pa), Some(pb)) if a.file_name() == b.file_name() => {
                let folder = |p: &Path| {
                    std::fs::canonicalize(if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    })
                };
                folder(pa).ok().is_some_and(|x| folder(pb).ok() == Some(x))
            }
            _ => a == b,
        },
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
fn to_csv(corner: &str, labels: &[String], rows: &[String], m: &nalgebra::DMatrix<f64>) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::from(corner);
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
mod tests {
    use super::natural_order;

    #[test]
    fn natural_order_reads_numbers_as_numbers() {
        let mut names = vec![
            "runs/a/step_1000.pt",
            "runs/a/step_500.pt",
            "runs/a/step_20.pt",
            "runs/a/step_0020.pt",
            "runs/b/step_3.pt",
            "runs/a/step_99999999999999999999999.pt",
        ];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            names,
            [
                "runs/a/step_20.pt",
                "runs/a/step_0020.pt",
                "runs/a/step_500.pt",
                "runs/a/step_1000.pt",
                "runs/a/step_99999999999999999999999.pt",
                "runs/b/step_3.pt",
            ]
        );
    }
}
