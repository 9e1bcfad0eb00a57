//! Which vector width the attention sums' own arithmetic is compiled for,
//! chosen at run time: the baseline target compiles the traces, scaled
//! sums and copies around the small products to two-lane SSE2, so the
//! step (`step.rs`) and the Wick sums (`chain.rs`, `moments.rs`) run
//! copies compiled for AVX2 or AVX-512 where the CPU has them. No FMA: the
//! same operations in the same order, so the same bits at every width
//! (tested in `step.rs` and `chain.rs`).

/// Whether to run the sums' own arithmetic compiled for AVX2: where the CPU
/// has it, and tests have not forced a narrower width.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2() -> bool {
    #[cfg(test)]
    if LANES_AT_MOST.load(std::sync::atomic::Ordering::Relaxed) < 256 {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether the CPU also has AVX-512F (asked where [`avx2`] holds): the
/// Wick sums' own arithmetic in 512-bit lanes.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512() -> bool {
    #[cfg(test)]
    if LANES_AT_MOST.load(std::sync::atomic::Ordering::Relaxed) < 512 {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Tests run the narrower code on a machine with wider vectors by this
/// switch: the widest vector (bits) the sums may use; 128 is the baseline.
#[cfg(test)]
pub(super) static LANES_AT_MOST: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(512);
