//! Eight `f32` lanes, two ways: AVX2+FMA intrinsics, and plain arrays for
//! any CPU. The direct kernel is written once over [`F32x8`] and compiled
//! for each; register blocks of these vectors stay in registers, which
//! auto-vectorised arrays of scalars did not (LLVM spilled them).

/// Runs `$body` for `$i` = `0, 1, .., $n - 1` (`$n` a constant, at most
/// 8), written out one after the other: the register blocks index their
/// accumulators with `$i`, which must be constants for the accumulators to
/// stay in registers, and LLVM did not always unroll such loops itself.
macro_rules! unrolled {
    ($n:expr, |$i:ident| $body:block) => {{
        const { assert!($n <= 8) };
        unrolled!(@ $n, $i, $body, 0 1 2 3 4 5 6 7)
    }};
    (@ $n:expr, $i:ident, $body:block, $($k:literal)*) => {{
        $(
            if $k < $n {
                let $i: usize = $k;
                $body
            }
        )*
    }};
}
pub(super) use unrolled;

/// Eight `f32` lanes.
pub(super) trait F32x8: Copy {
    /// All lanes zero.
    fn zero() -> Self;
    /// All lanes `x`.
    fn splat(x: f32) -> Self;
    /// Load eight values.
    fn load(s: &[f32; 8]) -> Self;
    /// Store the lanes.
    fn store(self, d: &mut [f32; 8]);
    /// `self * b + c` (fused where the CPU has FMA).
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise sum.
    fn add(self, b: Self) -> Self;
    /// Lane-wise `max(self, 0)`, zero for NaN as `f32::max(x, 0.0)`.
    fn relu(self) -> Self;
    /// Runs `body` in a function of its own, compiled for these lanes'
    /// target features: a register block written with these lanes gets a
    /// small function to itself, where LLVM keeps its accumulators in
    /// registers (inlined into one large caller, it spilled them).
    fn isolated<T>(body: impl FnOnce() -> T) -> T;
}

/// The portable lanes: plain multiply and add, any CPU.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; 8]);

impl F32x8 for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    fn load(s: &[f32; 8]) -> Self {
        Portable(*s)
    }
    #[inline(always)]
    fn store(self, d: &mut [f32; 8]) {
        *d = self.0;
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
    #[inline(always)]
    fn relu(self) -> Self {
        Portable(self.0.map(|v| v.max(0.0)))
    }
    #[inline(never)]
    fn isolated<T>(body: impl FnOnce() -> T) -> T {
        body()
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::F32x8;

    /// AVX2+FMA lanes.
    ///
    /// Only code reached through a `#[target_feature(enable = "avx2,fma")]`
    /// function, itself called only after `is_x86_feature_detected!` found
    /// both features, may use this type: that is what makes the intrinsics
    /// below sound. The kernels keep to it (see `direct.rs`).
    #[derive(Clone, Copy)]
    pub(in crate::conv) struct Avx2(__m256);

    // SAFETY (every `unsafe` block below): the CPU has AVX2 and FMA (see
    // the type's documentation), and every pointer comes from a reference
    // to exactly eight `f32`s.
    impl F32x8 for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            Avx2(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Avx2(unsafe { _mm256_set1_ps(x) })
        }
        #[inline(always)]
        fn load(s: &[f32; 8]) -> Self {
            Avx2(unsafe { _mm256_loadu_ps(s.as_ptr()) })
        }
        #[inline(always)]
        fn store(self, d: &mut [f32; 8]) {
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Avx2(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Avx2(unsafe { _mm256_add_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // maxps returns the second operand when either is NaN.
            Avx2(unsafe { _mm256_max_ps(self.0, _mm256_setzero_ps()) })
        }
        #[inline(always)]
        fn isolated<T>(body: impl FnOnce() -> T) -> T {
            // SAFETY: the CPU has AVX2 and FMA (see the type's
            // documentation).
            unsafe { isolated_avx2(body) }
        }
    }

    /// `body()` in a function of its own, with AVX2 and FMA enabled.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn isolated_avx2<T>(body: impl FnOnce() -> T) -> T {
        body()
    }
}
