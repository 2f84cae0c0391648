//! Bilinear resizing of a channels-last map (align_corners false, no antialiasing): the LR view
//! of the image and the upsampled ConvNeXt stages.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use super::kernels;

/// `x` `[h, w, c]` -> `[size[0], size[1], c]`.
pub fn resize_bilinear(x: Tensor<3>, size: [usize; 2]) -> Tensor<3> {
    if super::uses_kernels(&x.device()) {
        return kernels::resize::launch(x, size);
    }
    reference::resize_bilinear(x, size)
}

pub mod reference {
    use super::*;

    pub fn resize_bilinear(x: Tensor<3>, size: [usize; 2]) -> Tensor<3> {
        let opts = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(size);
        interpolate(x.permute([2, 0, 1]).unsqueeze::<4>(), opts).squeeze_dim::<3>(0).permute([1, 2, 0])
    }
}
