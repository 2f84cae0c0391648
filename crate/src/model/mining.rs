//! Patch info mining (spec §2): each low-resolution CLIP token attends to the S x S pixels of its
//! own window of the high-resolution map; the result is added to the raw CLIP token.

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;

use super::layers::{LayerNorm, Linear};
use crate::ops::{self, Matrix};
use crate::error::Result;
use crate::weights::Loader;

const EPS: f64 = 1e-5; // PyTorch's LayerNorm default, used by the vlm_uni projectors

/// LayerNorm then Linear, as `vlm_uni_*_projector.{0,1}`.
#[derive(Clone)]
struct Projector {
    norm: LayerNorm,
    linear: Linear,
}

impl Projector {
    fn load(w: &mut Loader, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Projector {
            norm: LayerNorm::load(w, &format!("{prefix}.0"), d_in, EPS)?,
            linear: Linear::load(w, &format!("{prefix}.1"), d_in, d_out, true)?,
        })
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear.forward(self.norm.forward(x))
    }
}

#[derive(Clone)]
pub struct PatchMining {
    query: Projector,
    key: Projector,
    value: Projector,
    /// (W_k ⊙ γ_k)ᵀ `[C_a, C_v]` in f32: the key side as the fast form reads it (`forward`).
    key_folded: Matrix,
}

/// The mined tokens and where each one looked.
pub struct Mined {
    /// T = X_L + R, `[n, C_v]`.
    pub tokens: Tensor<2>,
    /// Softmax weights over each token's window, `[n, S*S]` (row-major inside the window).
    pub attention: Tensor<2>,
}

impl PatchMining {
    /// `c_v`: CLIP width (queries and output); `c_a`: channels of the HR map.
    pub fn load(w: &mut Loader, c_v: usize, c_a: usize) -> Result<Self> {
        let key = Projector::load(w, "model.vlm_uni_aux_projector", c_a, c_v)?;
        let key_folded = Matrix::from_f32((key.linear.weight.to_f32() * key.norm.weight.clone().unsqueeze::<2>()).transpose());
        Ok(PatchMining {
            query: Projector::load(w, "model.vlm_uni_query_projector", c_v, c_v)?,
            key,
            value: Projector::load(w, "model.vlm_uni_val_projector", c_a, c_v)?,
            key_folded,
        })
    }

    /// Fast form (spec §2.2), exact up to rounding: the key and value projections are folded
    /// into the query side, so nothing is projected per HR pixel. With n_i the LayerNorm-
    /// normalised pixels: logits_i = ((W_kᵀ q) ⊙ γ_k) · n_i / sqrt(C_v) (the β_k and b_k terms
    /// are equal for every i and cancel in the softmax), and R = W_v(γ_v ⊙ Σ p_i n_i + β_v) + b_v.
    ///
    /// `lr`: CLIP tokens `[n, C_v]`; `windows`: each token's HR pixels `[n, S*S, C_a]`.
    pub fn forward(&self, lr: Tensor<2>, windows: Tensor<3>) -> Mined {
        let c_v = lr.dims()[1];
        let q = self.query.forward(lr.clone());
        let u = ops::linear(q, &self.key_folded, None); // q W_k ⊙ γ_k: [n, c_a]
        let (mean, attention) = ops::window_attention(windows, u, 1.0 / (c_v as f64).sqrt(), EPS);
        let v = &self.value;
        let r = v.linear.forward(mean * v.norm.weight.clone().unsqueeze::<2>() + v.norm.bias.clone().unsqueeze::<2>());
        Mined { tokens: lr + r, attention }
    }

    /// The direct form, as MGM's `unified_resampler` computes it: project every HR pixel to keys
    /// and values. Kept as the reference the fast form is tested against.
    pub fn forward_direct(&self, lr: Tensor<2>, windows: Tensor<3>) -> Mined {
        let [n, m, c_a] = windows.dims();
        let c_v = lr.dims()[1];
        let q = self.query.forward(lr.clone()).unsqueeze_dim::<3>(1); // [n, 1, c_v]
        let pixels = windows.reshape([n * m, c_a]);
        let k = self.key.forward(pixels.clone()).reshape([n, m, c_v]);
        let v = self.value.forward(pixels).reshape([n, m, c_v]);
        let p = softmax(q.matmul(k.swap_dims(1, 2)) / (c_v as f64).sqrt(), 2); // [n, 1, m]
        let r = p.clone().matmul(v).reshape([n, c_v]);
        Mined { tokens: lr + r, attention: p.reshape([n, m]) }
    }
}

/// Cuts channels-last HR rows into windows: `[rows, grid*S, C_a]` -> `[(rows/S)*grid, S*S, C_a]`,
/// token order n = row*grid + col, pixel order m = dy*S + dx (spec §2.1 step 6).
pub fn windows(hr: Tensor<3>, window: usize) -> Tensor<3> {
    let [h, w, c] = hr.dims();
    let (rows, cols) = (h / window, w / window);
    hr.reshape([rows, window, cols, window, c]).permute([0, 2, 1, 3, 4]).reshape([rows * cols, window * window, c])
}
