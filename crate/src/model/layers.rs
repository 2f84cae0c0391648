//! Building blocks shared by every model part: Linear, LayerNorm and the row-blocked embedding.

use burn::tensor::activation::softmax;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Bool, DType, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::error::Result;
use crate::weights::Loader;

/// y = x Wᵀ + b, with W kept as stored, `[out, in]` (K-contiguous, the layout quantized
/// matmuls want).
pub struct Linear {
    pub weight: Tensor<2>,
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

    /// `[.., d_in]` -> `[.., d_out]`. A quantized weight is read packed for one row (decode, bound
    /// by bytes read); for several rows (prefill) it is dequantized into a temporary first, as
    /// llama.cpp does for batches: Burn's q4 kernel is 8x slower than its f32 one there
    /// (README, "Benchmarks").
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rows: usize = x.dims()[..D - 1].iter().product();
        let weight = match self.weight.dtype() {
            DType::QFloat(_) if rows > 1 => self.weight.clone().dequantize(),
            _ => self.weight.clone(),
        };
        burn::tensor::module::linear(x, weight.transpose(), self.bias.clone())
    }
}

/// Largest block of an embedding matrix on the device. WebGPU's default
/// maxStorageBufferBindingSize is 128 MiB and Gemma's table is 2 GiB in f32, so it is kept as
/// row blocks of at most this size.
pub const BLOCK_BYTES: usize = 64 << 20;

/// Rows of a `[rows, cols]` table per block: at most [`BLOCK_BYTES`] of f32. The converter
/// splits the embedding at the same rows, so each block is one upload.
pub fn block_rows(rows: usize, cols: usize) -> usize {
    (BLOCK_BYTES / (cols * 4)).clamp(1, rows.max(1))
}

/// A `[rows, dim]` table stored as row blocks; serves lookups and the tied LM head.
pub struct Embedding {
    pub blocks: Vec<Tensor<2>>,
    pub rows_per_block: usize,
    pub rows: usize,
}

impl Embedding {
    pub fn load(w: &mut Loader, name: &str, rows: usize, dim: usize) -> Result<Self> {
        let rows_per_block = block_rows(rows, dim);
        let mut blocks = Vec::new();
        for start in (0..rows).step_by(rows_per_block) {
            blocks.push(w.get_rows(name, [rows, dim], start..(start + rows_per_block).min(rows))?);
        }
        Ok(Embedding { blocks, rows_per_block, rows })
    }

    /// Rows `ids` in order: `[n, dim]`. Each block serves its own ids; one final select
    /// restores the request order.
    pub fn lookup(&self, ids: &[u32]) -> Tensor<2> {
        let device = self.blocks[0].device();
        let index = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device)
        };
        let mut parts = Vec::new();
        let mut order = Vec::with_capacity(ids.len());
        for (b, block) in self.blocks.iter().enumerate() {
            let (pos, local): (Vec<usize>, Vec<i64>) = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| **id as usize / self.rows_per_block == b)
                .map(|(pos, id)| (pos, (*id as usize % self.rows_per_block) as i64))
                .unzip();
            if !local.is_empty() {
                order.extend(pos);
                parts.push(gather(block, index(local)));
            }
        }
        if order.iter().enumerate().all(|(k, pos)| k == *pos) {
            return Tensor::cat(parts, 0);
        }
        // `order[k]` is the request position of gathered row k; invert it.
        let mut inverse = vec![0i64; ids.len()];
        for (k, pos) in order.into_iter().enumerate() {
            inverse[pos] = k as i64;
        }
        Tensor::cat(parts, 0).select(0, index(inverse))
    }

    /// x Eᵀ: `[n, dim]` -> `[n, rows]` (the tied LM head).
    pub fn project(&self, x: Tensor<2>) -> Tensor<2> {
        let parts = self.blocks.iter().map(|b| x.clone().matmul(b.clone().transpose())).collect();
        Tensor::cat(parts, 1)
    }
}

/// Rows `rows` of one table block, as f32. A quantized block is read through a one-hot matmul,
/// which dequantizes inside the kernel and only reads the packed block; `select` would make Burn
/// dequantize the whole block into a temporary first (64 MiB per decoded token).
fn gather(block: &Tensor<2>, rows: Tensor<1, Int>) -> Tensor<2> {
    if !matches!(block.dtype(), DType::QFloat(_)) {
        return block.clone().select(0, rows);
    }
    let (n, device) = (rows.dims()[0], block.device());
    let one_hot = Tensor::<2>::zeros([n, block.dims()[0]], &device).scatter(1, rows.reshape([n, 1]), Tensor::ones([n, 1], &device), IndexingUpdateOp::Add);
    one_hot.matmul(block.clone())
}

/// LayerNorm over the last dimension, with affine weight and bias.
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

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.clone(), Some(self.bias.clone()), self.eps)
    }
}

/// A 2-D convolution with PyTorch's weight layout `[out, in / groups, kh, kw]`.
pub struct Conv2d {
    pub weight: Tensor<4>,
    pub bias: Option<Tensor<1>>,
    pub options: ConvOptions<2>,
}

impl Conv2d {
    /// Square kernel `k`, stride `stride`, padding `pad`; `groups == c_in` is depthwise.
    #[allow(clippy::too_many_arguments)]
    pub fn load(w: &mut Loader, prefix: &str, c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize, groups: usize, bias: bool) -> Result<Self> {
        Ok(Conv2d {
            weight: w.get(&format!("{prefix}.weight"), [c_out, c_in / groups, k, k])?,
            bias: if bias { Some(w.get(&format!("{prefix}.bias"), [c_out])?) } else { None },
            options: ConvOptions::new([stride, stride], [pad, pad], [1, 1], groups),
        })
    }

    /// `[b, c_in, h, w]` -> `[b, c_out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        burn::tensor::module::conv2d(x, self.weight.clone(), self.bias.clone(), self.options.clone())
    }
}

/// softmax(q kᵀ / sqrt(d) + mask) v over `[b, heads, n, d]`; `mask` is true where a query must
/// not look.
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<4> {
    let d = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
    let scores = match mask {
        Some(m) => scores.mask_fill(m, f32::NEG_INFINITY),
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}
