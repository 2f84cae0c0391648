//! The one layer between the model's math and how it runs. Model files call these functions and
//! never look at dtypes or devices; here each op runs our CubeCL kernels on wgpu (WebGPU in the
//! browser, Vulkan/Metal/DX12 natively) and plain Burn ops on flex (the CPU), which is also the
//! reference every kernel is tested against (`tests/ops.rs`).

mod attention;
mod conv;
pub mod kernels;
mod matrix;
mod norm;
mod resize;

pub use attention::{attention, causal_self_attention, window_attention, Heads, KvCache, Rope};
pub use conv::depthwise_conv;
pub use matrix::{glu, linear, linear_act, linear_add, linear_scale_add, Act, After, Matrix};
pub use norm::{layer_norm, rms_norm};
pub use resize::resize_bilinear;

/// Plain-Burn versions of every op, for any device: what flex runs, and what the kernels are
/// compared with on wgpu itself.
pub mod reference {
    pub use super::attention::reference::{attention, causal_self_attention, window_attention};
    pub use super::conv::reference::depthwise_conv;
    pub use super::matrix::reference::{burn_quantized, epilogue, product};
    pub use super::norm::reference::{layer_norm, rms_norm};
    pub use super::resize::reference::resize_bilinear;
}

/// Whether `device` runs our kernels (wgpu) rather than plain Burn ops (flex). In wasm every
/// device is wgpu: known at compile time there, so the reference paths and the Burn kernels only
/// they call (Burn's matmul and convolution) are left out of the module.
pub fn uses_kernels(device: &burn::tensor::Device) -> bool {
    cfg!(target_arch = "wasm32") || kernels::cube_device(device).is_some()
}
