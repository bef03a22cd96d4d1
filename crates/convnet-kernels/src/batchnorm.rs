//! Batch normalisation over the last (channel) axis of a `(rows, c)` matrix
//! (NHWC flattened to `rows = n*h*w`).
//!
//! Statistics are accumulated in f64 over fixed blocks of rows, added in a
//! fixed order, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::{Result, TensorError};

/// Rows per block of the parallel reductions.
const BLOCK_ROWS: usize = 512;

/// Elements per parallel task of the elementwise passes.
const PAR_ELEMS: usize = 1 << 14;

fn check_params(op: &str, c: usize, pairs: &[(&str, Option<usize>)]) -> Result<()> {
    for &(what, len) in pairs {
        if let Some(len) = len {
            TensorError::check_len(op, what, &[c], len)?;
        }
    }
    Ok(())
}

/// `eps` must be finite and non-negative (Keras's `epsilon`).
fn check_eps(op: &str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(TensorError::invalid(
            op,
            format!("eps {eps} must be finite and non-negative"),
        ))
    }
}

/// Per-channel f64 sums over all rows of a `(rows, c)` matrix: `row(r, acc)`
/// adds row `r`'s terms into the `K` accumulators (each of length `c`).
/// Blocks of [`BLOCK_ROWS`] rows are summed separately (in parallel for
/// large inputs) and the block sums added in block order, so the result does
/// not depend on the thread count.
fn channel_sums<const K: usize>(
    rows: usize,
    c: usize,
    row: impl Fn(usize, &mut [Vec<f64>; K]) + Sync,
) -> [Vec<f64>; K] {
    let zeros = || std::array::from_fn::<Vec<f64>, K, _>(|_| vec![0.0; c]);
    let partial = |b: usize| {
        let mut acc = zeros();
        for r in b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(rows) {
            row(r, &mut acc);
        }
        acc
    };
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let partials: Vec<[Vec<f64>; K]> = if blocks > 4 {
        (0..blocks).into_par_iter().map(partial).collect()
    } else {
        (0..blocks).map(partial).collect()
    };
    let mut total = zeros();
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            t.iter_mut().zip(v).for_each(|(t, &v)| *t += v);
        }
    }
    total
}

/// `[sum(dy), sum(dy * xhat)]` per channel, in f64.
fn grad_sums(
    rows: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    inv: &[f64],
) -> [Vec<f64>; 2] {
    let mean: Vec<f64> = mean.iter().map(|&m| m as f64).collect();
    let [sum_dy, mut sum_dy_xc] = channel_sums::<2>(rows, c, |r, [a0, a1]| {
        let (xr, dr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        for ((((a0, a1), &d), &v), &m) in a0.iter_mut().zip(a1).zip(dr).zip(xr).zip(&mean) {
            let d = d as f64;
            *a0 += d;
            *a1 += d * (v as f64 - m);
        }
    });
    // sum(dy * (x - mean)) * inv = sum(dy * xhat).
    sum_dy_xc.iter_mut().zip(inv).for_each(|(s, &i)| *s *= i);
    [sum_dy, sum_dy_xc]
}

/// `y = x * scale + shift` per channel (`shift = beta - mean * scale`).
fn normalize(c: usize, x: &[f32], y: &mut [f32], scale: &[f32], shift: &[f32]) {
    rowwise(c, y, x, x, |yr, xr, _| {
        for ((o, &v), (&s, &t)) in yr.iter_mut().zip(xr).zip(scale.iter().zip(shift)) {
            *o = v * s + t;
        }
    });
}

/// `f(out row, a row, b row)` for every row of `(rows, c)` matrices, blocks
/// of rows in parallel for large inputs (each row's result is independent of
/// the split).
fn rowwise(
    c: usize,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) {
    let block = |((o, a), b): ((&mut [f32], &[f32]), &[f32])| {
        for ((o, a), b) in o.chunks_mut(c).zip(a.chunks(c)).zip(b.chunks(c)) {
            f(o, a, b);
        }
    };
    // Whole rows, about 16k elements per task.
    let len = c * (PAR_ELEMS / c).max(1);
    if out.len() < 2 * PAR_ELEMS {
        block(((out, a), b));
    } else {
        out.par_chunks_mut(len)
            .zip(a.par_chunks(len))
            .zip(b.par_chunks(len))
            .for_each(block);
    }
}

/// Training mode: normalise with the batch statistics. Writes `y`, the batch
/// `mean` and the *biased* batch `var` (both `(c,)`), which the caller uses
/// for the moving averages and the backward pass. `gamma`/`beta` absent mean
/// 1 and 0 (Keras's `scale=False` / `center=False`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    rows: usize,
    c: usize,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    var: &mut [f32],
) -> Result<()> {
    let op = "BatchNormalization";
    TensorError::check_len(op, "input", &[rows, c], x.len())?;
    TensorError::check_len(op, "output", &[rows, c], y.len())?;
    check_params(
        op,
        c,
        &[
            ("gamma", gamma.map(<[f32]>::len)),
            ("beta", beta.map(<[f32]>::len)),
            ("mean", Some(mean.len())),
            ("variance", Some(var.len())),
        ],
    )?;
    check_eps(op, eps)?;
    if rows == 0 || c == 0 {
        return Err(TensorError::invalid_shape(
            op,
            &[rows, c],
            "batch normalisation of an empty batch",
        ));
    }
    // Two passes: the mean, then the centred second moment (accurate even
    // when |mean| >> std).
    let row = |r: usize| &x[r * c..(r + 1) * c];
    let [sums] = channel_sums::<1>(rows, c, |r, [acc]| {
        acc.iter_mut()
            .zip(row(r))
            .for_each(|(a, &v)| *a += v as f64);
    });
    let m: Vec<f64> = sums.iter().map(|s| s / rows as f64).collect();
    let [sq] = channel_sums::<1>(rows, c, |r, [acc]| {
        for ((a, &v), &m) in acc.iter_mut().zip(row(r)).zip(&m) {
            let d = v as f64 - m;
            *a += d * d;
        }
    });
    let mut scale = vec![0.0f32; c];
    let mut shift = vec![0.0f32; c];
    for ch in 0..c {
        let v = sq[ch] / rows as f64;
        mean[ch] = m[ch] as f32;
        var[ch] = v as f32;
        let inv = 1.0 / (v + eps as f64).sqrt();
        let g = gamma.map_or(1.0, |g| g[ch] as f64);
        let b = beta.map_or(0.0, |b| b[ch] as f64);
        scale[ch] = (g * inv) as f32;
        shift[ch] = (b - m[ch] * g * inv) as f32;
    }
    normalize(c, x, y, &scale, &shift);
    Ok(())
}

/// Inference mode: normalise with given (moving) statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_inference(
    rows: usize,
    c: usize,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
    y: &mut [f32],
) -> Result<()> {
    let op = "BatchNormalization";
    TensorError::check_len(op, "input", &[rows, c], x.len())?;
    TensorError::check_len(op, "output", &[rows, c], y.len())?;
    check_params(
        op,
        c,
        &[
            ("gamma", gamma.map(<[f32]>::len)),
            ("beta", beta.map(<[f32]>::len)),
            ("moving mean", Some(mean.len())),
            ("moving variance", Some(var.len())),
        ],
    )?;
    check_eps(op, eps)?;
    if c == 0 {
        return Ok(());
    }
    let (scale, shift) = inference_affine(gamma, beta, mean, var, eps);
    normalize(c, x, y, &scale, &shift);
    Ok(())
}

/// Inference-mode batch normalisation as the per-channel affine map it is,
/// `y = x * scale + shift`: `scale = gamma / sqrt(var + eps)`, `shift =
/// beta - mean * scale` (computed in f64). Lengths are those of `mean`;
/// the caller checks them.
pub fn inference_affine(
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let c = mean.len();
    let mut scale = vec![0.0f32; c];
    let mut shift = vec![0.0f32; c];
    for ch in 0..c {
        let inv = 1.0 / (var[ch] as f64 + eps as f64).sqrt();
        let g = gamma.map_or(1.0, |g| g[ch] as f64);
        let b = beta.map_or(0.0, |b| b[ch] as f64);
        scale[ch] = (g * inv) as f32;
        shift[ch] = (b - mean[ch] as f64 * g * inv) as f32;
    }
    (scale, shift)
}

/// Backward of the training-mode forward (statistics depend on `x`):
/// `dx = gamma inv_std / N (N dy - sum(dy) - xhat sum(dy xhat))`;
/// `dgamma = sum(dy xhat)`, `dbeta = sum(dy)` (`(c,)`), overwritten when
/// asked for.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_train(
    rows: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    gamma: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<()> {
    let op = "BatchNormalization backward";
    backward_checks(
        op,
        rows,
        c,
        [x, dy, dx],
        [gamma, dgamma.as_deref(), dbeta.as_deref()],
        mean,
        var,
        eps,
    )?;
    if c == 0 {
        return Ok(());
    }
    let inv: Vec<f64> = var
        .iter()
        .map(|&v| 1.0 / (v as f64 + eps as f64).sqrt())
        .collect();
    let [sum_dy, sum_dy_xhat] = grad_sums(rows, c, x, dy, mean, &inv);
    let n = rows as f64;
    // dx = k1 * dy + k2 * x + k3 per channel, with
    // k1 = g inv, k2 = -g inv^2 sum(dy xhat) / N, k3 = -g inv sum(dy)/N - k2 mean.
    let mut k1 = vec![0.0f32; c];
    let mut k2 = vec![0.0f32; c];
    let mut k3 = vec![0.0f32; c];
    for ch in 0..c {
        let g = gamma.map_or(1.0, |g| g[ch] as f64);
        let a = g * inv[ch];
        let b = -a * inv[ch] * sum_dy_xhat[ch] / n;
        k1[ch] = a as f32;
        k2[ch] = b as f32;
        k3[ch] = (-a * sum_dy[ch] / n - b * mean[ch] as f64) as f32;
    }
    rowwise(c, dx, dy, x, |dxr, dyr, xr| {
        for (((o, &d), &v), ((&k1, &k2), &k3)) in dxr
            .iter_mut()
            .zip(dyr)
            .zip(xr)
            .zip(k1.iter().zip(&k2).zip(&k3))
        {
            *o = k1 * d + k2 * v + k3;
        }
    });
    if let Some(dg) = dgamma {
        dg.iter_mut()
            .zip(&sum_dy_xhat)
            .for_each(|(o, &s)| *o = s as f32);
    }
    if let Some(db) = dbeta {
        db.iter_mut().zip(&sum_dy).for_each(|(o, &s)| *o = s as f32);
    }
    Ok(())
}

/// Checks every buffer of a backward pass (`[x, dy, dx]` and the optional
/// `[gamma, dgamma, dbeta]`) before anything is written.
#[allow(clippy::too_many_arguments)]
fn backward_checks(
    op: &str,
    rows: usize,
    c: usize,
    [x, dy, dx]: [&[f32]; 3],
    [gamma, dgamma, dbeta]: [Option<&[f32]>; 3],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> Result<()> {
    TensorError::check_len(op, "input", &[rows, c], x.len())?;
    TensorError::check_len(op, "output gradient", &[rows, c], dy.len())?;
    TensorError::check_len(op, "input gradient", &[rows, c], dx.len())?;
    check_params(
        op,
        c,
        &[
            ("gamma", gamma.map(<[f32]>::len)),
            ("mean", Some(mean.len())),
            ("variance", Some(var.len())),
            ("gamma gradient", dgamma.map(<[f32]>::len)),
            ("beta gradient", dbeta.map(<[f32]>::len)),
        ],
    )?;
    check_eps(op, eps)
}

/// Backward of the inference-mode forward (statistics are constants):
/// `dx = dy gamma inv_std`, `dgamma = sum(dy xhat)`, `dbeta = sum(dy)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_inference(
    rows: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    gamma: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<()> {
    let op = "BatchNormalization backward";
    backward_checks(
        op,
        rows,
        c,
        [x, dy, dx],
        [gamma, dgamma.as_deref(), dbeta.as_deref()],
        mean,
        var,
        eps,
    )?;
    if c == 0 {
        return Ok(());
    }
    let inv: Vec<f64> = var
        .iter()
        .map(|&v| 1.0 / (v as f64 + eps as f64).sqrt())
        .collect();
    let k: Vec<f32> = (0..c)
        .map(|ch| (gamma.map_or(1.0, |g| g[ch] as f64) * inv[ch]) as f32)
        .collect();
    rowwise(c, dx, dy, dy, |dxr, dyr, _| {
        for ((o, &d), &k) in dxr.iter_mut().zip(dyr).zip(&k) {
            *o = d * k;
        }
    });
    if dgamma.is_some() || dbeta.is_some() {
        let [sum_dy, sum_dy_xhat] = grad_sums(rows, c, x, dy, mean, &inv);
        if let Some(dg) = dgamma {
            dg.iter_mut()
                .zip(&sum_dy_xhat)
                .for_each(|(o, &s)| *o = s as f32);
        }
        if let Some(db) = dbeta {
            db.iter_mut().zip(&sum_dy).for_each(|(o, &s)| *o = s as f32);
        }
    }
    Ok(())
}
