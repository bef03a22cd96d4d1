//! The one GEMM every kernel calls, so that the choice of implementation
//! stays a measured one. Today it is the `gemm` crate (run-time dispatch to
//! AVX-512, AVX2 or NEON).

/// How a GEMM may use threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// On the calling thread only (inside a rayon task, say).
    Sequential,
    /// On rayon's current pool.
    Rayon,
}

/// How a matrix operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row-major as the product expects it: `A` is `m x k`, `B` is `k x n`.
    RowMajor,
    /// Stored transposed, row-major: `A` is stored `k x m`, `B` `n x k`.
    Transposed,
}

/// `C = A * B` (or `C += A * B` with `accumulate`), all row-major with `C`
/// `m x n`. `a` and `b` are laid out as `a_layout` / `b_layout` say.
///
/// # Panics
/// If a slice is shorter than its matrix (a bug in the calling kernel, which
/// validates user shapes first).
///
/// ```
/// use convnet_kernels::gemm::{sgemm, Layout, Parallelism};
/// let a = [1.0, 2.0, 3.0, 4.0]; // 2x2
/// let b = [1.0, 0.0, 0.0, 1.0];
/// let mut c = [0.0; 4];
/// sgemm(2, 2, 2, &a, Layout::RowMajor, &b, Layout::Transposed, &mut c, false, Parallelism::Sequential);
/// assert_eq!(c, a);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_layout: Layout,
    b: &[f32],
    b_layout: Layout,
    c: &mut [f32],
    accumulate: bool,
    par: Parallelism,
) {
    assert!(
        a.len() >= m * k,
        "sgemm: A has {} elements, needs {}x{}",
        a.len(),
        m,
        k
    );
    assert!(
        b.len() >= k * n,
        "sgemm: B has {} elements, needs {}x{}",
        b.len(),
        k,
        n
    );
    assert!(
        c.len() >= m * n,
        "sgemm: C has {} elements, needs {}x{}",
        c.len(),
        m,
        n
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = match a_layout {
        Layout::RowMajor => (k as isize, 1),
        Layout::Transposed => (1, m as isize),
    };
    let (b_rs, b_cs) = match b_layout {
        Layout::RowMajor => (n as isize, 1),
        Layout::Transposed => (1, k as isize),
    };
    let parallelism = match par {
        Parallelism::Sequential => gemm::Parallelism::None,
        Parallelism::Rayon => {
            if rayon::current_num_threads() > 1 {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            }
        }
    };
    // SAFETY: the asserts above guarantee every index the strides reach lies
    // inside its slice; `c` is borrowed mutably, so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `C = A * B` on the calling thread, with `A` (`m x k`) read from rows
/// `lda` apart in `a` (a window of a larger row-major matrix, or of an
/// image: consecutive pixels of a row are a patch's taps), `B` (`k x n`)
/// and `C` (`m x n`) contiguous and row-major. `k == 0` gives zeros.
///
/// # Panics
/// If a slice is shorter than its matrix or `lda < k` (a bug in the
/// calling kernel).
pub(crate) fn sgemm_lda(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    c: &mut [f32],
) {
    assert!(
        lda >= k && (m == 0 || k == 0 || a.len() >= (m - 1) * lda + k),
        "sgemm_lda: A has {} elements, needs {m}x{k} with rows {lda} apart",
        a.len()
    );
    assert!(
        b.len() >= k * n && c.len() >= m * n,
        "sgemm_lda: B or C too short"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    // SAFETY: the asserts above guarantee that row `i < m`, column `p < k`
    // of A (offset `i * lda + p`), every element of B and of C's `m x n`
    // lie inside their slices; `c` is borrowed mutably, so nothing aliases
    // it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], at: bool, b: &[f32], bt: bool) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let x = if at { a[p * m + i] } else { a[i * k + p] };
                    let y = if bt { b[j * k + p] } else { b[p * n + j] };
                    s += x as f64 * y as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn strided_rows_match_naive() {
        let (m, k, n, lda) = (9, 6, 5, 11);
        let a: Vec<f32> = (0..(m - 1) * lda + k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let dense: Vec<f32> = (0..m)
            .flat_map(|i| a[i * lda..i * lda + k].to_vec())
            .collect();
        let want = naive(m, k, n, &dense, false, &b, false);
        let mut c = vec![f32::NAN; m * n];
        sgemm_lda(m, k, n, &a, lda, &b, &mut c);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        sgemm_lda(m, 0, n, &a, lda, &b, &mut c);
        assert!(c.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn all_layouts_match_naive() {
        let (m, k, n) = (37, 19, 23);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
            let la = if at {
                Layout::Transposed
            } else {
                Layout::RowMajor
            };
            let lb = if bt {
                Layout::Transposed
            } else {
                Layout::RowMajor
            };
            let want = naive(m, k, n, &a, at, &b, bt);
            for par in [Parallelism::Sequential, Parallelism::Rayon] {
                let mut c = vec![1.0; m * n];
                sgemm(m, k, n, &a, la, &b, lb, &mut c, false, par);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "{at} {bt}: {x} vs {y}");
                }
                sgemm(m, k, n, &a, la, &b, lb, &mut c, true, par);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 2.0 * y).abs() < 2e-4);
                }
            }
        }
    }
}
