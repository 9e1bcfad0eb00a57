//! Which vector width the attention sums' own arithmetic is compiled for,
//! chosen at run time: the baseline target compiles the traces, scaled
//! sums and copies around the small products to two-lane SSE2, so the
//! step (`step.rs`) and the Wick sums (`chain.rs`, `moments.rs`) run
//! copies compiled for AVX2 or AVX-512 where the CPU has them. No FMA: the
//! same operations in the same order, so the same bits at every width
//! (tested in `step.rs` and `chain.rs`).

/// Whether to run the sums' own arithmetic compiled for AVX2: where the CPU
/// has it, and tests allow 256-bit vectors.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2() -> bool {
    allowed(256) && std::arch::is_x86_feature_detected!("avx2")
}

/// Whether the CPU also has AVX-512F (asked where [`avx2`] holds), and
/// tests allow 512-bit vectors: the Wick sums' own arithmetic in 512-bit
/// lanes.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512() -> bool {
    allowed(512) && std::arch::is_x86_feature_detected!("avx512f")
}

/// Whether vectors of `bits` may be used: always, but in tests that ask
/// for narrower ones ([`LANES_AT_MOST`]).
#[cfg(target_arch = "x86_64")]
fn allowed(bits: usize) -> bool {
    #[cfg(test)]
    return LANES_AT_MOST.load(std::sync::atomic::Ordering::Relaxed) >= bits;
    #[cfg(not(test))]
    {
        let _ = bits;
        true
    }
}

/// Tests run the narrower code on a machine with wider vectors by this
/// switch: the widest vector (bits) the sums may use; 128 is the baseline.
#[cfg(test)]
pub(super) static LANES_AT_MOST: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(512);
