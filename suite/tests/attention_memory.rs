//! The attention step's peak allocation, on a counting allocator: what one
//! step holds at context 32 (small widths) against the library's own
//! estimate and against what the streamed step keeps (the head-pair
//! products `X` of every position pair, once, and the Gram matrices in and
//! out). The step as it stood before (every configuration pair's
//! contribution collected, `X` twice, `Y` and `Ỹ` of every pair) held about
//! twenty times this here.
//!
//! With `X` in tiles of one query position (what the step chooses for itself
//! once `X` would pass its budget, at research widths), the peak is within
//! twice the Gram states of the comparison's three products,
//! `3 n² (d+1)²` scalars.
//!
//! The Gaussian metric's step at context 16: with its covariance tables by
//! rows of one query position (and one key row beside them), the peak is
//! what it holds beside the step's moments (the heads' own pairs of both
//! models, two rows), a fraction of the whole tables'.
//!
//! One test in this binary: the allocator counts the whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use nalgebra::{DMatrix, DVector};
use tensor_similarity::block::{gram_step_in_tiles, moment_step_in_tiles};
use tensor_similarity::gaussian::{JointMoments, Moments};
use tensor_similarity::{Attention, Mask, TensorBlock};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn matrix(seed: usize, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |i, j| {
        let x = (seed * 7919 + i * 104_729 + j * 1_299_709) % 10_007;
        (x as f64 / 10_007.0 - 0.5) / (c as f64).sqrt()
    })
}

fn block(seed: usize, d: usize, heads: usize, e: usize) -> Attention {
    let w = |k: usize, r: usize| matrix(seed + k, r, d);
    Attention::builder(
        heads,
        w(0, heads * e),
        w(1, heads * e),
        w(2, heads * e),
        w(3, heads * e),
        w(4, heads * e),
        matrix(seed + 5, d, heads * e),
    )
    .q1_bias(DVector::from_element(heads * e, 0.1))
    .k2_bias(DVector::from_element(heads * e, -0.2))
    .rotary(10_000.0)
    .mask(Mask::Causal)
    .skip(1.0)
    .build()
    .unwrap()
}

/// Peak bytes allocated while `f` runs, above what was live before it.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = CURRENT.load(Relaxed);
    PEAK.store(before, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed) - before)
}

/// Context 32, stream 8, two heads of 4: two blocks, a cross Gram matrix
/// near the identity, a two-thread pool.
struct Case {
    n: usize,
    d: usize,
    heads: usize,
    e: usize,
    a: Attention,
    b: Attention,
    g: DMatrix<f64>,
    pool: rayon::ThreadPool,
}

fn case() -> Case {
    let (n, d, heads, e) = (32, 8, 2, 4);
    let (a, b) = (block(1, d, heads, e), block(11, d, heads, e));
    let flat = n * d + 1;
    let g = DMatrix::from_fn(flat, flat, |i, j| {
        if i == j {
            1.0
        } else {
            0.01 * matrix(3, flat, flat)[(i, j)]
        }
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    Case {
        n,
        d,
        heads,
        e,
        a,
        b,
        g,
        pool,
    }
}

#[test]
fn one_attention_step_of_each_metric() {
    holds_its_products_once(&case());
    in_tiles_within_twice_the_gram_states(&case());
    gaussian_tables_in_tiles(&case());
}

fn holds_its_products_once(case: &Case) {
    let Case {
        n,
        heads,
        e,
        ref a,
        ref b,
        ref g,
        ref pool,
        ..
    } = *case;
    let flat = g.nrows();
    for (name, other) in [("cross", Some(b)), ("self", None)] {
        let (out, peak) = peak_of(|| {
            pool.install(|| match other {
                Some(b) => a.gram_step(b, g, n),
                None => a.self_gram_step(g, n),
            })
        });
        let out = out.unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        let other = other.unwrap_or(a);
        let estimate = pool.install(|| a.gram_step_scalars(other, n)) * 8.0;
        // What the streamed step keeps: X of every position pair (five legs
        // of each head on both sides), the output and its symmetrised copy.
        let legs = (heads * 5 * e) as f64;
        let products = (n * n) as f64 * legs * legs * 8.0;
        let grams = 2.0 * (flat * flat) as f64 * 8.0;
        println!(
            "{name}: peak {:.1} MB, estimate {:.1} MB, products {:.1} MB, Gram matrices {:.1} MB",
            peak as f64 / 1e6,
            estimate / 1e6,
            products / 1e6,
            grams / 1e6
        );
        assert!(
            (peak as f64) <= estimate,
            "{name}: peak {peak} bytes above the estimate {estimate}"
        );
        assert!(
            (peak as f64) <= 1.5 * (products + grams),
            "{name}: peak {peak} bytes, more than 1.5 × the products held once and the Gram matrices ({})",
            products + grams
        );
    }
}

/// One step at context 32 with `X` made one query row at a time (and one key
/// row beside it): within twice the three products' Gram states.
fn in_tiles_within_twice_the_gram_states(case: &Case) {
    let Case {
        n,
        d,
        ref a,
        ref b,
        ref g,
        ref pool,
        ..
    } = *case;
    let bound = 2.0 * 3.0 * (n * n * (d + 1) * (d + 1)) as f64 * 8.0;
    for (name, other) in [("cross", Some(b)), ("self", None)] {
        let whole = pool
            .install(|| gram_step_in_tiles(a, other, g, n, n))
            .unwrap();
        let (tiled, peak) = peak_of(|| pool.install(|| gram_step_in_tiles(a, other, g, n, 1)));
        assert_eq!(tiled.unwrap(), whole, "{name}: tiles change no bit");
        println!(
            "{name}, tiles of one query: peak {:.2} MB, twice the Gram states {:.2} MB",
            peak as f64 / 1e6,
            bound / 1e6
        );
        assert!(
            (peak as f64) <= bound,
            "{name}: peak {peak} bytes above twice the Gram states ({bound})"
        );
    }
}

/// Joint moments of both models' streams on `n` positions, every position
/// correlated with every other (as after an attention layer).
fn joint_moments(n: usize, d: usize) -> JointMoments<f64> {
    let f = matrix(5, 2 * n * d, 2 * n * d);
    let c = &f * f.transpose();
    let flat = n * d + 1;
    let padded = |r: usize, col: usize| {
        let mut m = DMatrix::zeros(flat, flat);
        m.view_mut((1, 1), (n * d, n * d))
            .copy_from(&c.view((r, col), (n * d, n * d)));
        m
    };
    let mean = |seed: usize| {
        let mut m = matrix(seed, flat, 1).column(0).into_owned();
        m[0] = 1.0;
        m
    };
    let side = |seed: usize, at: usize| Moments::new(mean(seed), padded(at, at), n).unwrap();
    JointMoments::new(side(6, 0), side(7, n * d), padded(0, n * d)).unwrap()
}

/// The Gaussian step at context 16 with its tables by rows of one query
/// position: the same bits as whole, and a peak within 1.5 × what it holds
/// at once beside the moments (the heads' own tables of both models, two
/// rows of the cross tables), below half the whole tables' peak.
fn gaussian_tables_in_tiles(case: &Case) {
    let Case {
        d,
        heads,
        e,
        ref a,
        ref b,
        ref pool,
        ..
    } = *case;
    let n = 16;
    let input = joint_moments(n, d);
    let (whole, whole_peak) =
        peak_of(|| pool.install(|| moment_step_in_tiles(a, Some(b), &input, n)));
    let whole = whole.unwrap();
    let (tiled, peak) = peak_of(|| pool.install(|| moment_step_in_tiles(a, Some(b), &input, 1)));
    assert_eq!(tiled.unwrap(), whole, "tiles change no bit");
    // Leg rows per head (four e-wide, one value), one item per position
    // pair: every head pair's forms and the input tables.
    let legs = (5 * e) as f64;
    let item = (heads * heads) as f64 * legs * legs + 2.0 * (heads * d) as f64 * legs;
    let own = (n * (n + 1) / 2 * heads) as f64 * legs * legs;
    let rows = 2.0 * n as f64 * item;
    let flat = (n * d + 1) as f64;
    let moments = 2.0 * 3.0 * flat * flat;
    let held = (2.0 * own + rows + moments) * 8.0;
    println!(
        "Gaussian, context {n}: whole {:.2} MB, tiles of one query {:.2} MB, held {:.2} MB",
        whole_peak as f64 / 1e6,
        peak as f64 / 1e6,
        held / 1e6
    );
    assert!(
        (peak as f64) <= 1.5 * held,
        "peak {peak} bytes, more than 1.5 × the tables and moments held ({held})"
    );
    assert!(
        2 * peak <= whole_peak,
        "tiles of one: {peak} bytes, not half the whole tables' {whole_peak}"
    );
}
