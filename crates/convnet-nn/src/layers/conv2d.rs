use std::sync::Mutex;

use convnet_autograd::ops::{Epilogue, Precision};
use convnet_autograd::Var;
use convnet_kernels::Padding;
use convnet_tensor::{Rng, Tensor};
use rayon::prelude::*;

use crate::layer::{shape_error, single_input, MaxPoolWindow};
use crate::{Activation, ForwardCtx, Layer, LayerCore, Result, Weight};

/// Keras's `Conv2D`: a 2-D convolution with `filters` kernels of
/// `kernel_size`, weights `kernel` `(kh, kw, in, filters)` (Glorot uniform)
/// and `bias` `(filters,)` (zeros). A ReLU activation is fused into the
/// convolution.
///
/// ```
/// use convnet_nn::{Activation, layers::Conv2D};
/// let conv = Conv2D::new(32, (3, 3)).activation(Activation::Relu);
/// ```
#[derive(Debug, Clone)]
pub struct Conv2D {
    core: LayerCore,
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    activation: Activation,
    use_bias: bool,
    folds: FoldCache,
}

/// The last kernel and bias [`Conv2D::folded`] made, with what they were
/// made from. While a layer's weights and the normalisation after it stay
/// the same (a frozen base, predict), they are reused: InceptionV3 up to
/// mixed7 otherwise refolded 35 MB of kernels in every forward pass, on one
/// core while the other waited (5 ms per batch of 32).
///
/// The cache holds the kernel and bias tensors themselves, so their buffers
/// cannot be freed and reused while cached, and any change to them
/// (optimizer steps, `set_weights`) copies them first: a buffer that is
/// still the cached one has not changed.
#[derive(Default)]
struct FoldCache(Mutex<Option<Folded>>);

struct Folded {
    kernel: Tensor,
    bias: Option<Tensor>,
    scale: Vec<u32>,
    shift: Vec<u32>,
    w: Tensor,
    b: Tensor,
}

impl Clone for FoldCache {
    /// A clone starts empty.
    fn clone(&self) -> Self {
        FoldCache::default()
    }
}

impl std::fmt::Debug for FoldCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FoldCache")
    }
}

/// The same buffer, with the same shape.
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.array().as_ptr() == b.array().as_ptr() && a.shape() == b.shape()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Output pixels per task of the parallel bias and activation pass after
/// a pooled 1x1 convolution.
const EPILOGUE_ROWS_PER_TASK: usize = 256;

impl Conv2D {
    /// The kernel and bias with a per-channel `* scale + shift` folded in:
    /// `conv(x, W) * s + t == conv(x, W * s) + (b * s + t)`, channel by
    /// channel (the kernel is HWIO: the output channel is innermost).
    /// Reused from the last call when nothing changed ([`FoldCache`]).
    fn folded(&self, params: &[Var], scale: &[f32], shift: &[f32]) -> Result<(Tensor, Tensor)> {
        let kernel = params[0].value();
        let bias = params.get(1).map(Var::value);
        let (scale_bits, shift_bits) = (bits(scale), bits(shift));
        let mut cache = self.folds.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref() {
            let same_bias = match (&c.bias, bias) {
                (None, None) => true,
                (Some(a), Some(b)) => same_tensor(a, b),
                _ => false,
            };
            if same_tensor(&c.kernel, kernel)
                && same_bias
                && c.scale == scale_bits
                && c.shift == shift_bits
            {
                return Ok((c.w.clone(), c.b.clone()));
            }
        }
        let (w, b) = self.fold(params, scale, shift)?;
        *cache = Some(Folded {
            kernel: kernel.clone(),
            bias: bias.cloned(),
            scale: scale_bits,
            shift: shift_bits,
            w: w.clone(),
            b: b.clone(),
        });
        Ok((w, b))
    }

    /// [`Conv2D::folded`] computed.
    fn fold(&self, params: &[Var], scale: &[f32], shift: &[f32]) -> Result<(Tensor, Tensor)> {
        let f = self.filters;
        let kernel = params[0].value();
        let mut w = kernel.values().into_owned();
        for row in w.chunks_exact_mut(f) {
            row.iter_mut().zip(scale).for_each(|(v, s)| *v *= s);
        }
        let bias: Vec<f32> = match params.get(1) {
            Some(b) => b
                .value()
                .values()
                .iter()
                .zip(scale)
                .zip(shift)
                .map(|((b, s), t)| b * s + t)
                .collect(),
            None => shift.to_vec(),
        };
        Ok((
            Tensor::from_vec(kernel.shape(), w)?,
            Tensor::from_vec(&[f], bias)?,
        ))
    }

    /// `filters` kernels of `kernel_size`, stride 1, `valid` padding, no
    /// activation, with a bias.
    pub fn new(filters: usize, kernel_size: (usize, usize)) -> Self {
        Conv2D {
            core: LayerCore::new(None),
            filters,
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            activation: Activation::Linear,
            use_bias: true,
            folds: FoldCache::default(),
        }
    }

    /// Strides.
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.strides = strides;
        self
    }

    /// Padding (`Valid` or `Same`).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias.
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Layer for Conv2D {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Conv2D"
    }

    fn name_prefix(&self) -> &'static str {
        "conv2d"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<usize>> {
        let shape = single_input(self, input_shapes)?;
        let &[h, w, c] = shape else {
            return Err(shape_error(
                self,
                input_shapes,
                "Conv2D expects (height, width, channels) inputs",
            ));
        };
        if self.filters == 0 {
            return Err(shape_error(self, input_shapes, "filters must be positive"));
        }
        let (kh, kw) = self.kernel_size;
        let (_, oh, ow) = self
            .padding
            .resolve("Conv2D", (h, w), (kh, kw), self.strides)
            .map_err(|e| shape_error(self, input_shapes, &e.to_string()))?;
        let mut weights = vec![Weight::trainable(
            "kernel",
            Tensor::glorot_uniform(&[kh, kw, c, self.filters], rng),
        )];
        if self.use_bias {
            weights.push(Weight::trainable("bias", Tensor::zeros(&[self.filters])));
        }
        self.core.weights = weights;
        Ok(vec![oh, ow, self.filters])
    }

    fn forward_scaled(
        &self,
        input: &Var,
        params: &[Var],
        scale: &[f32],
        shift: &[f32],
        relu: bool,
        pool: Option<MaxPoolWindow>,
        precision: Precision,
    ) -> Option<Result<Var>> {
        let f = self.filters;
        if self.activation != Activation::Linear
            || params.iter().any(Var::requires_grad)
            || scale.len() != f
            || shift.len() != f
        {
            return None;
        }
        let folded = self.folded(params, scale, shift);
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        Some(folded.and_then(|(w, b)| {
            let (w, b) = (Var::constant(w), Var::constant(b));
            Ok(match pool {
                Some(window) => input.conv2d_max_pool(
                    &w,
                    Some(&b),
                    (self.strides, self.padding),
                    epilogue,
                    window,
                )?,
                None => input.conv2d_with(
                    &w,
                    Some(&b),
                    self.strides,
                    self.padding,
                    epilogue,
                    precision,
                )?,
            })
        }))
    }

    fn forward_avg_pooled_scaled(
        &self,
        input: &Var,
        params: &[Var],
        window: MaxPoolWindow,
        scale: &[f32],
        shift: &[f32],
        relu: bool,
        precision: Precision,
    ) -> Option<Result<Var>> {
        let f = self.filters;
        let pointwise = self.kernel_size == (1, 1)
            && self.strides == (1, 1)
            && matches!(self.padding, Padding::Valid | Padding::Same);
        if !pointwise
            || self.activation != Activation::Linear
            || input.requires_grad()
            || params.iter().any(Var::requires_grad)
            || scale.len() != f
            || shift.len() != f
        {
            return None;
        }
        let run = || -> Result<Var> {
            let (w, b) = self.folded(params, scale, shift)?;
            // avg(x) (*) W + b == avg(x (*) W) + b for a 1x1 stride-1 W.
            let y = input
                .conv2d_with(
                    &Var::constant(w),
                    None,
                    (1, 1),
                    Padding::Valid,
                    Epilogue::None,
                    precision,
                )?
                .avg_pool2d(window.0, window.1, window.2)?;
            // Bias and activation in one parallel pass into a buffer
            // written once.
            let (y_values, b) = (y.value().values(), b.values());
            let len = y_values.len();
            let mut v: Vec<f32> = Vec::with_capacity(len);
            if f > 0 {
                v.spare_capacity_mut()[..len]
                    .par_chunks_mut(f * EPILOGUE_ROWS_PER_TASK)
                    .zip(y_values.par_chunks(f * EPILOGUE_ROWS_PER_TASK))
                    .for_each(|(dst, src)| {
                        for (d, s) in dst.chunks_mut(f).zip(src.chunks(f)) {
                            for ((d, &x), &b) in d.iter_mut().zip(s).zip(b.iter()) {
                                let x = x + b;
                                d.write(if relu { x.max(0.0) } else { x });
                            }
                        }
                    });
                // SAFETY: the chunks cover all `len` elements, each written
                // once above (a row is at most `f` long, as long as the
                // bias).
                unsafe { v.set_len(len) };
            }
            Ok(Var::constant(Tensor::from_vec(y.shape(), v)?))
        };
        Some(run())
    }

    fn forward_max_pooled(
        &self,
        input: &Var,
        params: &[Var],
        window: MaxPoolWindow,
    ) -> Option<Result<Var>> {
        let epilogue = match self.activation {
            Activation::Relu => Epilogue::Relu,
            Activation::Linear => Epilogue::None,
            _ => return None,
        };
        Some(
            input
                .conv2d_max_pool(
                    &params[0],
                    params.get(1),
                    (self.strides, self.padding),
                    epilogue,
                    window,
                )
                .map_err(Into::into),
        )
    }

    fn forward(&self, inputs: &[Var], params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        let fused = self.activation == Activation::Relu;
        let y = inputs[0].conv2d(
            &params[0],
            params.get(1),
            self.strides,
            self.padding,
            if fused {
                Epilogue::Relu
            } else {
                Epilogue::None
            },
        )?;
        if fused {
            Ok(y)
        } else {
            self.activation.apply(&y)
        }
    }
}
