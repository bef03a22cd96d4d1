//! Elementwise arithmetic with broadcasting. Backward sums the gradient over
//! the broadcast axes, back to each input's shape.

use convnet_tensor::{Result, Tensor};

use crate::{Backward, Var};

/// Sum `g` down to `shape` (the inverse of broadcasting `shape` up to `g`'s).
pub(crate) fn reduce_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let extra = g.rank() - shape.len();
    let mut axes: Vec<usize> = (0..extra).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[extra + i] != 1 {
            axes.push(extra + i);
        }
    }
    g.sum_axes(&axes, false)?.reshape(shape)
}

#[derive(Clone, Copy)]
enum Kind {
    Add,
    Sub,
    Mul,
}

struct Binary {
    kind: Kind,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    /// The operands, saved for `mul` only.
    saved: Option<(Tensor, Tensor)>,
}

impl Binary {
    fn saved(&self) -> Result<&(Tensor, Tensor)> {
        self.saved
            .as_ref()
            .ok_or_else(|| convnet_tensor::TensorError::invalid("mul", "operands were not saved"))
    }
}

impl Backward for Binary {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Add => "add",
            Kind::Sub => "sub",
            Kind::Mul => "mul",
        }
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let ga = if needs[0] {
            let full = match self.kind {
                Kind::Add | Kind::Sub => g.clone(),
                Kind::Mul => g.mul(&self.saved()?.1)?,
            };
            Some(reduce_to_shape(&full, &self.a_shape)?)
        } else {
            None
        };
        let gb = if needs[1] {
            let full = match self.kind {
                Kind::Add => g.clone(),
                Kind::Sub => g.mul_scalar(-1.0),
                Kind::Mul => g.mul(&self.saved()?.0)?,
            };
            Some(reduce_to_shape(&full, &self.b_shape)?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

struct Scale(f32);

impl Backward for Scale {
    fn name(&self) -> &'static str {
        "mul_scalar"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul_scalar(self.0))])
    }
}

struct Shift;

impl Backward for Shift {
    fn name(&self) -> &'static str {
        "add_scalar"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

impl Var {
    fn binary(&self, other: &Var, kind: Kind) -> Result<Var> {
        let (a, b) = (self.value(), other.value());
        let value = match kind {
            Kind::Add => a.add(b)?,
            Kind::Sub => a.sub(b)?,
            Kind::Mul => a.mul(b)?,
        };
        let needs_values = matches!(kind, Kind::Mul);
        let name = match kind {
            Kind::Add => "add",
            Kind::Sub => "sub",
            Kind::Mul => "mul",
        };
        Var::from_op(name, &[self, other], value, || Binary {
            kind,
            a_shape: a.shape().to_vec(),
            b_shape: b.shape().to_vec(),
            saved: needs_values.then(|| (a.clone(), b.clone())),
        })
    }

    /// `self + other`, broadcasting (Keras's `Add` layer, bias addition).
    pub fn add(&self, other: &Var) -> Result<Var> {
        self.binary(other, Kind::Add)
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Var) -> Result<Var> {
        self.binary(other, Kind::Sub)
    }

    /// `self * other` elementwise, broadcasting.
    pub fn mul(&self, other: &Var) -> Result<Var> {
        self.binary(other, Kind::Mul)
    }

    /// `self * s` for a constant `s`.
    pub fn mul_scalar(&self, s: f32) -> Result<Var> {
        Var::from_op("mul_scalar", &[self], self.value().mul_scalar(s), || {
            Scale(s)
        })
    }

    /// `self + s` for a constant `s`.
    pub fn add_scalar(&self, s: f32) -> Result<Var> {
        Var::from_op("add_scalar", &[self], self.value().add_scalar(s), || Shift)
    }
}
