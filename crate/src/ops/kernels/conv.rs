//! Depthwise convolution over a channels-last map (ConvNeXt's 7x7), with its bias.

use burn::tensor::Tensor;
use cubecl::prelude::*;

use super::{empty, float, grid, wrap};

/// out[y, x, c] = b[c] + Σ_{i,j} w[c, i, j] in[y + i - pad, x + j - pad, c] (zero outside) for a
/// map `[h, w, c]`, stride 1, kernel `k`. One invocation per (pixel, vector of channels).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn depthwise<N: Size>(x: &[Vector<f32, N>], w: &[Vector<f32, N>], b: &[Vector<f32, N>], out: &mut [Vector<f32, N>], h: usize, width: usize, c: usize, #[comptime] k: usize) {
    let cv = c / N::value();
    let id = ABSOLUTE_POS;
    if id < h * width * cv {
        let ch = id % cv;
        let px = (id / cv) % width;
        let py = id / (cv * width);
        let pad = comptime![k / 2];
        let mut acc = b[ch];
        #[unroll]
        for i in 0..k {
            let y = py + i;
            if y >= pad && y - pad < h {
                #[unroll]
                for j in 0..k {
                    let xx = px + j;
                    if xx >= pad && xx - pad < width {
                        // Weights are stored [k, k, c] (channels last) so each tap is one vector.
                        acc += x[((y - pad) * width + xx - pad) * cv + ch] * w[comptime![i * k + j] * cv + ch];
                    }
                }
            }
        }
        out[id] = acc;
    }
}

/// `x` `[h, w, c]`, weight `[k, k, c]`, bias `[c]`.
pub fn launch(x: Tensor<3>, weight: &Tensor<3>, bias: &Tensor<1>) -> Tensor<3> {
    let [h, w, c] = x.dims();
    let k = weight.dims()[0];
    let nv = if c % 4 == 0 { 4 } else { 1 };
    let x = float(x);
    let out = empty(&x, [h, w, c]);
    let units = h * w * c / nv;
    let cube = 64;
    let (gx, gy) = grid(units.div_ceil(cube));
    let client = x.client.clone();
    unsafe {
        depthwise::launch_unchecked(
            &client,
            CubeCount::Static(gx, gy, 1),
            CubeDim::new_1d(cube as u32),
            nv,
            x.into_buffer_arg(),
            float(weight.clone()).into_buffer_arg(),
            float(bias.clone()).into_buffer_arg(),
            out.clone().into_buffer_arg(),
            h,
            w,
            c,
            k,
        );
    }
    wrap(out)
}
