//! Attention for Gemma (rotary embeddings, the KV cache, causal, grouped-query) and CLIP (full).
//! Three launches per layer: `rope_append` (rotate q and k, write k and v into the cache),
//! `scores` (q kᵀ, every key read once for all the query heads that share it), `mix` (softmax and
//! the weighted sum of values, online: one pass over the keys).

use burn::tensor::Tensor;
use cubecl::prelude::*;

use super::{empty, float, grid, plane, wrap};

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

/// Query rows and keys per invocation of `scores`, query rows and vectors of 4 dims per
/// invocation of `mix`: register tiles, so each loaded value feeds several multiply-adds (CPU
/// adapters load buffers one lane at a time).
pub const TQ: usize = 8;
pub const TK: usize = 8;
pub const TD: usize = 2;

/// scores[h, i, p] = (q_i,h · k_p,g) * scale for the `group` heads h of kv group g, query rows
/// i < n and keys p < len; with `causal`, keys after position start + i get -inf (start = len -
/// n). The rows of a group are (head, i) pairs, r = h_local * n + i; an invocation takes TQ of
/// them and TK keys, so a key is read once for TQ rows (all the heads sharing it, in decode).
/// Layouts are `[offset, row stride, head stride]` in f32: element (row r, head h, dim c) is at
/// `offset + r * row + h * head + c`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn scores(
    q: &[Vector<f32, Const<4>>],
    k: &[Vector<f32, Const<4>>],
    out: &mut [f32],
    q_layout: Sequence<usize>,
    k_layout: Sequence<usize>,
    n: usize,
    len: usize,
    d: usize,
    group: usize,
    scale: f32,
    #[comptime] causal: bool,
) {
    let p0 = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * TK;
    let r0 = CUBE_POS_Y as usize * TQ;
    let g = CUBE_POS_Z as usize;
    let rows = group * n;
    if p0 < len {
        // Rows and keys past the end read the last one and are not written.
        let mut qb = Array::<usize>::new(TQ);
        #[unroll]
        for t in 0..TQ {
            let r = (r0 + t).min(rows - 1);
            qb[t] = (q_layout[0] + (r % n) * q_layout[1] + (g * group + r / n) * q_layout[2]) / 4;
        }
        let mut kb = Array::<usize>::new(TK);
        #[unroll]
        for u in 0..TK {
            kb[u] = (k_layout[0] + (p0 + u).min(len - 1) * k_layout[1] + g * k_layout[2]) / 4;
        }
        let mut acc = Array::<f32>::new(comptime![TQ * TK]);
        #[unroll]
        for a in 0..comptime![TQ * TK] {
            acc[a] = 0.0f32;
        }
        let mut kv = Array::<Vector<f32, Const<4>>>::new(TK);
        for c in 0..d / 4 {
            #[unroll]
            for u in 0..TK {
                kv[u] = k[kb[u] + c];
            }
            #[unroll]
            for t in 0..TQ {
                let qv = q[qb[t] + c];
                #[unroll]
                for u in 0..TK {
                    let prod = qv * kv[u];
                    acc[comptime![t * TK + u]] += prod.extract(0usize) + prod.extract(1usize) + prod.extract(2usize) + prod.extract(3usize);
                }
            }
        }
        store_scores(&acc, out, r0, p0, n, len, g, group, scale, TQ, TK, causal);
    }
}

/// Writes a tile of `tq` rows by `tk` keys from row r0 and key p0 of `scores`, scaled, with -inf
/// after each row's position when `causal`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_scores(acc: &Array<f32>, out: &mut [f32], r0: usize, p0: usize, n: usize, len: usize, g: usize, group: usize, scale: f32, #[comptime] tq: usize, #[comptime] tk: usize, #[comptime] causal: bool) {
    #[unroll]
    for t in 0..tq {
        let r = r0 + t;
        #[unroll]
        for u in 0..tk {
            let p = p0 + u;
            if r < group * n && p < len {
                let mut v = acc[comptime![t * tk + u]] * scale;
                if causal && p > len - n + r % n {
                    v = f32::reinterpret(0xff80_0000u32); // -inf: softmax gives it weight 0
                }
                out[((g * group) * n + r) * len + p] = v;
            }
        }
    }
}

/// out[i, h*d + c] = Σ_p softmax_p(scores[h, i, :]) v[p, h/group, c], online (running max and
/// sum, one pass over the keys). An invocation takes TQ rows (h, i) of one kv group and TD
/// vectors of 4 dims, so a value vector is read once for TQ rows.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn mix(
    scores: &[f32],
    v: &[Vector<f32, Const<4>>],
    out: &mut [Vector<f32, Const<4>>],
    v_layout: Sequence<usize>,
    n: usize,
    len: usize,
    d: usize,
    group: usize,
    #[comptime] causal: bool,
) {
    let c0 = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * TD;
    let r0 = CUBE_POS_Y as usize * TQ;
    let g = CUBE_POS_Z as usize;
    let rows = group * n;
    let dv = d / 4;
    if c0 < dv {
        let mut row = Array::<usize>::new(TQ);
        let mut last = Array::<usize>::new(TQ);
        let mut keys = 0usize;
        #[unroll]
        for t in 0..TQ {
            let r = (r0 + t).min(rows - 1);
            row[t] = (g * group * n + r) * len;
            // Causal rows stop at their own position (later keys would get weight 0).
            last[t] = len;
            if causal {
                last[t] = len - n + r % n + 1;
            }
            keys = keys.max(last[t]);
        }
        let mut max = Array::<f32>::new(TQ);
        let mut sum = Array::<f32>::new(TQ);
        let mut acc = Array::<Vector<f32, Const<4>>>::new(comptime![TQ * TD]);
        #[unroll]
        for t in 0..TQ {
            max[t] = f32::reinterpret(0xff80_0000u32);
            sum[t] = 0.0f32;
            #[unroll]
            for e in 0..TD {
                acc[comptime![t * TD + e]] = Vector::new(0.0f32);
            }
        }
        let vb = (v_layout[0] + g * v_layout[2]) / 4;
        let mut vv = Array::<Vector<f32, Const<4>>>::new(TD);
        for p in 0..keys {
            #[unroll]
            for e in 0..TD {
                vv[e] = v[vb + p * (v_layout[1] / 4) + (c0 + e).min(dv - 1)];
            }
            #[unroll]
            for t in 0..TQ {
                if p < last[t] {
                    let s = scores[row[t] + p];
                    if s > max[t] {
                        let r = (max[t] - s).exp();
                        sum[t] *= r;
                        #[unroll]
                        for e in 0..TD {
                            acc[comptime![t * TD + e]] *= Vector::new(r);
                        }
                        max[t] = s;
                    }
                    let w = (s - max[t]).exp();
                    sum[t] += w;
                    #[unroll]
                    for e in 0..TD {
                        acc[comptime![t * TD + e]] += vv[e] * Vector::new(w);
                    }
                }
            }
        }
        store_mixed(&acc, &sum, out, r0, c0, n, d, g, group, TQ);
    }
}

/// Writes `tq` rows from row r0 (TD vectors of dims from c0 each), divided by each row's sum of
/// weights, into `out` `[n, heads d]`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_mixed(acc: &Array<Vector<f32, Const<4>>>, sum: &Array<f32>, out: &mut [Vector<f32, Const<4>>], r0: usize, c0: usize, n: usize, d: usize, g: usize, group: usize, #[comptime] tq: usize) {
    let heads = CUBE_COUNT_Z as usize * group;
    #[unroll]
    for t in 0..tq {
        let r = r0 + t;
        if r < group * n {
            let (h, i) = (g * group + r / n, r % n);
            #[unroll]
            for e in 0..TD {
                if c0 + e < d / 4 {
                    out[(i * heads * d + h * d) / 4 + c0 + e] = acc[comptime![t * TD + e]] / Vector::new(sum[t]);
                }
            }
        }
    }
}

/// Query rows and keys per invocation of `scores_shared`, query rows per invocation of
/// `mix_shared` (which takes `TD` vectors of 4 dims, as `mix`).
pub const SQ: usize = 16;
pub const SK: usize = 8;

/// `scores` where the device has subgroups of `plane` (2, 4 or 8) lanes: lanes take different
/// keys (SK each, read as vectors of 4) and share the query rows, lane l of p reading dims l, l +
/// p, … of every 8 and broadcasting them (on CPU adapters each lane's load is a loop iteration,
/// a broadcast a register move). No lane returns early: the broadcasts need them all.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn scores_shared(
    q: &[f32],
    k: &[Vector<f32, Const<4>>],
    out: &mut [f32],
    q_layout: Sequence<usize>,
    k_layout: Sequence<usize>,
    n: usize,
    len: usize,
    d: usize,
    group: usize,
    scale: f32,
    #[comptime] causal: bool,
    #[comptime] plane: usize,
) {
    let p0 = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * SK;
    let r0 = CUBE_POS_Y as usize * SQ;
    let g = CUBE_POS_Z as usize;
    let rows = group * n;
    let (lane, per) = (UNIT_POS_PLANE as usize % plane, comptime![8 / plane]);
    // Rows and keys past the end read the last one and are not written.
    let mut qb = Array::<usize>::new(SQ);
    #[unroll]
    for t in 0..SQ {
        let r = (r0 + t).min(rows - 1);
        qb[t] = q_layout[0] + (r % n) * q_layout[1] + (g * group + r / n) * q_layout[2] + lane;
    }
    let mut kb = Array::<usize>::new(SK);
    #[unroll]
    for u in 0..SK {
        kb[u] = (k_layout[0] + (p0 + u).min(len - 1) * k_layout[1] + g * k_layout[2]) / 4;
    }
    let mut acc = Array::<f32>::new(comptime![SQ * SK]);
    #[unroll]
    for a in 0..comptime![SQ * SK] {
        acc[a] = 0.0f32;
    }
    let mut kv = Array::<Vector<f32, Const<4>>>::new(comptime![2 * SK]);
    let mut mine = Array::<f32>::new(per);
    for c in 0..d / 8 {
        #[unroll]
        for u in 0..SK {
            kv[comptime![2 * u]] = k[kb[u] + 2 * c];
            kv[comptime![2 * u + 1]] = k[kb[u] + 2 * c + 1];
        }
        #[unroll]
        for t in 0..SQ {
            #[unroll]
            for i in 0..per {
                mine[i] = q[qb[t] + c * 8 + i * plane];
            }
            #[unroll]
            for j in 0..8usize {
                let qj = plane_broadcast(mine[comptime![j / plane]], comptime![(j % plane) as u32]);
                #[unroll]
                for u in 0..SK {
                    acc[comptime![t * SK + u]] += qj * kv[comptime![2 * u + j / 4]].extract(comptime![j % 4]);
                }
            }
        }
    }
    store_scores(&acc, out, r0, p0, n, len, g, group, scale, SQ, SK, causal);
}

/// `mix` where the device has subgroups of `plane` lanes: keys go in blocks of `plane`, lane j
/// reading key j's score and taking its softmax weight against the block's running maximum (one
/// exp per lane, not one per lane and key), then broadcasting it to the lanes, which hold
/// different dims and each sum the weights. The maximum is shared through a subgroup reduction.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn mix_shared(
    scores: &[f32],
    v: &[Vector<f32, Const<4>>],
    out: &mut [Vector<f32, Const<4>>],
    v_layout: Sequence<usize>,
    n: usize,
    len: usize,
    d: usize,
    group: usize,
    #[comptime] causal: bool,
    #[comptime] plane: usize,
) {
    let c0 = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * TD;
    let r0 = CUBE_POS_Y as usize * SQ;
    let g = CUBE_POS_Z as usize;
    let rows = group * n;
    let dv = d / 4;
    let lane = UNIT_POS_PLANE as usize % plane;
    let mut row = Array::<usize>::new(SQ);
    let mut keys = len;
    if causal {
        // Causal rows stop at their own position; the scores after it are -inf already.
        keys = 0;
    }
    #[unroll]
    for t in 0..SQ {
        let r = (r0 + t).min(rows - 1);
        row[t] = (g * group * n + r) * len;
        if causal {
            keys = keys.max(len - n + r % n + 1);
        }
    }
    // A finite start, so that exp(old - new) is 0, never NaN.
    let lowest = -3.4e38f32;
    let mut max = Array::<f32>::new(SQ);
    let mut part = Array::<f32>::new(SQ);
    let mut acc = Array::<Vector<f32, Const<4>>>::new(comptime![SQ * TD]);
    #[unroll]
    for t in 0..SQ {
        max[t] = lowest;
        part[t] = 0.0f32;
        #[unroll]
        for e in 0..TD {
            acc[comptime![t * TD + e]] = Vector::new(0.0f32);
        }
    }
    let vb = (v_layout[0] + g * v_layout[2]) / 4;
    let mut vv = Array::<Vector<f32, Const<4>>>::new(comptime![plane * TD]);
    for b in 0..keys.div_ceil(plane) {
        let p0 = b * plane;
        #[unroll]
        for j in 0..plane {
            #[unroll]
            for e in 0..TD {
                vv[comptime![j * TD + e]] = v[vb + (p0 + j).min(len - 1) * (v_layout[1] / 4) + (c0 + e).min(dv - 1)];
            }
        }
        let key = p0 + lane;
        #[unroll]
        for t in 0..SQ {
            let s = select(key < keys, scores[row[t] + key.min(len - 1)], lowest);
            let m = max[t].max(plane_max(s));
            let r = (max[t] - m).exp();
            let w = (s - m).exp();
            max[t] = m;
            part[t] *= r;
            #[unroll]
            for e in 0..TD {
                acc[comptime![t * TD + e]] *= Vector::new(r);
            }
            #[unroll]
            for j in 0..plane {
                let wj = plane_broadcast(w, comptime![j as u32]);
                part[t] += wj;
                #[unroll]
                for e in 0..TD {
                    acc[comptime![t * TD + e]] += vv[comptime![j * TD + e]] * Vector::new(wj);
                }
            }
        }
    }
    store_mixed(&acc, &part, out, r0, c0, n, d, g, group, SQ);
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
    assert_eq!(d % 4, 0, "head_dim is a multiple of 4");
    let group = heads / kv;
    let row_tiles = (group * n).div_ceil(TQ) as u32;
    let scores_buf = empty(&q, [heads, n, len]);
    let client = q.client.clone();
    // The shared forms read head dims eight at a time.
    let plane = if d.is_multiple_of(8) { plane() } else { 0 };
    if plane > 0 {
        let (k, v) = (float(src.k.0), float(src.v.0));
        let lanes = len.div_ceil(SK).div_ceil(8).clamp(1, 4) * 8;
        unsafe {
            scores_shared::launch_unchecked(
                &client,
                CubeCount::Static(len.div_ceil(lanes * SK) as u32, (group * n).div_ceil(SQ) as u32, kv as u32),
                CubeDim::new_1d(lanes as u32),
                q.clone().into_buffer_arg(),
                k.into_buffer_arg(),
                scores_buf.clone().into_buffer_arg(),
                seq(src.q.1),
                seq(src.k.1),
                n,
                len,
                d,
                group,
                1.0 / (d as f32).sqrt(),
                causal,
                plane,
            );
        }
        let out = empty(&q, [n, heads * d]);
        // Whole subgroups: every lane takes part in the broadcasts.
        let lanes = (d / 4).div_ceil(TD).div_ceil(8).min(4) * 8;
        unsafe {
            mix_shared::launch_unchecked(
                &client,
                CubeCount::Static((d / 4).div_ceil(lanes * TD) as u32, (group * n).div_ceil(SQ) as u32, kv as u32),
                CubeDim::new_1d(lanes as u32),
                scores_buf.into_buffer_arg(),
                v.into_buffer_arg(),
                out.clone().into_buffer_arg(),
                seq(src.v.1),
                n,
                len,
                d,
                group,
                causal,
                plane,
            );
        }
        return wrap(out);
    }
    let lanes = 32;
    unsafe {
        scores::launch_unchecked(
            &client,
            CubeCount::Static(len.div_ceil(lanes * TK) as u32, row_tiles, kv as u32),
            CubeDim::new_1d(lanes as u32),
            q.clone().into_buffer_arg(),
            float(src.k.0).into_buffer_arg(),
            scores_buf.clone().into_buffer_arg(),
            seq(src.q.1),
            seq(src.k.1),
            n,
            len,
            d,
            group,
            1.0 / (d as f32).sqrt(),
            causal,
        );
    }
    let out = empty(&q, [n, heads * d]);
    // Few lanes per workgroup: a decode step has one row tile, and workgroups are what CPU
    // adapters spread over their threads.
    let lanes = (d / 4).div_ceil(TD).min(8);
    unsafe {
        mix::launch_unchecked(
            &client,
            CubeCount::Static((d / 4).div_ceil(lanes * TD) as u32, row_tiles, kv as u32),
            CubeDim::new_1d(lanes as u32),
            scores_buf.into_buffer_arg(),
            float(src.v.0).into_buffer_arg(),
            out.clone().into_buffer_arg(),
            seq(src.v.1),
            n,
            len,
            d,
            group,
            causal,
        );
    }
    wrap(out)
}
