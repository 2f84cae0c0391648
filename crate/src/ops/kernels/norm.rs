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

/// Σ over the `lanes` invocations of a row (one lane: the value itself).
#[cube]
fn row_sum(v: f32, sum: &mut Shared<[f32]>, #[comptime] lanes: usize) -> f32 {
    let mut total = v;
    if comptime![lanes > 1] {
        total = workgroup_sum(v, sum, lanes);
    }
    total
}

/// `rms`: y = x / sqrt(mean(x²) + eps) * w. Otherwise LayerNorm: y = (x - mean) / sqrt(var + eps)
/// * w + b (biased variance, two passes as PyTorch computes it). `lanes` invocations per row: a
/// workgroup for the few long rows of decode, one invocation for the many rows of an image (no
/// barriers, which CPU adapters pay for dearly).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn norm(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32], rows: usize, cols: usize, eps: f32, #[comptime] rms: bool, #[comptime] lanes: usize) {
    let (row, u) = if comptime![lanes == 1] { (ABSOLUTE_POS, 0usize) } else { (CUBE_POS, UNIT_POS_X as usize) };
    // A workgroup leaves together, so the barriers below stay uniform.
    if row >= rows {
        terminate!();
    }
    let base = row * cols;
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
        mean = row_sum(acc, &mut sum, lanes) * inv_n;
    }
    let mut acc = 0.0f32;
    let mut c = u;
    while c < cols {
        let d = x[base + c] - mean;
        acc += d * d;
        c += lanes;
    }
    let inv = (row_sum(acc, &mut sum, lanes) * inv_n + eps).inverse_sqrt();
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
    let [rows, cols] = x.dims();
    // Many rows: one invocation each, 64 to a workgroup; few: a workgroup of 64 per row.
    let (lanes, cubes) = if rows >= 256 { (1, rows.div_ceil(64)) } else { (64, rows) };
    let x = float(x);
    let out = empty(&x, [rows, cols]);
    let w = float(w.clone());
    let bias = b.map(|b| float(b.clone())).unwrap_or_else(|| empty(&x, [1]));
    let client = x.client.clone();
    let (gx, gy) = super::grid(cubes);
    unsafe {
        norm::launch_unchecked(
            &client,
            CubeCount::Static(gx, gy, 1),
            CubeDim::new_1d(64),
            x.into_buffer_arg(),
            w.into_buffer_arg(),
            bias.into_buffer_arg(),
            out.clone().into_buffer_arg(),
            rows,
            cols,
            eps as f32,
            b.is_none(),
            lanes,
        );
    }
    wrap(out)
}
