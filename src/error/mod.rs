//! The crate's error type.

mod file;
mod option;

pub use file::FileError;
pub use option::{ConfigHint, LoadOption, Spelling};

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Which of the two models an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first (left) model.
    A,
    /// The second (right) model.
    B,
}

impl core::fmt::Display for Side {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

/// Why two models cannot be compared position by position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incomparable {
    /// The models have different numbers of blocks.
    #[error("model A has {a} blocks but model B has {b}")]
    Depth {
        /// Blocks of model A.
        a: usize,
        /// Blocks of model B.
        b: usize,
    },
    /// Blocks at one position have different orders.
    #[error("block {block} (0-based) has order {a} in model A but order {b} in model B")]
    Order {
        /// Position of the block (0-based).
        block: usize,
        /// Order in model A.
        a: usize,
        /// Order in model B.
        b: usize,
    },
    /// The two blocks given to one Gram step have different orders.
    #[error("the two blocks of a Gram step have orders {a} and {b}")]
    StepOrders {
        /// Order of the first block.
        a: usize,
        /// Order of the second block.
        b: usize,
    },
    /// The input widths differ.
    #[error("model A reads inputs of width {a} but model B reads width {b}")]
    InputWidth {
        /// Input width of model A.
        a: usize,
        /// Input width of model B.
        b: usize,
    },
    /// The output widths differ.
    #[error("model A writes outputs of width {a} but model B writes width {b}")]
    OutputWidth {
        /// Output width of model A.
        a: usize,
        /// Output width of model B.
        b: usize,
    },
    /// The two models' parameters have different shapes (weight-space metrics).
    #[error(
        "parameter {index} ({role} of block {block}, both 0-based) has shape {a:?} in model A but {b:?} in model B"
    )]
    ParameterShape {
        /// Position of the block (0-based).
        block: usize,
        /// Index of the parameter within the block.
        index: usize,
        /// Role of the parameter, as the block names it.
        role: &'static str,
        /// Shape in model A.
        a: (usize, usize),
        /// Shape in model B.
        b: (usize, usize),
    },
}

/// Everything that can go wrong; each variant names the offending object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A matrix or vector has the wrong shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// What was being checked.
        what: String,
        /// The expected `(rows, columns)`.
        expected: (usize, usize),
        /// The `(rows, columns)` found.
        found: (usize, usize),
    },
    /// A value is NaN or infinite.
    #[error("{what} holds a non-finite value ({value}) at ({row}, {col})")]
    NonFinite {
        /// What was being checked.
        what: String,
        /// Row of the first non-finite entry.
        row: usize,
        /// Column of the first non-finite entry.
        col: usize,
        /// The value found.
        value: f64,
    },
    /// Consecutive blocks of a model do not fit together.
    #[error(
        "block {block} (0-based) reads inputs of width {found}, but the block before it writes width {expected}"
    )]
    WidthMismatch {
        /// Position of the block whose input does not fit (0-based).
        block: usize,
        /// The width the previous block writes.
        expected: usize,
        /// The width this block reads.
        found: usize,
    },
    /// A model was built without blocks.
    #[error("a model needs at least one block")]
    EmptyModel,
    /// A residual scale other than 1 needs equal input and output widths.
    #[error(
        "residual scale {scale} mixes the input back in, so the output width {output} must equal the input width {input}"
    )]
    Residual {
        /// The residual scale `s`.
        scale: f64,
        /// Input width `m`.
        input: usize,
        /// Output width `n`.
        output: usize,
    },
    /// A block's factors are inconsistent (e.g. they do not preserve the constant).
    #[error("invalid block: {0}")]
    InvalidBlock(String),
    /// A permutation or permutation group is malformed.
    #[error("invalid symmetry: {0}")]
    Symmetry(String),
    /// An input metric, output weighting or other option is invalid.
    #[error("invalid option {what}: {reason}")]
    InvalidOption {
        /// The option.
        what: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The two models cannot be compared.
    #[error("models are not comparable: {0}")]
    Incomparable(#[from] Incomparable),
    /// A model's norm is zero (or lost to rounding), so its cosine with
    /// anything is undefined.
    #[error(
        "model {0} has zero norm under this metric (or one below rounding error), so its similarity is undefined"
    )]
    ZeroNorm(Side),
    /// A model file could not be read or written.
    #[error("{}", self.spelled(Spelling::Rust))]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong, naming the tensor or role.
        source: FileError,
    },
    /// Tensors given in memory (a `state_dict`) do not make a model.
    #[error("{}", self.spelled(Spelling::Rust))]
    StateDict {
        /// What went wrong, naming the tensor or role.
        source: FileError,
    },
    /// A block's order is beyond what the Gaussian metric's Wick expansion
    /// accepts (its cost grows factorially with the order).
    #[error(
        "block {block} (0-based) of model {side} has order {order}; the Gaussian metric accepts orders up to {max}"
    )]
    OrderTooHigh {
        /// Position of the block (0-based).
        block: usize,
        /// The model it belongs to.
        side: Side,
        /// Its order `k`.
        order: usize,
        /// The highest order accepted.
        max: usize,
    },
    /// A model's output on one sample is the zero vector, so the per-sample
    /// cosine is undefined there.
    #[error(
        "model {side} outputs the zero vector on sample {sample}, so its per-sample cosine is undefined"
    )]
    ZeroOutput {
        /// The model.
        side: Side,
        /// The sample (row of the input matrix, 0-based).
        sample: usize,
    },
    /// An input matrix for an empirical metric has no rows.
    #[error("{what} needs at least {needed} samples (rows), found {found}")]
    TooFewSamples {
        /// The metric.
        what: &'static str,
        /// The least number of rows it needs.
        needed: usize,
        /// The rows given.
        found: usize,
    },
    /// A block of a model does not keep the constant ([SPEC §1](crate::spec#1-blocks-and-models): output 0 of
    /// its symmetrised padded tensor must be `e_0 ⊗ … ⊗ e_0`, so `ỹ_0 = 1`).
    #[error("block {block} (0-based), a {kind} block, does not keep the constant: {reason}")]
    ConstantNotKept {
        /// Position of the block (0-based).
        block: usize,
        /// The block's kind.
        kind: &'static str,
        /// What the check found.
        reason: String,
    },
    /// [`check_block`](crate::check_block) found a block kind inconsistent.
    #[error("a {kind} block fails its check: {reason}")]
    BlockCheck {
        /// The block's kind.
        kind: &'static str,
        /// What disagreed, with the numbers.
        reason: String,
    },
    /// A metric does not support a block kind.
    #[error(
        "block {block} (0-based) of model {side} is a {kind} block, which {metric} does not support"
    )]
    Unsupported {
        /// Position of the block (0-based).
        block: usize,
        /// The model it belongs to.
        side: Side,
        /// The block's kind.
        kind: &'static str,
        /// The metric.
        metric: &'static str,
    },
    /// A sequence model (one with a block that mixes positions, or marked
    /// as one) was compared without a context length.
    #[error("{}", self.spelled(Spelling::Rust))]
    MissingContext(Side),
    /// A context length of zero positions.
    #[error("the context length must be at least 1 position")]
    ZeroContext,
    /// A number of heads that does not divide a weight's rows.
    #[error("{heads} heads do not divide the {rows} rows of {what}")]
    Heads {
        /// The weight (`q1`, `v`, …).
        what: &'static str,
        /// Its number of rows.
        rows: usize,
        /// The number of heads.
        heads: usize,
    },
    /// Rotary position encoding needs an even q/k width per head.
    #[error(
        "rotary position encoding pairs dimensions, so the q/k width per head must be even, found {width}"
    )]
    OddRotaryWidth {
        /// The q/k width per head `e`.
        width: usize,
    },
    /// A computation produced NaN or infinity although the inputs were finite.
    #[error("numerical breakdown at block {block} (0-based): {reason}")]
    NumericalBreakdown {
        /// Position of the block (0-based).
        block: usize,
        /// What became non-finite.
        reason: String,
    },
    /// A size derived from the inputs (a context length, a width, a head
    /// count) does not fit in `usize`: nothing of that size can exist.
    #[error("{what} is too large to exist in memory (its size overflows)")]
    SizeOverflow {
        /// What was being sized.
        what: String,
    },
    /// The exact Gaussian sum over two chains' legs (SPEC §3) would need
    /// more memory than the limit; refused before it starts.
    #[error("{}", self.spelled(Spelling::Rust))]
    ExactGaussianMemory {
        /// The estimated peak memory, human-readable.
        estimate: String,
        /// The limit, described.
        limit: String,
    },
    /// A comparison's estimated peak memory exceeds the limit
    /// ([`MemoryLimit`](crate::MemoryLimit)); refused before it starts.
    #[error(
        "comparing at context {context} needs {estimate} of memory, more than {limit}; {}",
        match largest_context {
            Some(n) => format!("the largest context that fits is {n}"),
            None => "not even one position fits".into(),
        }
    )]
    MemoryLimit {
        /// The context length asked for.
        context: usize,
        /// The estimated peak memory, human-readable (`about 38.4 GB`).
        estimate: String,
        /// The limit, described (`this machine's 25.2 GB`).
        limit: String,
        /// The largest context length whose estimate fits, if any.
        largest_context: Option<usize>,
    },
    /// A comparison's estimated work exceeds the limit set with
    /// [`TensorSimilarity::with_max_work`](crate::TensorSimilarity::with_max_work);
    /// refused before it starts.
    #[error("{}", self.spelled(Spelling::Rust))]
    WorkLimit {
        /// The context length asked for.
        context: usize,
        /// The estimated multiply–adds of the comparison.
        estimate: f64,
        /// The limit, in multiply–adds.
        limit: f64,
        /// The largest context length whose estimate fits, if any.
        largest_context: Option<usize>,
    },
}

/// At most this many entries of a list are named in an error message; the
/// rest are counted ([`listed`]).
pub(crate) const LISTED: usize = 8;

/// At most this many characters of one name or value are shown in an error
/// message ([`clipped`]).
pub(crate) const CLIPPED: usize = 80;

/// The family of an [`Error`]: what kind of fault it is, for a front end
/// that maps errors to its own types (the Python package's exception
/// classes). Every variant of [`Error`] has one, by an exhaustive match
/// here, so that a new variant cannot be left without.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorFamily {
    /// An option or setting out of its domain, or missing.
    Option,
    /// An array of the wrong shape, or too few samples.
    Shape,
    /// A NaN or infinity in the input.
    NonFinite,
    /// Blocks that do not make a valid model or block.
    Model,
    /// Two models, or blocks, that cannot be compared.
    Incomparable,
    /// A model whose norm is zero.
    ZeroNorm,
    /// A computation that left the range the scalar type resolves.
    Numerical,
    /// More memory, or a larger size, than the machine or the limit has; or
    /// more work than the limit allows.
    MemoryLimit,
    /// A model file, or a `state_dict`'s tensors, that cannot be read or written.
    File,
}

impl Error {
    /// The error's [`ErrorFamily`].
    ///
    /// ```
    /// use tensor_similarity::{Error, ErrorFamily};
    /// assert_eq!(Error::ZeroContext.family(), ErrorFamily::Option);
    /// ```
    pub fn family(&self) -> ErrorFamily {
        match self {
            Error::InvalidOption { .. } | Error::MissingContext(_) | Error::ZeroContext => {
                ErrorFamily::Option
            }
            Error::Shape { .. } | Error::TooFewSamples { .. } => ErrorFamily::Shape,
            Error::NonFinite { .. } => ErrorFamily::NonFinite,
            Error::WidthMismatch { .. }
            | Error::EmptyModel
            | Error::Residual { .. }
            | Error::InvalidBlock(_)
            | Error::Symmetry(_)
            | Error::ConstantNotKept { .. }
            | Error::BlockCheck { .. }
            | Error::Heads { .. }
            | Error::OddRotaryWidth { .. } => ErrorFamily::Model,
            Error::Incomparable(_) | Error::Unsupported { .. } | Error::OrderTooHigh { .. } => {
                ErrorFamily::Incomparable
            }
            Error::ZeroNorm(_) | Error::ZeroOutput { .. } => ErrorFamily::ZeroNorm,
            Error::NumericalBreakdown { .. } => ErrorFamily::Numerical,
            Error::MemoryLimit { .. }
            | Error::WorkLimit { .. }
            | Error::ExactGaussianMemory { .. }
            | Error::SizeOverflow { .. } => ErrorFamily::MemoryLimit,
            Error::File { .. } | Error::StateDict { .. } => ErrorFamily::File,
        }
    }
}

impl Error {
    /// The message with every option it names spelled as `spelling`'s
    /// caller writes it: the command line prints
    /// `spelled(Spelling::CommandLine)` (`--heads`, `--context N`), the
    /// Python package raises `spelled(Spelling::Python)` (`heads=`,
    /// `context=N`); the `Display` of the error is [`Spelling::Rust`]
    /// (`LoadOptions::heads`, `TensorSimilarity::with_context`). Only the
    /// options' names differ.
    ///
    /// ```
    /// use tensor_similarity::{Error, Side, Spelling};
    /// let e = Error::MissingContext(Side::A);
    /// assert!(e.to_string().contains("TensorSimilarity::with_context"));
    /// assert!(e.spelled(Spelling::CommandLine).to_string().contains("--context N"));
    /// assert!(e.spelled(Spelling::Python).to_string().contains("context=N"));
    /// ```
    pub fn spelled(&self, spelling: Spelling) -> impl core::fmt::Display + '_ {
        SpelledError(self, spelling)
    }
}

/// An [`Error`] with the spelling its options are written in.
struct SpelledError<'a>(&'a Error, Spelling);

impl core::fmt::Display for SpelledError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let spelling = self.1;
        match self.0 {
            Error::File { path, source } => {
                write!(f, "{}: {}", path.display(), source.spelled(spelling))
            }
            Error::StateDict { source } => write!(f, "state_dict: {}", source.spelled(spelling)),
            Error::MissingContext(side) => write!(
                f,
                "model {side} is a sequence model: give the context length to compare it at \
                 ({})",
                spelling.context()
            ),
            Error::ExactGaussianMemory { estimate, limit } => write!(
                f,
                "the exact Gaussian inner product of these chains needs {estimate} of memory, \
                 more than {limit}; {} approximate or estimate it",
                spelling.gaussian_alternatives()
            ),
            Error::WorkLimit {
                context,
                estimate,
                limit,
                largest_context,
            } => write!(
                f,
                "comparing at context {context} takes about {estimate:.1e} multiply–adds, \
                 more than the limit of {limit:.1e}; {} ({} raises the limit)",
                match largest_context {
                    Some(n) => format!("the largest context within it is {n}"),
                    None => "not even one position is within it".into(),
                },
                spelling.max_work()
            ),
            other => core::fmt::Display::fmt(other, f),
        }
    }
}

/// A list of names for an error message, one line of bounded length
/// whatever the input holds: the first `limit` items (control characters
/// escaped, each [`clipped`]), joined by `", "`, then `", … and N more"` if
/// there are more. Every place an error names a list of things goes
/// through here, so that a file with 20 000 unknown keys gives a one-line
/// error, not a 200 KB one.
pub(crate) fn listed<I>(items: I, limit: usize) -> String
where
    I: IntoIterator,
    I::Item: core::fmt::Display,
{
    let mut items = items.into_iter();
    let shown: Vec<String> = items
        .by_ref()
        .take(limit)
        .map(|item| {
            let mut text = String::new();
            for c in item.to_string().chars() {
                if c.is_control() {
                    text.extend(c.escape_default());
                } else {
                    text.push(c);
                }
            }
            clipped(&text, CLIPPED)
        })
        .collect();
    let more = items.count();
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(", … and {more} more"));
    }
    out
}

/// `text` cut to at most `max` characters, an ellipsis ending a cut one:
/// for a name or value echoed in an error, which quotes it with `{:?}`
/// (escaping line breaks) or passes text already escaped.
pub(crate) fn clipped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_cut_with_a_count() {
        assert_eq!(listed(["a", "b"], 8), "a, b");
        assert_eq!(listed(Vec::<String>::new(), 8), "");
        let names: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        assert_eq!(
            listed(&names, LISTED),
            "k0, k1, k2, k3, k4, k5, k6, k7, … and 19992 more"
        );
        // Exactly the limit: nothing counted.
        assert_eq!(listed(&names[..3], 3), "k0, k1, k2");
        // One long name is cut too.
        let long = "x".repeat(10_000);
        let shown = listed([&long], LISTED);
        assert_eq!(shown.chars().count(), CLIPPED + 1);
        assert!(shown.ends_with('…'));
        // Line breaks in a name are escaped: the list stays one line.
        assert_eq!(listed(["a\nb", "c\td"], 8), "a\\nb, c\\td");
    }

    /// Each variant whose message names an option, alone and nested in
    /// the variants that wrap another error: `Display` is the Rust
    /// spelling, and each spelling names the option its own way only.
    #[test]
    fn options_are_spelled_as_each_caller_writes_them() {
        let needs = || FileError::NeedsConfig {
            layout: "attention_lm",
            what: "the number of heads (n_head)",
            option: LoadOption::Heads,
        };
        let disagrees = |config: &str| FileError::Config {
            config: config.into(),
            reason: "model.n_head is 2".into(),
            hint: Some(ConfigHint::Disagrees {
                option: LoadOption::Heads,
                given: "4".into(),
            }),
        };
        let file = |source| Error::File {
            path: "run/step_1.pt".into(),
            source,
        };
        let errors = [
            file(needs()),
            file(disagrees("run/config.yaml")),
            file(disagrees("")),
            Error::StateDict { source: needs() },
            file(FileError::InvalidOption {
                option: LoadOption::Heads,
                reason: "not a count".into(),
            }),
            file(FileError::Block {
                block: 1,
                source: Box::new(file(needs())),
            }),
            file(FileError::Model {
                source: Box::new(Error::StateDict { source: needs() }),
            }),
            Error::MissingContext(Side::B),
        ];
        for e in &errors {
            let rust = e.to_string();
            assert_eq!(e.spelled(Spelling::Rust).to_string(), rust);
            let cli = e.spelled(Spelling::CommandLine).to_string();
            let python = e.spelled(Spelling::Python).to_string();
            let named = |text: &str| {
                [
                    ["LoadOptions::heads", "TensorSimilarity::with_context"],
                    ["--heads", "--context"],
                    ["heads=", "context="],
                ]
                .map(|names| names.iter().any(|n| text.contains(n)))
            };
            assert_eq!(named(&rust), [true, false, false], "{rust}");
            assert_eq!(named(&cli), [false, true, false], "{cli}");
            assert_eq!(named(&python), [false, false, true], "{python}");
        }
        assert_eq!(
            errors[1].spelled(Spelling::CommandLine).to_string(),
            "run/step_1.pt: config run/config.yaml: model.n_head is 2, but --heads says 4"
        );
        assert_eq!(
            errors[2].spelled(Spelling::Python).to_string(),
            "run/step_1.pt: config (the dict given as config=): model.n_head is 2, but heads= says 4"
        );
        // A variant that names no option reads alike for all.
        let plain = Error::ZeroContext;
        assert_eq!(
            plain.spelled(Spelling::Python).to_string(),
            plain.to_string()
        );
        // The spellings of every option.
        for option in LoadOption::ALL {
            assert_eq!(LoadOption::from_field(option.field()), Some(option));
            assert_eq!(
                option.spelled(Spelling::CommandLine).to_string(),
                format!("--{}", option.field().replace('_', "-"))
            );
            assert_eq!(
                option.to_string(),
                format!("LoadOptions::{}", option.field())
            );
        }
    }

    #[test]
    fn clipped_text_is_bounded() {
        assert_eq!(clipped("abc", 3), "abc");
        assert_eq!(clipped("abcd", 3), "abc…");
        assert_eq!(clipped("ééé", 2), "éé…");
        assert_eq!(clipped("", 2), "");
    }
}
