//! The study: train, checkpoint, reload, compare, write CSVs.

use std::collections::BTreeSet;
use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nalgebra::DMatrix;
use tensor_similarity::{Bilinear, Linear, Model, io};

use crate::compare;
use crate::phases::Phases;
use crate::train::{self, Config, CurvePoint, Params, Split};

/// How much to record.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of checkpoints (log-spaced).
    pub checkpoints: usize,
    /// Number of points on the training curves (log-spaced, plus every checkpoint).
    pub curve_points: usize,
    /// Whether to draw progress bars on stderr.
    pub progress: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct Study {
    /// The step of each checkpoint.
    pub steps: Vec<usize>,
    /// The checkpoint files, in step order.
    pub files: Vec<PathBuf>,
    /// Training curves.
    pub curves: Vec<CurvePoint>,
    /// Phase boundaries read off the curves.
    pub phases: Phases,
    /// Tensor similarity between checkpoints.
    pub tensor: DMatrix<f64>,
    /// Weight cosine between checkpoints.
    pub weight: DMatrix<f64>,
    /// Global output cosine over all `P²` inputs between checkpoints.
    pub output: DMatrix<f64>,
    /// Global output cosine over the training inputs only.
    pub output_train: DMatrix<f64>,
    /// The tensor group by group against the final checkpoint's, at the
    /// first checkpoint, the first at or after each phase boundary, and the last.
    pub parts: Vec<compare::TensorParts>,
    /// Wall time of training (with curves and checkpoint files).
    pub train_time: Duration,
    /// Wall time of the three matrices (with reloading the files).
    pub compare_time: Duration,
}

/// The model `W((Lx) ∘ (Rx))` in the crate's terms.
pub fn to_model(params: &Params) -> tensor_similarity::Result<Model<f64>> {
    Model::builder()
        .block(Bilinear::new(params.left.clone(), params.right.clone())?)
        .block(Linear::new(params.proj.clone(), None)?)
        .build()
}

fn bar(len: usize, prefix: &'static str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64).with_prefix(prefix);
    // The template is a literal; a typo would show up on the first run.
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Runs the study, writing checkpoints and CSVs under `out`.
pub fn run(cfg: &Config, opts: &Options, out: &Path) -> Result<Study, Box<dyn Error>> {
    if cfg.p < 2 || cfg.hidden == 0 || cfg.steps == 0 || opts.checkpoints < 2 {
        return Err(format!(
            "need P ≥ 2, a hidden width ≥ 1, at least one step and two checkpoints; \
             got P = {}, width {}, {} steps, {} checkpoints",
            cfg.p, cfg.hidden, cfg.steps, opts.checkpoints
        )
        .into());
    }
    if !(cfg.train_fraction > 0.0 && cfg.train_fraction < 1.0) {
        return Err(format!(
            "the train fraction must lie in (0, 1), got {}",
            cfg.train_fraction
        )
        .into());
    }
    let dir = out.join("checkpoints");
    fs::create_dir_all(&dir)?;
    let split = Split::new(cfg.p, cfg.train_fraction, cfg.seed);
    let offset = (cfg.steps / 50).max(1);
    let steps = train::log_schedule(cfg.steps, opts.checkpoints, offset);
    let saved: BTreeSet<usize> = steps.iter().copied().collect();
    let measured: BTreeSet<usize> = train::log_schedule(cfg.steps, opts.curve_points, offset)
        .into_iter()
        .chain(steps.iter().copied())
        .collect();

    let start = Instant::now();
    let progress = bar(cfg.steps, "train", opts.progress);
    let mut curves = Vec::new();
    let mut files = Vec::new();
    let mut kept = Vec::new();
    train::train(cfg, &split, |step, params| -> Result<(), Box<dyn Error>> {
        if measured.contains(&step) {
            let c = train::measure(step, params, &split);
            progress.set_message(format!(
                "train acc {:.3}, held-out acc {:.3}",
                c.train.accuracy, c.test.accuracy
            ));
            curves.push(c);
        }
        if saved.contains(&step) {
            let path = dir.join(format!("step_{step:06}.safetensors"));
            io::save(&to_model(params)?, &path, io::Layout::BiLinearProjection)?;
            files.push(path);
            kept.push(params.clone());
        }
        progress.set_position(step as u64);
        Ok(())
    })?;
    progress.finish();
    let train_time = start.elapsed();

    let start = Instant::now();
    let models = files.iter().map(io::load).collect::<Result<Vec<_>, _>>()?;
    let n = models.len();
    let progress = bar(n * (n - 1) / 2, "tensor", opts.progress);
    let tensor = compare::tensor_matrix(&models, || progress.inc(1))?;
    progress.finish();
    let weight = compare::weight_matrix(&models)?;
    let chunk = 256;
    let progress = bar(split.all.len().div_ceil(chunk), "output", opts.progress);
    let refs: Vec<&Params> = kept.iter().collect();
    let output = compare::output_matrix(&refs, &split.all, chunk, || progress.inc(1));
    progress.finish();
    let output_train = compare::output_matrix(&refs, &split.train, chunk, || {});
    let phases = Phases::detect(&curves);
    let mut marks = vec![0, steps.len() - 1];
    marks.extend(
        phases
            .boundaries()
            .iter()
            .filter_map(|&b| steps.iter().position(|&s| s >= b)),
    );
    marks.sort_unstable();
    marks.dedup();
    let reference = compare::dense_tensor(&kept[kept.len() - 1]);
    let reference_norms = compare::grouped_inner_product(&reference, &reference);
    let parts: Vec<_> = marks
        .iter()
        .map(|&k| compare::tensor_parts(steps[k], &kept[k], &reference, reference_norms))
        .collect();
    let compare_time = start.elapsed();

    let stems: Vec<String> = steps.iter().map(|s| format!("step_{s:06}")).collect();
    write_matrix(&out.join("tensor_similarity.csv"), &stems, &tensor)?;
    write_matrix(&out.join("weight_cosine.csv"), &stems, &weight)?;
    write_matrix(&out.join("output_cosine.csv"), &stems, &output)?;
    write_matrix(&out.join("output_cosine_train.csv"), &stems, &output_train)?;
    write_curves(&out.join("curves.csv"), &curves)?;
    write_parts(&out.join("tensor_parts.csv"), &parts)?;

    Ok(Study {
        phases,
        steps,
        output_train,
        parts,
        files,
        curves,
        tensor,
        weight,
        output,
        train_time,
        compare_time,
    })
}

/// The curves, checkpoint steps and matrices of an earlier run, read back
/// from the CSVs in `out` (to redraw the figure without training again).
pub fn read_back(out: &Path) -> Result<Study, Box<dyn Error>> {
    let (steps, tensor) = read_matrix(&out.join("tensor_similarity.csv"))?;
    let (_, weight) = read_matrix(&out.join("weight_cosine.csv"))?;
    let (_, output) = read_matrix(&out.join("output_cosine.csv"))?;
    let (_, output_train) = read_matrix(&out.join("output_cosine_train.csv"))?;
    let text = fs::read_to_string(out.join("curves.csv"))?;
    let mut curves = Vec::new();
    for line in text.lines().skip(1) {
        let v: Vec<f64> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        if v.len() != 6 {
            return Err(format!("curves.csv: expected 6 columns, found {}", v.len()).into());
        }
        let m = |loss, accuracy| train::Metrics { loss, accuracy };
        curves.push(CurvePoint {
            step: v[0] as usize,
            train: m(v[1], v[2]),
            test: m(v[3], v[4]),
            weight_norm: v[5],
        });
    }
    Ok(Study {
        phases: Phases::detect(&curves),
        files: Vec::new(),
        output_train,
        parts: Vec::new(),
        steps,
        curves,
        tensor,
        weight,
        output,
        train_time: Duration::ZERO,
        compare_time: Duration::ZERO,
    })
}

fn read_matrix(path: &Path) -> Result<(Vec<usize>, DMatrix<f64>), Box<dyn Error>> {
    let text = fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?;
    let steps = header
        .split(',')
        .map(|s| s.trim_start_matches("step_").parse())
        .collect::<Result<Vec<usize>, _>>()?;
    let rows: Vec<f64> = lines
        .flat_map(|l| l.split(','))
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let n = steps.len();
    if rows.len() != n * n {
        return Err(format!(
            "{}: expected {n}×{n} values, found {}",
            path.display(),
            rows.len()
        )
        .into());
    }
    Ok((steps, DMatrix::from_row_slice(n, n, &rows)))
}

/// The matrix as CSV with a header row of checkpoint names, as the CLI's
/// `matrix` command writes it.
fn write_matrix(path: &Path, names: &[String], m: &DMatrix<f64>) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(f, "{}", names.join(","))?;
    for row in m.row_iter() {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        writeln!(f, "{}", cells.join(","))?;
    }
    f.flush()
}

fn write_parts(path: &Path, parts: &[compare::TensorParts]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(
        f,
        "step,share_cross,share_diagonal,share_unread,\
         cosine_final_cross,cosine_final_diagonal,cosine_final_unread,cosine_final"
    )?;
    for p in parts {
        let (s, c) = (p.share, p.cosine);
        writeln!(
            f,
            "{},{},{},{},{},{},{},{}",
            p.step, s.cross, s.diagonal, s.unread, c.cross, c.diagonal, c.unread, p.total_cosine
        )?;
    }
    f.flush()
}

fn write_curves(path: &Path, curves: &[CurvePoint]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(
        f,
        "step,train_loss,train_accuracy,heldout_loss,heldout_accuracy,weight_norm"
    )?;
    for c in curves {
        writeln!(
            f,
            "{},{},{},{},{},{}",
            c.step, c.train.loss, c.train.accuracy, c.test.loss, c.test.accuracy, c.weight_norm
        )?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DVector;

    fn small() -> Config {
        Config {
            p: 11,
            hidden: 8,
            steps: 150,
            learning_rate: 1e-2,
            weight_decay: 0.1,
            ..Config::default()
        }
    }

    /// `f(e_a ⊕ e_b)` by the library's own forward pass of the model.
    fn library_logits(model: &Model<f64>, p: usize, a: usize, b: usize) -> DVector<f64> {
        let mut x = DVector::zeros(2 * p);
        x[a] = 1.0;
        x[p + b] = 1.0;
        model.forward(&x).unwrap()
    }

    #[test]
    fn small_study_learns_and_its_matrices_are_symmetric_with_unit_diagonal() {
        let cfg = small();
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            checkpoints: 12,
            curve_points: 20,
            progress: false,
        };
        let study = run(&cfg, &opts, dir.path()).unwrap();
        let (first, last) = (study.curves[0], study.curves[study.curves.len() - 1]);
        assert_eq!((first.step, last.step), (0, cfg.steps));
        assert!(
            last.train.loss < 0.5 * first.train.loss,
            "{first:?} -> {last:?}"
        );
        assert_eq!(study.steps.len(), 12);
        for (name, m) in [
            ("tensor", &study.tensor),
            ("weight", &study.weight),
            ("output", &study.output),
        ] {
            assert_eq!(m.shape(), (12, 12), "{name}");
            for i in 0..12 {
                assert!(
                    (m[(i, i)] - 1.0).abs() < 1e-12,
                    "{name} diagonal {i}: {}",
                    m[(i, i)]
                );
                for j in 0..12 {
                    assert!(
                        m[(i, j)].is_finite() && m[(i, j)].abs() <= 1.0,
                        "{name} ({i}, {j})"
                    );
                    assert_eq!(m[(i, j)], m[(j, i)], "{name} ({i}, {j})");
                }
            }
            // Training moves the weights: the first and last checkpoints differ.
            assert!(m[(0, 11)] < 0.99, "{name}: {}", m[(0, 11)]);
        }
        for file in [
            "curves.csv",
            "tensor_similarity.csv",
            "weight_cosine.csv",
            "output_cosine.csv",
        ] {
            let text = fs::read_to_string(dir.path().join(file)).unwrap();
            let expected = if file == "curves.csv" {
                study.curves.len()
            } else {
                12
            };
            assert_eq!(text.lines().count(), expected + 1, "{file}");
        }
    }

    #[test]
    fn dense_tensor_cosine_matches_the_recursion() {
        let cfg = small();
        let (a, b) = (
            Params::init(cfg.p, cfg.hidden, 1.0, 9),
            Params::init(cfg.p, cfg.hidden, 1.0, 10),
        );
        let reference = compare::dense_tensor(&b);
        let norms = compare::grouped_inner_product(&reference, &reference);
        let parts = compare::tensor_parts(0, &a, &reference, norms);
        let recursion =
            tensor_similarity::similarity(&to_model(&a).unwrap(), &to_model(&b).unwrap()).unwrap();
        assert!(
            (parts.total_cosine - recursion).abs() < 1e-12,
            "{} vs {recursion}",
            parts.total_cosine
        );
        let s = parts.share;
        assert!((s.cross + s.diagonal + s.unread - 1.0).abs() < 1e-12);
        // Against itself every group's cosine is 1.
        let own = compare::tensor_parts(0, &b, &reference, norms);
        for c in [
            own.cosine.cross,
            own.cosine.diagonal,
            own.cosine.unread,
            own.total_cosine,
        ] {
            assert!((c - 1.0).abs() < 1e-12, "{c}");
        }
    }

    #[test]
    fn bad_settings_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |checkpoints| Options {
            checkpoints,
            curve_points: 5,
            progress: false,
        };
        for (cfg, checkpoints) in [
            (
                Config {
                    steps: 0,
                    ..small()
                },
                5,
            ),
            (Config { p: 1, ..small() }, 5),
            (
                Config {
                    train_fraction: 1.0,
                    ..small()
                },
                5,
            ),
            (small(), 1),
        ] {
            let err = run(&cfg, &opts(checkpoints), dir.path()).unwrap_err();
            assert!(err.to_string().contains("got"), "{err}");
        }
    }

    #[test]
    fn checkpoint_files_hold_the_trained_function() {
        let cfg = small();
        let params = Params::init(cfg.p, cfg.hidden, 1.5, 4);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        io::save(
            &to_model(&params).unwrap(),
            &path,
            io::Layout::BiLinearProjection,
        )
        .unwrap();
        let model = io::load(&path).unwrap();
        let all = Split::new(cfg.p, 0.3, 0).all;
        let ours = params.logits(&all);
        for k in 0..all.len() {
            let theirs = library_logits(&model, cfg.p, all.a[k], all.b[k]);
            assert!((ours.column(k) - theirs).amax() < 1e-12, "pair {k}");
        }
    }

    #[test]
    fn output_matrix_matches_pairwise_cosines_of_library_outputs() {
        let cfg = small();
        let all = Split::new(cfg.p, 0.3, 0).all;
        let params: Vec<Params> = (0..4)
            .map(|s| Params::init(cfg.p, cfg.hidden, 1.0, s))
            .collect();
        let refs: Vec<&Params> = params.iter().collect();
        // A chunk that does not divide P² exercises the ragged last chunk.
        let mut chunks = 0;
        let fast = compare::output_matrix(&refs, &all, 17, || chunks += 1);
        assert_eq!(chunks, all.len().div_ceil(17));
        let outputs: Vec<Vec<f64>> = params
            .iter()
            .map(|p| {
                let model = to_model(p).unwrap();
                (0..all.len())
                    .flat_map(|k| {
                        library_logits(&model, cfg.p, all.a[k], all.b[k])
                            .data
                            .as_vec()
                            .clone()
                    })
                    .collect()
            })
            .collect();
        let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(x, y)| x * y).sum::<f64>();
        for i in 0..4 {
            for j in 0..4 {
                let naive = dot(&outputs[i], &outputs[j])
                    / (dot(&outputs[i], &outputs[i]) * dot(&outputs[j], &outputs[j])).sqrt();
                assert!(
                    (fast[(i, j)] - naive).abs() < 1e-12,
                    "({i}, {j}): {} vs {naive}",
                    fast[(i, j)]
                );
            }
        }
    }
}
