//! Depthwise convolution on a channels-last map.

use burn::tensor::Tensor;

use super::kernels;

/// `x` `[h, w, c]`, `weight` `[k, k, c]`, `bias` `[c]`: stride 1, zero padding k / 2.
pub fn depthwise_conv(x: Tensor<3>, weight: &Tensor<3>, bias: &Tensor<1>) -> Tensor<3> {
    if super::uses_kernels(&x.device()) {
        return kernels::conv::launch(x, weight, bias);
    }
    reference::depthwise_conv(x, weight, bias)
}

pub mod reference {
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Tensor;

    pub fn depthwise_conv(x: Tensor<3>, weight: &Tensor<3>, bias: &Tensor<1>) -> Tensor<3> {
        let [k, _, c] = weight.dims();
        let w = weight.clone().permute([2, 0, 1]).reshape([c, 1, k, k]);
        let x = x.permute([2, 0, 1]).unsqueeze::<4>();
        let y = burn::tensor::module::conv2d(x, w, Some(bias.clone()), ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], c));
        y.squeeze_dim::<3>(0).permute([1, 2, 0])
    }
}
