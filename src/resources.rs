//! What a comparison will allocate, known before it allocates.
//!
//! A context length, a width or a head count may come from a user's flag or
//! a file. Every size derived from them is computed with checked arithmetic
//! ([`flat_width`], [`zeros`]), so that it is an [`Error::SizeOverflow`], never
//! a product that wraps and under-allocates a buffer that is then written.
//! And before a comparison starts, its peak memory is estimated from the
//! models' shapes ([`MemoryEstimate`]) and compared with a limit (what the
//! machine has, or what the user gives): a comparison that cannot finish is
//! refused at once with [`Error::MemoryLimit`], which names the estimate and
//! the largest context that fits, instead of growing until the operating
//! system kills it.
//!
//! Estimates are kept in `f64` bytes: they never overflow (an absurd size is
//! `inf`, which exceeds every limit), and they are estimates anyway. Since
//! every buffer a comparison allocates is smaller than the estimate, and the
//! limit is at most `isize::MAX` bytes, a comparison that passes the check
//! allocates nothing whose size wraps.

use nalgebra::DMatrix;

use crate::error::{Error, Result};
use crate::scalar::Real;

/// `n·w + 1`: the width of the flattened padded stream of `n` positions of
/// width `w` (one shared constant), checked.
pub(crate) fn flat_width(n: usize, w: usize) -> Result<usize> {
    n.checked_mul(w)
        .and_then(|x| x.checked_add(1))
        .ok_or_else(|| Error::SizeOverflow {
            what: format!("a stream of {n} positions of width {w}"),
        })
}

/// A `rows × cols` matrix of zeros, after checking that its size in bytes
/// fits in `isize` (nalgebra's own `rows * cols` is unchecked in release
/// builds).
pub(crate) fn zeros<T: Real>(rows: usize, cols: usize) -> Result<DMatrix<T>> {
    check_size::<T>(rows, cols)?;
    Ok(DMatrix::zeros(rows, cols))
}

/// [`Error::SizeOverflow`] unless a `rows × cols` matrix of `T` has a size
/// in bytes that fits in `isize`.
pub(crate) fn check_size<T>(rows: usize, cols: usize) -> Result<()> {
    rows.checked_mul(cols)
        .and_then(|k| k.checked_mul(size_of::<T>()))
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .map(|_| ())
        .ok_or_else(|| Error::SizeOverflow {
            what: format!("a {rows} × {cols} matrix"),
        })
}

/// The memory a comparison may use: a number of bytes, or what the machine
/// has ([`MemoryLimit::Machine`], the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemoryLimit {
    /// The machine's physical memory (on Linux, `MemTotal` of
    /// `/proc/meminfo`, or the control group's `memory.max` if lower);
    /// where it cannot be read, only the address space bounds it.
    #[default]
    Machine,
    /// At most this many bytes.
    Bytes(u64),
}

impl MemoryLimit {
    /// The limit in bytes, never above `isize::MAX` (no allocation can be
    /// larger), with a description for error messages.
    pub fn resolve(self) -> (f64, String) {
        let cap = isize::MAX as u64;
        match self {
            MemoryLimit::Bytes(b) => (
                b.min(cap) as f64,
                format!("the limit of {}", bytes(b as f64)),
            ),
            MemoryLimit::Machine => match machine_memory() {
                Some(b) => (
                    b.min(cap) as f64,
                    format!("this machine's {}", bytes(b as f64)),
                ),
                None => (cap as f64, "the address space".into()),
            },
        }
    }
}

/// The machine's physical memory in bytes, bounded by the control group's
/// limit where one is set; `None` where neither can be read. Read once per
/// process.
pub fn machine_memory() -> Option<u64> {
    static MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(read_machine_memory)
}

fn read_machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    // cgroup v2, then v1; "max" and absurd values mean no limit.
    let group = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    match (total, group) {
        (Some(t), Some(g)) => Some(t.min(g)),
        (t, g) => t.or(g),
    }
}

/// Bytes as a short human-readable size (`38.4 GB`).
pub(crate) fn bytes(b: f64) -> String {
    if !b.is_finite() || b >= 1e18 {
        return "more than an exabyte".into();
    }
    let (value, unit) = match b {
        b if b >= 1e12 => (b / 1e12, "TB"),
        b if b >= 1e9 => (b / 1e9, "GB"),
        b if b >= 1e6 => (b / 1e6, "MB"),
        b if b >= 1e3 => (b / 1e3, "kB"),
        b => (b, "B"),
    };
    format!("{value:.1} {unit}")
}

/// A comparison's estimated peak memory, as a function of the context
/// length: checked against a [`MemoryLimit`] before the work starts.
pub(crate) struct MemoryEstimate<F: Fn(usize) -> f64> {
    /// Estimated peak bytes at a context length.
    pub(crate) at: F,
}

impl<F: Fn(usize) -> f64> MemoryEstimate<F> {
    /// `Ok` if the comparison at context `n` fits under `limit`; else
    /// [`Error::MemoryLimit`] with the estimate and the largest context that
    /// fits (found by bisection: the estimate grows with `n`).
    pub(crate) fn check(&self, n: usize, limit: MemoryLimit) -> Result<()> {
        let (max, what) = limit.resolve();
        let need = self.with_slack(n);
        if need <= max {
            return Ok(());
        }
        let largest = largest_within(|n| self.with_slack(n), max, n);
        Err(Error::MemoryLimit {
            context: n,
            estimate: if need < 1e18 {
                format!("about {}", bytes(need))
            } else {
                bytes(need)
            },
            limit: what,
            largest_context: largest,
        })
    }
}

impl<F: Fn(usize) -> f64> MemoryEstimate<F> {
    /// The estimate with the allocator's slack (10 %) and the process's own
    /// memory (16 MiB: code, threads, the models): what the peak resident
    /// size will be. Measured against it in `docs/security.md`.
    fn with_slack(&self, n: usize) -> f64 {
        (self.at)(n) * 1.1 + (16 << 20) as f64
    }
}

/// The largest context below `n` at which `cost` (growing with the
/// context) is within `max`, by bisection; `None` if not even 1 is.
fn largest_within(cost: impl Fn(usize) -> f64, max: f64, n: usize) -> Option<usize> {
    if cost(1) > max {
        return None;
    }
    let (mut lo, mut hi) = (1usize, n);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if cost(mid) <= max { lo = mid } else { hi = mid }
    }
    Some(lo)
}

/// `Ok` if a comparison's estimated multiply–adds at context `n`
/// (`work(n)`, growing with `n`) are within `limit` (`None`: no limit);
/// else [`Error::WorkLimit`] with the largest context within it.
pub(crate) fn check_work(work: impl Fn(usize) -> f64, n: usize, limit: Option<f64>) -> Result<()> {
    let Some(max) = limit else { return Ok(()) };
    let estimate = work(n);
    if estimate <= max {
        return Ok(());
    }
    Err(Error::WorkLimit {
        context: n,
        estimate,
        limit: max,
        largest_context: largest_within(work, max, n),
    })
}

/// Bytes of `count` scalars of `T`, in `f64`.
pub(crate) fn scalars<T>(count: f64) -> f64 {
    count * size_of::<T>() as f64
}

/// `(n·a + 1)(n·b + 1)` in `f64`: the entries of a flattened cross Gram
/// matrix between streams of widths `a` and `b`.
pub(crate) fn flat_entries(n: usize, a: usize, b: usize) -> f64 {
    (n as f64 * a as f64 + 1.0) * (n as f64 * b as f64 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_widths_that_wrap_are_errors() {
        assert_eq!(flat_width(3, 4).unwrap(), 13);
        assert!(matches!(
            flat_width(1 << 60, 64),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            flat_width(usize::MAX, 1),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn matrices_whose_size_wraps_are_errors() {
        assert_eq!(zeros::<f64>(2, 3).unwrap().shape(), (2, 3));
        // 2³² × 2³² entries is 2⁶⁴: wraps to 0 unchecked.
        assert!(matches!(
            zeros::<f64>(1 << 32, 1 << 32),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            zeros::<f32>(usize::MAX, 2),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn the_largest_context_that_fits_is_found() {
        // 100 n² bytes (with 10 % slack and 16 MiB) against 16 MiB + 1.1 MB:
        // n = 100 fits exactly, 101 does not.
        let e = MemoryEstimate {
            at: |n: usize| 100.0 * (n as f64).powi(2),
        };
        let limit = MemoryLimit::Bytes((16 << 20) + 1_100_000);
        assert!(e.check(100, limit).is_ok());
        assert!(e.check(101, limit).is_err());
        match e.check(5000, limit) {
            Err(Error::MemoryLimit {
                largest_context,
                context,
                ..
            }) => {
                assert_eq!(largest_context, Some(100));
                assert_eq!(context, 5000);
            }
            other => panic!("expected a memory limit error, got {other:?}"),
        }
        // Nothing fits.
        match e.check(5, MemoryLimit::Bytes(10)) {
            Err(Error::MemoryLimit {
                largest_context, ..
            }) => assert_eq!(largest_context, None),
            other => panic!("expected a memory limit error, got {other:?}"),
        }
        // An infinite estimate never fits, and names no exabytes of digits.
        let inf = MemoryEstimate {
            at: |_| f64::INFINITY,
        };
        let e = inf.check(1 << 60, MemoryLimit::Machine).unwrap_err();
        assert!(e.to_string().contains("more than an exabyte"), "{e}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512.0), "512.0 B");
        assert_eq!(bytes(38.4e9), "38.4 GB");
        assert_eq!(bytes(f64::INFINITY), "more than an exabyte");
    }

    #[test]
    fn the_machine_has_some_memory() {
        // On Linux it is read; elsewhere the address space bounds it.
        let (limit, what) = MemoryLimit::Machine.resolve();
        assert!(
            limit > 0.0 && limit <= isize::MAX as f64,
            "{limit} ({what})"
        );
        if cfg!(target_os = "linux") {
            assert!(machine_memory().is_some_and(|b| b > 1 << 20));
        }
    }
}
