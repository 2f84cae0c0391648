//! Depthwise convolution over a channels-last map (ConvNeXt's 7x7), with its bias.

use burn::tensor::Tensor;
use cubecl::prelude::*;

use super::{empty, float, grid, wrap};

/// Output pixels per invocation, along a row: each loaded input vector then serves up to `k` of
/// them (CPU adapters load buffers one lane at a time).
pub const TX: usize = 8;

/// out[y, x, c] = b[c] + Σ_{i,j} w[i, j, c] in[y + i - pad, x + j - pad, c] (zero outside) for a
/// map `[h, w, c]`, stride 1, kernel `k`. One invocation per (row, TX pixels, vector of channels).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn depthwise<N: Size>(x: &[Vector<f32, N>], w: &[Vector<f32, N>], b: &[Vector<f32, N>], out: &mut [Vector<f32, N>], h: usize, width: usize, c: usize, #[comptime] k: usize) {
    let cv = c / N::value();
    let strips = width.div_ceil(TX);
    let id = ABSOLUTE_POS;
    if id < h * strips * cv {
        let ch = id % cv;
        let x0 = ((id / cv) % strips) * TX;
        let py = id / (cv * strips);
        let pad = comptime![k / 2];
        let mut acc = Array::<Vector<f32, N>>::new(TX);
        #[unroll]
        for t in 0..TX {
            acc[t] = b[ch];
        }
        let mut wk = Array::<Vector<f32, N>>::new(k);
        for i in 0..k {
            let y = py + i;
            if y >= pad && y - pad < h {
                let row = (y - pad) * width;
                #[unroll]
                for j in 0..k {
                    wk[j] = w[(i * k + j) * cv + ch];
                }
                // Input columns x0 - pad .. x0 + TX + pad of this row, each read once.
                #[unroll]
                for s in 0..comptime![TX + k - 1] {
                    let xx = x0 + s;
                    if xx >= pad && xx - pad < width {
                        let v = x[(row + xx - pad) * cv + ch];
                        #[unroll]
                        for j in 0..k {
                            // Output x0 + t reads input x0 + t + j - pad: s = t + j.
                            if comptime![s >= j && s - j < TX] {
                                acc[comptime![s - j]] += v * wk[j];
                            }
                        }
                    }
                }
            }
        }
        #[unroll]
        for t in 0..TX {
            if x0 + t < width {
                out[(py * width + x0 + t) * cv + ch] = acc[t];
            }
        }
    }
}

/// `x` `[h, w, c]`, weight `[k, k, c]`, bias `[c]`.
pub fn launch(x: Tensor<3>, weight: &Tensor<3>, bias: &Tensor<1>) -> Tensor<3> {
    let [h, w, c] = x.dims();
    let k = weight.dims()[0];
    let nv = if c % 4 == 0 { 4 } else { 1 };
    let x = float(x);
    let out = empty(&x, [h, w, c]);
    let units = h * w.div_ceil(TX) * c / nv;
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
