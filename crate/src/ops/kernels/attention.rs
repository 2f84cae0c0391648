//! Attention for Gemma (rotary embeddings, the KV cache, causal, grouped-query) and CLIP (full).
//! Three launches per layer: `rope_append` (rotate q and k, write k and v into the cache),
//! `scores` (q kᵀ, every key read once for all the query heads that share it), `mix` (softmax and
//! the weighted sum of values, online: one pass over the keys).

use burn::tensor::Tensor;
use cubecl::prelude::*;

use super::{empty, float, grid, wrap};

/// Rotary embedding (rotate-half) on the q and k heads of `qkv` `[n, (heads + 2 kv) * d]` at
/// positions `start..start + n`; rotated q goes to `q` `[n, heads * d]`, rotated k and plain v to
/// the caches `[kv, capacity, d]` at rows `start..`. One invocation per (row, head, pair).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn rope_append(
    qkv: &[f32],
    cos: &[f32],
    sin: &[f32],
    q: &mut [f32],
    keys: &mut [f32],
    values: &mut [f32],
    n: usize,
    heads: usize,
    kv: usize,
    d: usize,
    start: usize,
    capacity: usize,
) {
    let half = d / 2;
    let slots = heads + 2 * kv;
    let id = ABSOLUTE_POS;
    if id < n * slots * half {
        let j = id % half;
        let slot = (id / half) % slots;
        let i = id / (half * slots);
        let src = i * slots * d + slot * d + j;
        let (a, b) = (qkv[src], qkv[src + half]);
        let t = (start + i) * half + j;
        let (c, s) = (cos[t], sin[t]);
        let (ra, rb) = (a * c - b * s, b * c + a * s);
        if slot < heads {
            let dst = i * heads * d + slot * d + j;
            q[dst] = ra;
            q[dst + half] = rb;
        } else if slot < heads + kv {
            let dst = (slot - heads) * capacity * d + (start + i) * d + j;
            keys[dst] = ra;
            keys[dst + half] = rb;
        } else {
            let dst = (slot - heads - kv) * capacity * d + (start + i) * d + j;
            values[dst] = a;
            values[dst + half] = b;
        }
    }
}

/// scores[h, i, p] = (q_i,h · k_p,h/group) * scale for query rows i < n, keys p < len; with
/// `causal`, keys after position start + i get -inf (start = len - n). One invocation per
/// (row i, key p), computing every head of one kv group so each key is read once per row.
/// Layouts are `[offset, row stride, head stride]` in f32: element (row r, head h, dim c) is at
/// `offset + r * row + h * head + c`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn scores<N: Size>(
    q: &[Vector<f32, N>],
    k: &[Vector<f32, N>],
    out: &mut [f32],
    q_layout: Sequence<usize>,
    k_layout: Sequence<usize>,
    n: usize,
    len: usize,
    d: usize,
    scale: f32,
    #[comptime] group: usize,
    #[comptime] causal: bool,
) {
    let p = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let i = CUBE_POS_Y as usize;
    let g = CUBE_POS_Z as usize;
    if p < len {
        let nv = N::value();
        let mut acc = Array::<f32>::new(group);
        #[unroll]
        for h in 0..group {
            acc[h] = 0.0f32;
        }
        let kb = (k_layout[0] + p * k_layout[1] + g * k_layout[2]) / nv;
        let qb = q_layout[0] + i * q_layout[1] + g * group * q_layout[2];
        for c in 0..d / nv {
            let kv = k[kb + c];
            #[unroll]
            for h in 0..group {
                let qv = q[(qb + h * q_layout[2]) / nv + c];
                #[unroll]
                for t in 0..nv {
                    acc[h] += qv.extract(t) * kv.extract(t);
                }
            }
        }
        let masked = causal && p > len - n + i;
        #[unroll]
        for h in 0..group {
            let mut v = acc[h] * scale;
            if masked {
                v = f32::reinterpret(0xff80_0000u32); // -inf: softmax gives it weight 0
            }
            out[((g * group + h) * n + i) * len + p] = v;
        }
    }
}

/// out[i, h*d + c] = Σ_p softmax_p(scores[h, i, :]) v[p, h/group, c], online (running max and
/// sum, one pass over the keys). One invocation per (row i, head h, vector of d).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn mix<N: Size>(
    scores: &[f32],
    v: &[Vector<f32, N>],
    out: &mut [Vector<f32, N>],
    v_layout: Sequence<usize>,
    n: usize,
    len: usize,
    d: usize,
    heads: usize,
    group: usize,
    #[comptime] causal: bool,
) {
    let nv = N::value();
    let c = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let i = CUBE_POS_Y as usize;
    let h = CUBE_POS_Z as usize;
    if c < d / nv {
        let row = (h * n + i) * len;
        let vb = v_layout[0] + (h / group) * v_layout[2];
        // Causal rows stop at their own position; later keys would get weight 0.
        let mut keys = len;
        if causal {
            keys = len - n + i + 1;
        }
        let mut max = f32::reinterpret(0xff80_0000u32);
        let mut sum = 0.0f32;
        let mut acc = Vector::<f32, N>::new(0.0f32);
        for p in 0..keys {
            let s = scores[row + p];
            if s > max {
                let r = (max - s).exp();
                sum *= r;
                acc *= Vector::new(r);
                max = s;
            }
            let e = (s - max).exp();
            sum += e;
            acc += v[(vb + p * v_layout[1]) / nv + c] * Vector::new(e);
        }
        out[(i * heads * d + h * d) / nv + c] = acc / Vector::new(sum);
    }
}

fn seq(v: [usize; 3]) -> SequenceArg<usize> {
    let mut s = SequenceArg::new();
    for x in v {
        s.push(x);
    }
    s
}

/// Rotates q and k of `qkv` `[n, (heads + 2 kv) d]` at positions `start..`, writes k and v into
/// `keys`/`values` `[kv, capacity, d]` in place, and returns rotated q `[n, heads d]`.
#[allow(clippy::too_many_arguments)]
pub fn launch_rope_append(qkv: Tensor<2>, cos: &Tensor<2>, sin: &Tensor<2>, keys: &Tensor<3>, values: &Tensor<3>, heads: usize, start: usize) -> Tensor<2> {
    let [kv, capacity, d] = keys.dims();
    let n = qkv.dims()[0];
    let qkv = float(qkv);
    let q = empty(&qkv, [n, heads * d]);
    let units = n * (heads + 2 * kv) * d / 2;
    let (gx, gy) = grid(units.div_ceil(64));
    let client = qkv.client.clone();
    unsafe {
        rope_append::launch_unchecked(
            &client,
            CubeCount::Static(gx, gy, 1),
            CubeDim::new_1d(64),
            qkv.into_buffer_arg(),
            float(cos.clone()).into_buffer_arg(),
            float(sin.clone()).into_buffer_arg(),
            q.clone().into_buffer_arg(),
            float(keys.clone()).into_buffer_arg(),
            float(values.clone()).into_buffer_arg(),
            n,
            heads,
            kv,
            d,
            start,
            capacity,
        );
    }
    wrap(q)
}

/// Where q, k and v of one attention live: `[offset, row stride, head stride]` each, in f32.
pub struct Sources {
    pub q: (Tensor<2>, [usize; 3]),
    pub k: (Tensor<3>, [usize; 3]),
    pub v: (Tensor<3>, [usize; 3]),
}

/// softmax(q kᵀ / sqrt(d) [+ causal mask]) v for `n` query rows over `len` keys: `[n, heads d]`.
#[allow(clippy::too_many_arguments)]
pub fn launch_attention(src: Sources, n: usize, len: usize, heads: usize, kv: usize, d: usize, causal: bool) -> Tensor<2> {
    let q = float(src.q.0);
    let nv = 4;
    assert_eq!(d % nv, 0, "head_dim is a multiple of 4");
    let group = heads / kv;
    let scores_buf = empty(&q, [heads, n, len]);
    let client = q.client.clone();
    unsafe {
        scores::launch_unchecked(
            &client,
            CubeCount::Static(len.div_ceil(64) as u32, n as u32, kv as u32),
            CubeDim::new_1d(64),
            nv,
            q.clone().into_buffer_arg(),
            float(src.k.0).into_buffer_arg(),
            scores_buf.clone().into_buffer_arg(),
            seq(src.q.1),
            seq(src.k.1),
            n,
            len,
            d,
            1.0 / (d as f32).sqrt(),
            group,
            causal,
        );
    }
    let out = empty(&q, [n, heads * d]);
    unsafe {
        mix::launch_unchecked(
            &client,
            CubeCount::Static((d / nv).div_ceil(64) as u32, n as u32, heads as u32),
            CubeDim::new_1d(64),
            nv,
            scores_buf.into_buffer_arg(),
            float(src.v.0).into_buffer_arg(),
            out.clone().into_buffer_arg(),
            seq(src.v.1),
            n,
            len,
            d,
            heads,
            group,
            causal,
        );
    }
    wrap(out)
}
