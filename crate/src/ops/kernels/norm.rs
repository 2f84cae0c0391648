//! Row normalisations in one launch: RMSNorm (Gemma) and LayerNorm (CLIP, ConvNeXt, mining).
//! One workgroup per row; lanes stride over the columns and sum in workgroup memory.

use cubecl::prelude::*;

/// Σ of `v` over the workgroup (every lane gets the total). `sum` has one slot per lane.
#[cube]
pub fn workgroup_sum(v: f32, sum: &mut Shared<[f32]>, #[comptime] lanes: usize) -> f32 {
    let u = UNIT_POS_X as usize;
    sum[u] = v;
    sync_cube();
    #[unroll]
    for step in 0..comptime![lanes.trailing_zeros() as usize] {
        let half = comptime![lanes >> (step + 1)];
        if u < half {
            let other = sum[u + half];
            sum[u] += other;
        }
        sync_cube();
    }
    let total = sum[0];
    sync_cube();
    total
}

/// `rms`: y = x / sqrt(mean(x²) + eps) * w. Otherwise LayerNorm: y = (x - mean) / sqrt(var + eps)
/// * w + b (biased variance, two passes as PyTorch computes it).
#[cube(launch_unchecked)]
pub fn norm(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32], rows: usize, cols: usize, eps: f32, #[comptime] rms: bool, #[comptime] lanes: usize) {
    // The whole workgroup leaves together, so the barriers below stay uniform.
    if CUBE_POS >= rows {
        terminate!();
    }
    let base = CUBE_POS * cols;
    let u = UNIT_POS_X as usize;
    let mut sum = Shared::<[f32]>::new_slice(lanes);
    let inv_n = 1.0f32 / f32::cast_from(cols);
    let mut mean = 0.0f32;
    if comptime![!rms] {
        let mut acc = 0.0f32;
        let mut c = u;
        while c < cols {
            acc += x[base + c];
            c += lanes;
        }
        mean = workgroup_sum(acc, &mut sum, lanes) * inv_n;
    }
    let mut acc = 0.0f32;
    let mut c = u;
    while c < cols {
        let d = x[base + c] - mean;
        acc += d * d;
        c += lanes;
    }
    let inv = (workgroup_sum(acc, &mut sum, lanes) * inv_n + eps).inverse_sqrt();
    let mut c = u;
    while c < cols {
        let mut y = (x[base + c] - mean) * inv * w[c];
        if comptime![!rms] {
            y += b[c];
        }
        out[base + c] = y;
        c += lanes;
    }
}

/// RMSNorm (`b` None) or LayerNorm of each row of `[rows, cols]`.
pub fn launch(x: burn::tensor::Tensor<2>, w: &burn::tensor::Tensor<1>, b: Option<&burn::tensor::Tensor<1>>, eps: f64) -> burn::tensor::Tensor<2> {
    use super::{empty, float, wrap};
    const LANES: usize = 64;
    let [rows, cols] = x.dims();
    let x = float(x);
    let out = empty(&x, [rows, cols]);
    let w = float(w.clone());
    let bias = b.map(|b| float(b.clone())).unwrap_or_else(|| empty(&x, [1]));
    let client = x.client.clone();
    // One workgroup per row; more rows than a grid dimension holds go in a second dimension.
    let (gx, gy) = (rows.min(65535), rows.div_ceil(65535));
    unsafe {
        norm::launch_unchecked(
            &client,
            CubeCount::Static(gx as u32, gy as u32, 1),
            CubeDim::new_1d(LANES as u32),
            x.into_buffer_arg(),
            w.into_buffer_arg(),
            bias.into_buffer_arg(),
            out.clone().into_buffer_arg(),
            rows,
            cols,
            eps as f32,
            b.is_none(),
            LANES,
        );
    }
    wrap(out)
}
