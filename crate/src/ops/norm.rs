//! RMSNorm and LayerNorm over the last dimension of `[rows, cols]`.

use burn::tensor::Tensor;

use super::kernels;

/// x / sqrt(mean(x²) + eps) * scale. (Gemma's scale is 1 + w; the caller adds the 1.)
pub fn rms_norm(x: Tensor<2>, scale: &Tensor<1>, eps: f64) -> Tensor<2> {
    if super::uses_kernels(&x.device()) {
        return kernels::norm::launch(x, scale, None, eps);
    }
    reference::rms_norm(x, scale, eps)
}

/// (x - mean) / sqrt(var + eps) * w + b.
pub fn layer_norm(x: Tensor<2>, w: &Tensor<1>, b: &Tensor<1>, eps: f64) -> Tensor<2> {
    if super::uses_kernels(&x.device()) {
        return kernels::norm::launch(x, w, Some(b), eps);
    }
    reference::layer_norm(x, w, b, eps)
}

pub mod reference {
    use burn::tensor::Tensor;

    pub fn rms_norm(x: Tensor<2>, scale: &Tensor<1>, eps: f64) -> Tensor<2> {
        let rms = x.clone().square().mean_dim(1).add_scalar(eps).sqrt();
        (x / rms) * scale.clone().unsqueeze::<2>()
    }

    pub fn layer_norm(x: Tensor<2>, w: &Tensor<1>, b: &Tensor<1>, eps: f64) -> Tensor<2> {
        burn::tensor::module::layer_norm(x, w.clone(), Some(b.clone()), eps)
    }
}
