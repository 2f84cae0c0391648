//! Patch info mining's attention in one launch (spec §2.2, fast form): each token's query, folded
//! into the key side as `u`, scores the LayerNorm-normalised pixels of its own window, and the
//! softmax weights average those normalised pixels. Nothing per pixel is written but its weight.

use cubecl::prelude::*;

const LANES: usize = 64;

/// One workgroup per token. `x` `[n, m, c]` raw pixels, `u` `[n, c]`; `mean` `[n, c]` gets
/// Σ_i p_i n_i and `p` `[n, m]` the weights, where n_i = (x_i - μ_i) / sqrt(σ²_i + eps) and
/// p = softmax(scale · n_i · u). `m` (the window's pixels) is fixed per model.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn mine(x: &[f32], u: &[f32], mean: &mut [f32], p: &mut [f32], c: usize, scale: f32, eps: f32, #[comptime] m: usize) {
    let t = CUBE_POS;
    let lane = UNIT_POS_X as usize;
    let mut logit = Shared::<[f32]>::new_slice(m);
    let mut mu = Shared::<[f32]>::new_slice(m);
    let mut coef = Shared::<[f32]>::new_slice(m);
    let inv_c = 1.0f32 / f32::cast_from(c);
    // A lane per pixel: its mean, then its variance and its score, as PyTorch's two passes.
    let mut i = lane;
    while i < m {
        let base = (t * m + i) * c;
        let mut sum = 0.0f32;
        for j in 0..c {
            sum += x[base + j];
        }
        let avg = sum * inv_c;
        let mut var = 0.0f32;
        let mut dot = 0.0f32;
        for j in 0..c {
            let d = x[base + j] - avg;
            var += d * d;
            dot += d * u[t * c + j];
        }
        let rstd = (var * inv_c + eps).inverse_sqrt();
        mu[i] = avg;
        coef[i] = rstd;
        logit[i] = dot * rstd * scale;
        i += LANES;
    }
    sync_cube();
    // Every lane takes the softmax's max and sum itself (m is small): no reduction barriers.
    let mut top = logit[0];
    for k in 1..m {
        if logit[k] > top {
            top = logit[k];
        }
    }
    let mut total = 0.0f32;
    for k in 0..m {
        total += (logit[k] - top).exp();
    }
    let mut i = lane;
    while i < m {
        let w = (logit[i] - top).exp() / total;
        p[t * m + i] = w;
        let r = coef[i];
        coef[i] = r * w;
        i += LANES;
    }
    sync_cube();
    // A lane per channel: Σ_i p_i (x_i - μ_i) / σ_i.
    let mut j = lane;
    while j < c {
        let mut acc = 0.0f32;
        for k in 0..m {
            acc += coef[k] * (x[(t * m + k) * c + j] - mu[k]);
        }
        mean[t * c + j] = acc;
        j += LANES;
    }
}

/// `x` `[n, m, c]`, `u` `[n, c]` -> (Σ_i p_i n_i `[n, c]`, p `[n, m]`).
pub fn launch(x: burn::tensor::Tensor<3>, u: burn::tensor::Tensor<2>, scale: f64, eps: f64) -> (burn::tensor::Tensor<2>, burn::tensor::Tensor<2>) {
    use super::{empty, float, wrap};
    let [n, m, c] = x.dims();
    let (x, u) = (float(x), float(u));
    let (mean, p) = (empty(&x, [n, c]), empty(&x, [n, m]));
    let client = x.client.clone();
    unsafe {
        mine::launch_unchecked(
            &client,
            CubeCount::Static(n as u32, 1, 1),
            CubeDim::new_1d(LANES as u32),
            x.into_buffer_arg(),
            u.into_buffer_arg(),
            mean.clone().into_buffer_arg(),
            p.clone().into_buffer_arg(),
            c,
            scale as f32,
            eps as f32,
            m,
        );
    }
    (wrap(mean), wrap(p))
}
