//! Building blocks shared by the model parts: Linear, LayerNorm and the row-blocked embedding.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::ops::{self, Act, Matrix};
use crate::weights::{block_rows, Loader};

/// y = x Wᵀ + b, with W as stored, `[out, in]`.
#[derive(Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    /// Loads `{prefix}.weight` `[d_out, d_in]` and, when `bias`, `{prefix}.bias`.
    pub fn load(w: &mut Loader, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Ok(Linear {
            weight: w.get_matrix(&format!("{prefix}.weight"), [d_out, d_in])?,
            bias: if bias { Some(w.get(&format!("{prefix}.bias"), [d_out])?) } else { None },
        })
    }

    /// Several projections of the same input as one (q, k and v): outputs side by side.
    pub fn stack(parts: Vec<Linear>) -> Linear {
        let bias = parts.iter().all(|p| p.bias.is_some()).then(|| Tensor::cat(parts.iter().map(|p| p.bias.clone().unwrap()).collect(), 0));
        Linear { weight: Matrix::stack(parts.into_iter().map(|p| p.weight).collect()), bias }
    }

    /// `[n, d_in]` -> `[n, d_out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// act(x Wᵀ + b).
    pub fn forward_act(&self, x: Tensor<2>, act: Act) -> Tensor<2> {
        ops::linear_act(x, &self.weight, self.bias.as_ref(), act)
    }

    /// residual + x Wᵀ + b.
    pub fn forward_add(&self, x: Tensor<2>, residual: Tensor<2>) -> Tensor<2> {
        ops::linear_add(x, &self.weight, self.bias.as_ref(), residual)
    }
}

/// A `[rows, dim]` table: token lookups and the tied LM head.
#[derive(Clone)]
pub struct Embedding {
    pub table: Matrix,
}

impl Embedding {
    /// Read in the converter's row blocks (at most 64 MiB of f32 each).
    pub fn load(w: &mut Loader, name: &str, rows: usize, dim: usize) -> Result<Self> {
        let step = block_rows(rows, dim);
        let blocks = (0..rows).step_by(step).map(|start| w.get_rows(name, [rows, dim], start..(start + step).min(rows))).collect::<Result<_>>()?;
        Ok(Embedding { table: Matrix::stack(blocks) })
    }

    /// Rows `ids` in order, times `scale`: `[n, dim]`.
    pub fn lookup(&self, ids: &[u32], scale: f32) -> Tensor<2> {
        self.table.rows_f32(ids, scale)
    }

    /// x Eᵀ: `[n, dim]` -> `[n, rows]` (the tied LM head).
    pub fn project(&self, x: Tensor<2>) -> Tensor<2> {
        ops::linear(x, &self.table, None)
    }
}

/// LayerNorm over the last dimension, with affine weight and bias.
#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both `[dim]`.
    pub fn load(w: &mut Loader, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm { weight: w.get(&format!("{prefix}.weight"), [dim])?, bias: w.get(&format!("{prefix}.bias"), [dim])?, eps })
    }

    /// Over the last dimension of `[rows, dim]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A convolution whose stride equals its kernel (patch embeddings, ConvNeXt's stem and
/// downsampling): a matmul over non-overlapping patches. Weight rows are reordered at load from
/// PyTorch's `[out, in, k, k]` to `[out, (k, k, in)]`, the order patches are read in.
#[derive(Clone)]
pub struct PatchConv {
    pub linear: Linear,
    pub k: usize,
}

impl PatchConv {
    pub fn load(w: &mut Loader, prefix: &str, c_in: usize, c_out: usize, k: usize, bias: bool) -> Result<Self> {
        let weight: Tensor<4> = w.get(&format!("{prefix}.weight"), [c_out, c_in, k, k])?;
        let weight = Matrix::from_f32(weight.permute([0, 2, 3, 1]).reshape([c_out, k * k * c_in]));
        let bias = if bias { Some(w.get(&format!("{prefix}.bias"), [c_out])?) } else { None };
        Ok(PatchConv { linear: Linear { weight, bias }, k })
    }

    /// Channels-last `[h, w, c]` -> `[h / k, w / k, c_out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [h, w, c] = x.dims();
        let k = self.k;
        let (oh, ow) = (h / k, w / k);
        let patches = x.reshape([oh, k, ow, k, c]).permute([0, 2, 1, 3, 4]).reshape([oh * ow, k * k * c]);
        let y = self.linear.forward(patches);
        let c_out = y.dims()[1];
        y.reshape([oh, ow, c_out])
    }
}
