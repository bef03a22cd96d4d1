//! Vectors of `f32` lanes, three ways: AVX-512F intrinsics (sixteen
//! lanes), AVX2+FMA intrinsics (eight), and plain arrays for any CPU
//! (eight). The direct kernels are written once over [`Lanes`] and
//! compiled for each; register blocks of these vectors stay in registers,
//! which auto-vectorised arrays of scalars did not (LLVM spilled them).
//! [`Isa`] picks one at run time.

/// Runs `$body` for `$i` = `0, 1, .., $n - 1` (`$n` a constant, at most
/// 16), written out one after the other: the register blocks index their
/// accumulators with `$i`, which must be constants for the accumulators to
/// stay in registers, and LLVM did not always unroll such loops itself.
macro_rules! unrolled {
    ($n:expr, |$i:ident| $body:block) => {{
        const { assert!($n <= 16) };
        unrolled!(@ $n, $i, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
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

/// Evaluates `$body` with `$c` a constant equal to the run-time value
/// `$v`, which must be one of the listed literals (anything else panics):
/// turns a block size known at run time into a const generic argument.
macro_rules! with_const {
    ($v:expr, [$($k:literal)*], |$c:ident| $body:expr) => {
        match $v {
            $(
                $k => {
                    const $c: usize = $k;
                    $body
                }
            )*
            other => unreachable!("no block of size {other}"),
        }
    };
}
pub(super) use with_const;

/// A vector of [`Lanes::N`] `f32` lanes.
pub(super) trait Lanes: Copy {
    /// Number of lanes.
    const N: usize;
    /// All lanes zero.
    fn zero() -> Self;
    /// All lanes `x`.
    fn splat(x: f32) -> Self;
    /// The `N` values of `s` from `at`.
    ///
    /// # Safety
    /// `at + N <= s.len()`.
    unsafe fn load(s: &[f32], at: usize) -> Self;
    /// Stores the lanes into `d[..N]` (panics when `d` is shorter).
    fn store(self, d: &mut [f32]);
    /// Stores the lanes into `d[at..at + N]`.
    ///
    /// # Safety
    /// `at + N <= d.len()`.
    unsafe fn store_at(self, d: &mut [f32], at: usize);
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

/// Which build of the direct kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    /// [`Avx512`]: sixteen lanes (with Rust 1.89 or newer: see
    /// `build.rs`).
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    Avx512,
    /// [`Avx2`]: eight lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// [`Portable`].
    Portable,
}

impl Isa {
    /// The widest build this CPU runs, or [`Isa::Portable`] when `simd`
    /// is false.
    pub(super) fn detect(simd: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            #[cfg(avx512_intrinsics)]
            if simd && is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if simd && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        let _ = simd;
        Isa::Portable
    }

    /// Every build this CPU runs (the tests compare them).
    #[cfg(test)]
    pub(super) fn available() -> Vec<Self> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Isa::Avx2);
            }
            #[cfg(avx512_intrinsics)]
            if is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
        }
        out
    }

    /// Lanes per vector.
    pub(super) fn lanes(self) -> usize {
        match self {
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Isa::Avx512 => Avx512::N,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Avx2::N,
            Isa::Portable => Portable::N,
        }
    }
}

/// The portable lanes: plain multiply and add, any CPU.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; 8]);

impl Lanes for Portable {
    const N: usize = 8;
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    unsafe fn load(s: &[f32], at: usize) -> Self {
        debug_assert!(at + 8 <= s.len());
        // SAFETY: the caller guarantees the eight values are in `s`.
        Portable(unsafe { *(s.as_ptr().add(at) as *const [f32; 8]) })
    }
    #[inline(always)]
    fn store(self, d: &mut [f32]) {
        d[..8].copy_from_slice(&self.0);
    }
    #[inline(always)]
    unsafe fn store_at(self, d: &mut [f32], at: usize) {
        debug_assert!(at + 8 <= d.len());
        // SAFETY: the caller guarantees the eight values are in `d`.
        unsafe { *(d.as_mut_ptr().add(at) as *mut [f32; 8]) = self.0 };
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
pub(super) use x86::Avx2;
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
pub(super) use x86::Avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// AVX2+FMA lanes.
    ///
    /// Only code reached through a `#[target_feature(enable = "avx2,fma")]`
    /// function, itself called only after `is_x86_feature_detected!` found
    /// both features, may use this type: that is what makes the intrinsics
    /// below sound. The kernels keep to it (see `direct.rs`).
    #[derive(Clone, Copy)]
    pub(in crate::conv) struct Avx2(__m256);

    // SAFETY (every `unsafe` block below): the CPU has AVX2 and FMA (see
    // the type's documentation), and every pointer is to eight `f32`s
    // inside a slice (checked, or guaranteed by the caller of `load`).
    impl Lanes for Avx2 {
        const N: usize = 8;
        #[inline(always)]
        fn zero() -> Self {
            Avx2(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Avx2(unsafe { _mm256_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(s: &[f32], at: usize) -> Self {
            debug_assert!(at + 8 <= s.len());
            Avx2(unsafe { _mm256_loadu_ps(s.as_ptr().add(at)) })
        }
        #[inline(always)]
        fn store(self, d: &mut [f32]) {
            let d = &mut d[..8];
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        unsafe fn store_at(self, d: &mut [f32], at: usize) {
            debug_assert!(at + 8 <= d.len());
            unsafe { _mm256_storeu_ps(d.as_mut_ptr().add(at), self.0) }
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

    #[cfg(avx512_intrinsics)]
    pub(in crate::conv) use avx512::Avx512;

    /// AVX-512F lanes, in a module of their own: the intrinsics are stable
    /// since Rust 1.89, newer than the workspace's `rust-version`, and only
    /// compiled when `build.rs` found such a compiler.
    #[cfg(avx512_intrinsics)]
    #[allow(clippy::incompatible_msrv)]
    mod avx512 {
        use std::arch::x86_64::*;

        use super::Lanes;

        /// AVX-512F lanes.
        ///
        /// Only code reached through a `#[target_feature(enable = "avx512f")]`
        /// function, itself called only after `is_x86_feature_detected!` found
        /// the feature, may use this type: that is what makes the intrinsics
        /// below sound. The kernels keep to it (see `direct.rs`).
        #[derive(Clone, Copy)]
        pub(in crate::conv) struct Avx512(__m512);

        // SAFETY (every `unsafe` block below): the CPU has AVX-512F (see the
        // type's documentation), and every pointer is to sixteen `f32`s inside
        // a slice (checked, or guaranteed by the caller of `load`).
        impl Lanes for Avx512 {
            const N: usize = 16;
            #[inline(always)]
            fn zero() -> Self {
                Avx512(unsafe { _mm512_setzero_ps() })
            }
            #[inline(always)]
            fn splat(x: f32) -> Self {
                Avx512(unsafe { _mm512_set1_ps(x) })
            }
            #[inline(always)]
            unsafe fn load(s: &[f32], at: usize) -> Self {
                debug_assert!(at + 16 <= s.len());
                Avx512(unsafe { _mm512_loadu_ps(s.as_ptr().add(at)) })
            }
            #[inline(always)]
            fn store(self, d: &mut [f32]) {
                let d = &mut d[..16];
                unsafe { _mm512_storeu_ps(d.as_mut_ptr(), self.0) }
            }
            #[inline(always)]
            unsafe fn store_at(self, d: &mut [f32], at: usize) {
                debug_assert!(at + 16 <= d.len());
                unsafe { _mm512_storeu_ps(d.as_mut_ptr().add(at), self.0) }
            }
            #[inline(always)]
            fn mul_add(self, b: Self, c: Self) -> Self {
                Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
            }
            #[inline(always)]
            fn add(self, b: Self) -> Self {
                Avx512(unsafe { _mm512_add_ps(self.0, b.0) })
            }
            #[inline(always)]
            fn relu(self) -> Self {
                // vmaxps returns the second operand when either is NaN.
                Avx512(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
            }
            #[inline(always)]
            fn isolated<T>(body: impl FnOnce() -> T) -> T {
                // SAFETY: the CPU has AVX-512F (see the type's documentation).
                unsafe { isolated_avx512(body) }
            }
        }

        /// `body()` in a function of its own, with AVX-512F enabled.
        ///
        /// # Safety
        /// The CPU must have AVX-512F.
        #[inline(never)]
        #[target_feature(enable = "avx512f")]
        unsafe fn isolated_avx512<T>(body: impl FnOnce() -> T) -> T {
            body()
        }
    }
}
