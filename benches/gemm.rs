//! The GEMM engines on the recursion's shapes (see `docs/performance.md`,
//! "GEMM engine"): nalgebra's `gemm` (matrixmultiply) against faer's
//! `matmul` (the crate's engine, `src/linalg.rs`), one thread, on the four
//! products of a bilinear step `d → d` with hidden width `h`:
//!
//! * `Y = U G`: `2h × (d+1) × (d+1)`
//! * `X = Y Uᵀ`: `2h × (d+1) × 2h` (the kernel computes it by tiles of
//!   `2·256` rows; `X_tile` is that shape, `512 × (d+1) × h`)
//! * `Z = D H`: `(d+1) × h × h`
//! * `G' = Z Dᵀ`: `(d+1) × h × (d+1)`
//!
//! at `(d, h) ∈ {(64, 256), (256, 1024), (512, 2048)}`, f64 and f32, with
//! preallocated outputs; faer reads nalgebra's column-major storage in place
//! (transposed operands by strides, as the crate does). Time is the CPU time
//! of the benchmarking thread. `main` prints the GFLOP/s table after the run.
//!
//! `cargo bench --bench gemm -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use faer::{Accum, MatMut, MatRef, Par};
use nalgebra::{DMatrix, Scalar};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "cpu.rs"]
mod cpu;

const SIZES: [(usize, usize); 3] = [(64, 256), (256, 1024), (512, 2048)];

/// `(name, m, k, n, b transposed)` of each product at `(d, h)`.
fn shapes(d: usize, h: usize) -> [(&'static str, usize, usize, usize, bool); 6] {
    let w = d + 1;
    [
        ("Y", 2 * h, w, w, false),
        ("X", 2 * h, w, 2 * h, true),
        ("X_tile", 512.min(2 * h), w, h, true),
        // The same with `B` stored `k × n` (the kernel's copy of `U_Bᵀ`).
        ("X_tile_kn", 512.min(2 * h), w, h, false),
        ("Z", w, h, h, false),
        ("G'", w, h, w, true),
    ]
}

trait Engine: Scalar + Copy + faer::traits::ComplexField + nalgebra::RealField {
    const NAME: &'static str;
}
impl Engine for f64 {
    const NAME: &'static str = "f64";
}
impl Engine for f32 {
    const NAME: &'static str = "f32";
}

fn random<T: Engine>(rng: &mut StdRng, rows: usize, cols: usize) -> DMatrix<T> {
    DMatrix::from_fn(rows, cols, |_, _| {
        nalgebra::convert(rng.random::<f64>() - 0.5)
    })
}

fn faer_ref<T: Engine>(m: &DMatrix<T>, transpose: bool) -> MatRef<'_, T> {
    let r = MatRef::from_column_major_slice(m.as_slice(), m.nrows(), m.ncols());
    if transpose { r.transpose() } else { r }
}

fn faer_mut<T: Engine>(m: &mut DMatrix<T>) -> MatMut<'_, T> {
    let (rows, cols) = m.shape();
    MatMut::from_column_major_slice_mut(m.as_mut_slice(), rows, cols)
}

fn bench_type<T: Engine>(c: &mut Criterion<cpu::ThreadCpu>) {
    let mut group = c.benchmark_group(format!("gemm_{}", T::NAME));
    group.sample_size(10);
    let mut rng = StdRng::seed_from_u64(11);
    for (d, h) in SIZES {
        for (name, m, k, n, bt) in shapes(d, h) {
            let a = random::<T>(&mut rng, m, k);
            // B as the kernel holds it: `n × k` read transposed, or `k × n`.
            let b = if bt {
                random::<T>(&mut rng, n, k)
            } else {
                random::<T>(&mut rng, k, n)
            };
            let mut out = DMatrix::<T>::zeros(m, n);
            let id =
                |engine: &str| BenchmarkId::new(format!("{engine}/{name}"), format!("{d}x{h}"));
            group.bench_function(id("nalgebra"), |bench| {
                // A transposed operand as a strided view, as the kernel
                // passes it.
                let bv = if bt {
                    nalgebra::DMatrixView::from_slice_with_strides_generic(
                        b.as_slice(),
                        nalgebra::Dyn(k),
                        nalgebra::Dyn(n),
                        nalgebra::Dyn(n),
                        nalgebra::Dyn(1),
                    )
                } else {
                    b.as_view()
                };
                bench.iter(|| {
                    out.gemm(T::one(), &a, &bv, T::zero());
                    black_box(&out);
                })
            });
            group.bench_function(id("faer"), |bench| {
                bench.iter(|| {
                    faer::linalg::matmul::matmul(
                        faer_mut(&mut out),
                        Accum::Replace,
                        faer_ref(&a, false),
                        faer_ref(&b, bt),
                        T::one(),
                        Par::Seq,
                    );
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .with_measurement(cpu::ThreadCpu)
        .configure_from_args();
    bench_type::<f64>(&mut c);
    bench_type::<f32>(&mut c);
    c.final_summary();
    report();
}

/// The table of docs/performance.md: GFLOP/s of each engine and the ratio.
fn report() {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    let median_s = |path: String| -> Option<f64> {
        let text = std::fs::read_to_string(root.join(path).join("new/estimates.json")).ok()?;
        let rest = &text[text.find("\"median\"")?..];
        let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse::<f64>().ok().map(|ns| ns * 1e-9)
    };
    println!("\n## GEMM engines, one thread (median GFLOP/s)\n");
    println!("| type | d × h | product | m × k × n | nalgebra | faer | faer/nalgebra |");
    println!("|---|---|---|---|---|---|---|");
    for ty in ["f64", "f32"] {
        for (d, h) in SIZES {
            for (name, m, k, n, _) in shapes(d, h) {
                let flops = 2.0 * (m * k * n) as f64 * 1e-9;
                let dir = |e: &str| format!("gemm_{ty}/{e}_{name}/{d}x{h}");
                let (na, fa) = (median_s(dir("nalgebra")), median_s(dir("faer")));
                let cell = |t: Option<f64>| t.map_or("—".into(), |t| format!("{:.1}", flops / t));
                let ratio = match (na, fa) {
                    (Some(n), Some(f)) => format!("{:.2}", n / f),
                    _ => "—".into(),
                };
                println!(
                    "| {ty} | {d} × {h} | {name} | {m} × {k} × {n} | {} | {} | {ratio} |",
                    cell(na),
                    cell(fa)
                );
            }
        }
    }
}
