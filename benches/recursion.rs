//! Criterion benches of the Gram recursion (see `docs/performance.md`).
//!
//! * `gram_step_f64`, `gram_step_f32`: one bilinear step `d → d` with hidden
//!   width `h` (down projection and all biases) at
//!   `(d, h) ∈ {(64, 256), (256, 1024), (512, 2048)}`: the general step, the
//!   self step, the step with a residual (`s = 0.5`, rank `1 + h + d`), the
//!   untiled formulation (one `2r × 2r` product, as a reader of SPEC §2 would
//!   write it), and the GEMMs no formulation avoids, on the same shapes in the
//!   same library: `Y = U G` (`2h × (d+1) × (d+1)`), `X = Y Uᵀ`
//!   (`2h × 2h × (d+1)`), `Z = D H` (`(d+1) × h × h`), `G' = Z Dᵀ`
//!   (`(d+1) × (d+1) × h`).
//! * `growth_h`, `growth_d`, `growth_depth`: how the step and the model
//!   similarity grow.
//! * `model`: whole-model similarity; `matrix`: a 32-checkpoint similarity
//!   matrix on 1 and 2 rayon threads.
//!
//! After the run, `main` reads criterion's estimates back and prints the
//! tables of `docs/performance.md` (medians), with the step/GEMM ratios, and
//! draws `target/criterion/growth.png` when the `cli` feature (plotters) is on.
//!
//! `cargo bench --bench recursion -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group};
use nalgebra::{DMatrix, DMatrixView, DVector, Dyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tensor_similarity::matrix::similarity_matrix;
use tensor_similarity::{
    Bilinear, GramWorkspace, Linear, Model, Real, RecursiveSimilarity, TensorBlock,
    TensorSimilarity,
};

const SIZES: [(usize, usize); 3] = [(64, 256), (256, 1024), (512, 2048)];

fn gaussian<T: Real>(rng: &mut StdRng, rows: usize, cols: usize, scale: f64) -> DMatrix<T> {
    DMatrix::from_fn(rows, cols, |_, _| {
        nalgebra::convert(scale * rng.sample::<f64, _>(StandardNormal))
    })
}

fn vector<T: Real>(rng: &mut StdRng, len: usize) -> DVector<T> {
    DVector::from_fn(len, |_, _| {
        nalgebra::convert(0.1 * rng.sample::<f64, _>(StandardNormal))
    })
}

/// A bilinear block `d → d`, hidden width `h`, down projection, all biases,
/// residual scale `s`.
fn bilinear<T: Real>(rng: &mut StdRng, d: usize, h: usize, s: f64) -> Bilinear<T> {
    let sc = 1.0 / (d as f64).sqrt();
    Bilinear::builder(gaussian(rng, h, d, sc), gaussian(rng, h, d, sc))
        .down(gaussian(rng, d, h, 1.0 / (h as f64).sqrt()))
        .left_bias(vector(rng, h))
        .right_bias(vector(rng, h))
        .down_bias(vector(rng, d))
        .residual(nalgebra::convert(s))
        .build()
        .expect("valid shapes")
}

/// Embedding `d → d`, `depth` bilinear blocks `(d, h)`, head `d → 10`.
fn model<T: Real>(rng: &mut StdRng, d: usize, h: usize, depth: usize) -> Model<T> {
    let mut builder = Model::builder().block(
        Linear::new(
            gaussian(rng, d, d, 1.0 / (d as f64).sqrt()),
            Some(vector(rng, d)),
        )
        .expect("valid shapes"),
    );
    for _ in 0..depth {
        builder = builder.block(bilinear::<T>(rng, d, h, 1.0));
    }
    builder
        .block(Linear::new(gaussian(rng, 10, d, 1.0), None).expect("valid shapes"))
        .build()
        .expect("widths chain")
}

fn symmetric<T: Real>(rng: &mut StdRng, w: usize) -> DMatrix<T> {
    let a: DMatrix<T> = gaussian(rng, w, w, 1.0 / (w as f64).sqrt());
    &a * a.transpose()
}

/// The untiled formulation: the whole `2r × 2r` product `X`, then `H`, then
/// `D̃_A H D̃_Bᵀ`, with nalgebra's operators (each allocates its result).
fn untiled<T: Real>(a: &Bilinear<T>, b: &Bilinear<T>, g: &DMatrix<T>) -> DMatrix<T> {
    let (fa, fb) = (a.as_cp().unwrap(), b.as_cp().unwrap());
    let (ra, rb) = (fa.rank(), fb.rank());
    let x = fa.stacked_inputs() * g * fb.stacked_inputs().transpose();
    let half: T = nalgebra::convert(0.5);
    let h = DMatrix::from_fn(ra, rb, |i, j| {
        half * (x[(i, j)] * x[(ra + i, rb + j)] + x[(i, rb + j)] * x[(ra + i, j)])
    });
    let (da, db) = (
        fa.output().expect("bilinear"),
        fb.output().expect("bilinear"),
    );
    da * h * db.transpose()
}

/// Preallocated operands and outputs of the four GEMMs of a step at `(d, h)`.
struct Gemms<T: Real> {
    u: DMatrix<T>,
    g: DMatrix<T>,
    y: DMatrix<T>,
    x: DMatrix<T>,
    d: DMatrix<T>,
    h: DMatrix<T>,
    z: DMatrix<T>,
    out: DMatrix<T>,
}

impl<T: Real> Gemms<T> {
    fn new(rng: &mut StdRng, d: usize, h: usize) -> Self {
        Self {
            u: gaussian(rng, 2 * h, d + 1, 0.1),
            g: gaussian(rng, d + 1, d + 1, 0.1),
            y: DMatrix::zeros(2 * h, d + 1),
            x: DMatrix::zeros(2 * h, 2 * h),
            d: gaussian(rng, d + 1, h, 0.1),
            h: gaussian(rng, h, h, 0.1),
            z: DMatrix::zeros(d + 1, h),
            out: DMatrix::zeros(d + 1, d + 1),
        }
    }

    fn run(&mut self) {
        let (one, zero) = (T::one(), T::zero());
        self.y.gemm(one, &self.u, &self.g, zero);
        self.x.gemm(one, &self.y, &transposed(&self.u), zero);
        self.z.gemm(one, &self.d, &self.h, zero);
        self.out.gemm(one, &self.z, &transposed(&self.d), zero);
    }
}

/// `mᵀ` as a strided view, as the kernel reads its transposed operands.
fn transposed<T: Real>(m: &DMatrix<T>) -> DMatrixView<'_, T, Dyn, Dyn> {
    let (rows, cols) = m.shape();
    DMatrixView::from_slice_with_strides_generic(
        m.as_slice(),
        Dyn(cols),
        Dyn(rows),
        Dyn(rows),
        Dyn(1),
    )
}

fn gram_step_group<T: Real>(c: &mut Criterion<cpu::ThreadCpu>, name: &str) {
    let mut group = c.benchmark_group(format!("gram_step_{name}"));
    group.sample_size(10);
    for (d, h) in SIZES {
        let id = format!("{d}x{h}");
        let mut rng = StdRng::seed_from_u64(1);
        let (a, b) = (
            bilinear::<T>(&mut rng, d, h, 1.0),
            bilinear::<T>(&mut rng, d, h, 1.0),
        );
        let (ra, rb) = (
            bilinear::<T>(&mut rng, d, h, 0.5),
            bilinear::<T>(&mut rng, d, h, 0.5),
        );
        let g: DMatrix<T> = gaussian(&mut rng, d + 1, d + 1, 1.0 / (d as f64).sqrt());
        let gs = symmetric::<T>(&mut rng, d + 1);
        // One workspace per kind of step, to report each one's scratch.
        let mut out = DMatrix::zeros(0, 0);
        let mut ws = GramWorkspace::new();
        group.bench_function(BenchmarkId::new("step", &id), |bench| {
            bench.iter(|| ws.step(&a, &b, black_box(&g), &mut out).expect("valid"))
        });
        let mut ws_self = GramWorkspace::new();
        group.bench_function(BenchmarkId::new("self", &id), |bench| {
            bench.iter(|| {
                ws_self
                    .self_step(&a, black_box(&gs), &mut out)
                    .expect("valid")
            })
        });
        let mut ws_residual = GramWorkspace::new();
        group.bench_function(BenchmarkId::new("residual", &id), |bench| {
            bench.iter(|| {
                ws_residual
                    .step(&ra, &rb, black_box(&g), &mut out)
                    .expect("valid")
            })
        });
        if name == "f64" {
            let mib = |w: &GramWorkspace<T>| (w.scratch_len() * size_of::<T>()) as f64 / 1048576.0;
            eprintln!(
                "scratch at {id}: step {:.1} MiB, self {:.1} MiB, residual {:.1} MiB \
                 (parameters of the two models: 2 × {:.1} MiB)",
                mib(&ws),
                mib(&ws_self),
                mib(&ws_residual),
                ((3 * h * d + 2 * h + d) * size_of::<T>()) as f64 / 1048576.0,
            );
        }
        group.bench_function(BenchmarkId::new("untiled", &id), |bench| {
            bench.iter(|| untiled(&a, &b, black_box(&g)))
        });
        let mut gemms = Gemms::<T>::new(&mut rng, d, h);
        group.bench_function(BenchmarkId::new("gemms", &id), |bench| {
            bench.iter(|| gemms.run())
        });
    }
    group.finish();
}

fn gram_step_f64(c: &mut Criterion<cpu::ThreadCpu>) {
    gram_step_group::<f64>(c, "f64");
}

fn gram_step_f32(c: &mut Criterion<cpu::ThreadCpu>) {
    gram_step_group::<f32>(c, "f32");
}

fn growth(c: &mut Criterion<cpu::ThreadCpu>) {
    let mut group = c.benchmark_group("growth_h");
    group.sample_size(10);
    let d = 128;
    for h in [128, 256, 512, 1024, 2048] {
        let mut rng = StdRng::seed_from_u64(2);
        let (a, b) = (
            bilinear::<f64>(&mut rng, d, h, 1.0),
            bilinear(&mut rng, d, h, 1.0),
        );
        let g = gaussian(&mut rng, d + 1, d + 1, 0.1);
        let (mut ws, mut out) = (GramWorkspace::new(), DMatrix::zeros(0, 0));
        group.bench_function(BenchmarkId::from_parameter(h), |bench| {
            bench.iter(|| ws.step(&a, &b, black_box(&g), &mut out).expect("valid"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("growth_d");
    group.sample_size(10);
    let h = 1024;
    for d in [64, 128, 256, 512] {
        let mut rng = StdRng::seed_from_u64(3);
        let (a, b) = (
            bilinear::<f64>(&mut rng, d, h, 1.0),
            bilinear(&mut rng, d, h, 1.0),
        );
        let g = gaussian(&mut rng, d + 1, d + 1, 0.1);
        let (mut ws, mut out) = (GramWorkspace::new(), DMatrix::zeros(0, 0));
        group.bench_function(BenchmarkId::from_parameter(d), |bench| {
            bench.iter(|| ws.step(&a, &b, black_box(&g), &mut out).expect("valid"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("growth_depth");
    group.sample_size(10);
    let metric = TensorSimilarity::new();
    for depth in [1, 2, 4, 8, 16] {
        let mut rng = StdRng::seed_from_u64(4);
        let (a, b) = (
            model::<f64>(&mut rng, 64, 256, depth),
            model(&mut rng, 64, 256, depth),
        );
        group.bench_function(BenchmarkId::from_parameter(depth), |bench| {
            bench.iter(|| metric.similarity(black_box(&a), &b).expect("comparable"))
        });
    }
    group.finish();
}

fn whole_model(c: &mut Criterion<cpu::ThreadCpu>) {
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    let metric = TensorSimilarity::new();
    let mut rng = StdRng::seed_from_u64(5);
    let (d, h, depth) = (256, 1024, 4);
    let (a, b) = (
        model::<f64>(&mut rng, d, h, depth),
        model(&mut rng, d, h, depth),
    );
    let id = format!("{d}x{h}x{depth}");
    group.bench_function(BenchmarkId::new("inner_product", &id), |bench| {
        bench.iter(|| metric.inner_product(black_box(&a), &b).expect("comparable"))
    });
    group.bench_function(BenchmarkId::new("squared_norm", &id), |bench| {
        bench.iter(|| metric.squared_norm(black_box(&a)).expect("valid"))
    });
    group.bench_function(BenchmarkId::new("similarity", &id), |bench| {
        bench.iter(|| metric.similarity(black_box(&a), &b).expect("comparable"))
    });
    let (a32, b32) = (
        model::<f32>(&mut rng, d, h, depth),
        model(&mut rng, d, h, depth),
    );
    group.bench_function(BenchmarkId::new("similarity_f32", &id), |bench| {
        bench.iter(|| {
            metric
                .similarity(black_box(&a32), &b32)
                .expect("comparable")
        })
    });
    group.finish();
}

fn matrix(c: &mut Criterion) {
    let mut group = c.benchmark_group("matrix");
    group.sample_size(10);
    let metric = TensorSimilarity::new();
    let mut rng = StdRng::seed_from_u64(6);
    let models: Vec<Model> = (0..32).map(|_| model(&mut rng, 64, 256, 2)).collect();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        group.bench_function(BenchmarkId::new("32x64x256x2", threads), |bench| {
            bench.iter(|| {
                pool.install(|| similarity_matrix(&metric, black_box(&models), || {}))
                    .expect("comparable")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = single_threaded;
    config = Criterion::default().with_measurement(cpu::ThreadCpu);
    targets = gram_step_f64, gram_step_f32, whole_model, growth
}
criterion_group!(parallel, matrix);

fn main() {
    // The single-threaded benches measure this thread's CPU time, and the
    // kernel runs its panels on rayon's pool: make this thread the whole
    // global pool, so that they run here. (`matrix` builds its own pools.)
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build_global()
        .expect("the global rayon pool is built once, first");
    single_threaded();
    parallel();
    Criterion::default().configure_from_args().final_summary();
    report::print();
}

#[path = "cpu.rs"]
mod cpu;

/// Reads criterion's estimates back and prints the tables of
/// `docs/performance.md`.
mod report {
    use std::path::PathBuf;

    fn root() -> PathBuf {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return home.into();
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("criterion")
    }

    /// The median of a benchmark in milliseconds, if it ran.
    pub fn median_ms(path: &str) -> Option<f64> {
        let text = std::fs::read_to_string(root().join(path).join("new/estimates.json")).ok()?;
        let rest = &text[text.find("\"median\"")?..];
        let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse::<f64>().ok().map(|ns| ns * 1e-6)
    }

    fn cell(x: Option<f64>) -> String {
        x.map_or("—".into(), |v| format!("{v:.3}"))
    }

    fn ratio(a: Option<f64>, b: Option<f64>) -> String {
        match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "—".into(),
        }
    }

    pub fn print() {
        println!("\n## Gram step (medians, ms)\n");
        println!(
            "| type | d × h | step | GEMMs | step/GEMMs | self | self/step | residual s=0.5 | untiled | untiled/step |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for ty in ["f64", "f32"] {
            for (d, h) in super::SIZES {
                let at = |f: &str| median_ms(&format!("gram_step_{ty}/{f}/{d}x{h}"));
                let (step, gemms, own, res, untiled) = (
                    at("step"),
                    at("gemms"),
                    at("self"),
                    at("residual"),
                    at("untiled"),
                );
                println!(
                    "| {ty} | {d} × {h} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(step),
                    cell(gemms),
                    ratio(step, gemms),
                    cell(own),
                    ratio(own, step),
                    cell(res),
                    cell(untiled),
                    ratio(untiled, step),
                );
            }
        }
        println!("\n## Whole model, 256 × 1024, depth 4 (+ embedding and head; ms)\n");
        for f in [
            "inner_product",
            "squared_norm",
            "similarity",
            "similarity_f32",
        ] {
            println!(
                "- {f}: {}",
                cell(median_ms(&format!("model/{f}/256x1024x4")))
            );
        }
        println!("\n## Growth (ms)\n");
        let series = growth_series();
        for (name, points) in &series {
            let row: Vec<String> = points
                .iter()
                .map(|(x, t)| format!("{x}: {}", cell(*t)))
                .collect();
            println!("- {name}: {}", row.join(", "));
        }
        println!("\n## 32-checkpoint matrix (64 × 256, depth 2; ms)\n");
        let one = median_ms("matrix/32x64x256x2/1");
        let two = median_ms("matrix/32x64x256x2/2");
        println!(
            "- 1 thread: {}, 2 threads: {}, speed-up {}",
            cell(one),
            cell(two),
            ratio(one, two)
        );
        #[cfg(feature = "cli")]
        match super::plot::growth(&root().join("growth.png"), &series) {
            Ok(()) => println!("\nplot: {}", root().join("growth.png").display()),
            Err(e) => println!("\nplot failed: {e}"),
        }
    }

    pub type Series = Vec<(&'static str, Vec<(usize, Option<f64>)>)>;

    pub fn growth_series() -> Series {
        let at = |group: &str, xs: &[usize]| -> Vec<(usize, Option<f64>)> {
            xs.iter()
                .map(|&x| (x, median_ms(&format!("{group}/{x}"))))
                .collect()
        };
        vec![
            (
                "step vs h (d = 128)",
                at("growth_h", &[128, 256, 512, 1024, 2048]),
            ),
            ("step vs d (h = 1024)", at("growth_d", &[64, 128, 256, 512])),
            (
                "similarity vs depth (64 × 256)",
                at("growth_depth", &[1, 2, 4, 8, 16]),
            ),
        ]
    }
}

/// Log–log plots of the growth series: `log₂ x` against `log₁₀ t`, labelled
/// with the values themselves.
#[cfg(feature = "cli")]
mod plot {
    use plotters::prelude::*;

    use super::report::Series;

    pub fn growth(
        path: &std::path::Path,
        series: &Series,
    ) -> Result<(), Box<dyn std::error::Error>> {
        // The bitmap backend has no system fonts: register the one the CLI embeds.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let root = BitMapBackend::new(path, (1500, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, series.len()));
        for ((name, points), panel) in series.iter().zip(panels) {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|&(x, t)| t.map(|t| ((x as f64).log2(), t.log10())))
                .collect();
            if pts.len() < 2 {
                continue;
            }
            let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0);
            let (t0, t1) = pts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p.1), hi.max(p.1))
                });
            let mut chart = ChartBuilder::on(&panel)
                .caption(*name, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0 - 0.3..x1 + 0.3, (t0 - 0.2).floor()..(t1 + 0.2).ceil())?;
            let integer = |v: f64| (v - v.round()).abs() < 1e-9;
            chart
                .configure_mesh()
                .x_labels(((x1 - x0) * 4.0) as usize + 5)
                .y_labels((((t1 - t0) * 4.0) as usize + 5).min(20))
                .x_label_formatter(&|v| {
                    if integer(*v) {
                        format!("{}", 2f64.powf(*v).round())
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|v| {
                    if integer(*v) {
                        format!("{}", 10f64.powf(*v))
                    } else {
                        String::new()
                    }
                })
                .y_desc("median CPU time (ms)")
                .draw()?;
            chart.draw_series(std::iter::once(PathElement::new(
                pts.clone(),
                BLUE.stroke_width(2),
            )))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
        }
        root.present()?;
        Ok(())
    }
}
