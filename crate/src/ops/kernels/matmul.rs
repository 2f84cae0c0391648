//! y = act(x Wᵀ + b) + r for activations x `[m, k]` (f32) and a stored weight W `[n, k]` in any
//! [`Format`]. One invocation owns one weight row and `tm` rows of x: each 32-value block of W is
//! decoded once into registers and used for all `tm` rows, so decode (m = 1, tm = 1) and prefill
//! share one kernel. Lanes of a workgroup take consecutive weight rows and read the same x, or,
//! where the device has subgroups of a fixed size, share it through subgroup broadcasts.
//! A second form for one row of x (decode, [`split_gemv`]) splits k over the lanes instead, as
//! GPUs want; CPU adapters run the first faster. Weights are read as u32 words, or q8 ones as
//! u64 where the device has 64-bit integers (`Variant::wide`).

use burn::backend::wgpu::CubeTensor;
use burn::tensor::Tensor;
use cubecl::prelude::*;

use super::format::{self, Format};
use super::norm::workgroup_sum;
use super::{empty, float, grid, plane, words, wrap, Packed};

/// What follows the product, per output value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// CLIP's x * sigmoid(1.702 x).
    QuickGelu,
}

#[cube]
pub fn activate(v: f32, #[comptime] act: Epilogue) -> f32 {
    match comptime![act] {
        Epilogue::None => v,
        Epilogue::Gelu => {
            0.5f32 * v * (1.0f32 + Erf::erf(v * 0.70710677f32))
        }
        Epilogue::GeluTanh => {
            let inner = 0.7978846f32 * (v + 0.044715f32 * v * v * v);
            0.5f32 * v * (1.0f32 + inner.tanh())
        }
        Epilogue::QuickGelu => v / (1.0f32 + (-1.702f32 * v).exp()),
    }
}

/// Options that pick a kernel variant (each combination compiles once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub fmt: Format,
    /// Rows of x per invocation.
    pub tm: usize,
    /// Weight rows (output columns) per invocation.
    pub tn: usize,
    pub bias: bool,
    /// `bias` holds [bias; γ] and y = γ ⊙ (x Wᵀ + b) before the residual (ConvNeXt's layer scale).
    pub gamma: bool,
    pub residual: bool,
    pub act: Epilogue,
    /// W stacks [gate; up] (each n rows): y = act(x gateᵀ) * (x upᵀ).
    pub glu: bool,
    /// Lanes (2, 4 or 8) that share x through subgroup broadcasts; 0: every lane reads it.
    pub plane: usize,
    /// One row of x with k split over the workgroup's lanes ([`split_k`]) instead of tiles.
    pub split: bool,
    /// q8 weights read as u64 words, eight values a load, where the device has 64-bit integers
    /// (lavapipe: each load is a loop over the lanes, so fewer loads are faster; not in WebGPU).
    pub wide: bool,
}

/// The product in one of its two forms: tiles per lane, or (one row of x) k split over lanes.
/// `W` is the weight word: u32, or u64 with `v.wide`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matmul<N: Size, W: Int>(
    x: &[Vector<f32, N>],
    w: &[W],
    s: &[u32],
    bias: &[f32],
    residual: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    out_stride: usize,
    out_offset: usize,
    #[comptime] v: Variant,
) {
    if comptime![v.split] {
        split_k(x, w, s, bias, residual, out, n, k, out_offset, v);
    } else {
        tiles(x, w, s, bias, residual, out, m, n, k, out_stride, out_offset, v);
    }
}

/// Each invocation computes a tm x tn tile of y, eight values of k at a time: eight decoded
/// weights per weight row and eight values of x per row, tm * tn * 8 multiply-adds. A weight is
/// decoded and scaled once for tm rows of x; a value of x serves tn weight rows.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tiles<N: Size, W: Int>(
    x: &[Vector<f32, N>],
    w: &[W],
    s: &[u32],
    bias: &[f32],
    residual: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    out_stride: usize,
    out_offset: usize,
    #[comptime] v: Variant,
) {
    let (tm, tn) = comptime![(v.tm, v.tn)];
    let parts = comptime![if v.glu { 2usize } else { 1usize }];
    let n0 = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * tn;
    let m0 = CUBE_POS_Y as usize * tm;
    // Every lane computes (lanes past n on row n - 1) so subgroups stay whole; stores are guarded.
    let blocks = k / 32;
    // acc[(p * tn + j) * tm + i]: x row m0 + i, weight row n0 + j of part p (gate, up).
    let mut acc = Array::<f32>::new(comptime![parts * tn * tm]);
    #[unroll]
    for a in 0..comptime![parts * tn * tm] {
        acc[a] = 0.0f32;
    }
    // Weight rows past n (a partial last tile) read row n - 1 and are never written.
    let mut rows = Array::<usize>::new(comptime![parts * tn]);
    #[unroll]
    for p in 0..parts {
        #[unroll]
        for j in 0..tn {
            rows[comptime![p * tn + j]] = (n0 + j).min(n - 1) + p * n;
        }
    }
    // x is bound as vectors of 4, or of 1 when each lane reads one value.
    let xv = comptime![if v.plane > 0 { 1usize } else { 4usize }];
    let mut xrow = Array::<usize>::new(tm);
    #[unroll]
    for i in 0..tm {
        xrow[i] = (m0 + i).min(m - 1) * (k / xv);
    }
    let mut wv = Array::<f32>::new(comptime![parts * tn * 8]);
    let wpb = comptime![v.fmt.words_per_block()];
    let mut d = Array::<f32>::new(comptime![parts * tn]);
    for b in 0..blocks {
        #[unroll]
        for r in 0..comptime![parts * tn] {
            d[r] = format::block_scale(s, v.fmt, rows[r], b, blocks);
        }
        // Eight values at a time: a q4 word, so each stored word is read once. With several
        // rows of x a runtime loop keeps the shader small (unrolled it compiled 10x slower);
        // one row unrolls.
        #[unroll(tm == 1)]
        for c in 0..4usize {
            #[unroll]
            for r in 0..comptime![parts * tn] {
                let (lo, hi) = format::decode8(w, v.fmt, (rows[r] * blocks + b) * wpb, c, v.wide);
                #[unroll]
                for t in 0..4usize {
                    wv[comptime![r * 8 + t]] = lo.extract(t) * d[r];
                    wv[comptime![r * 8 + 4 + t]] = hi.extract(t) * d[r];
                }
            }
            if comptime![v.plane > 0] {
                // Lane l of p reads values l, l + p, … of the chunk and broadcasts them: CPU
                // adapters pay per lane for every load, and broadcasts cost a register move.
                let (p, per) = comptime![(v.plane, 8 / v.plane)];
                let lane = UNIT_POS_PLANE as usize % p;
                let mut mine = Array::<f32>::new(per);
                #[unroll]
                for i in 0..tm {
                    #[unroll]
                    for q in 0..per {
                        mine[q] = x[xrow[i] + b * 32 + c * 8 + q * p + lane].extract(0usize);
                    }
                    #[unroll]
                    for t in 0..8usize {
                        let xt = plane_broadcast(mine[comptime![t / p]], comptime![(t % p) as u32]);
                        #[unroll]
                        for r in 0..comptime![parts * tn] {
                            acc[comptime![r * tm + i]] += wv[comptime![r * 8 + t]] * xt;
                        }
                    }
                }
            } else {
                #[unroll]
                for i in 0..tm {
                    let (xa, xb) = (x[xrow[i] + b * 8 + 2 * c], x[xrow[i] + b * 8 + 2 * c + 1]);
                    #[unroll]
                    for r in 0..comptime![parts * tn] {
                        let mut sum = acc[comptime![r * tm + i]];
                        #[unroll]
                        for t in 0..4usize {
                            sum += wv[comptime![r * 8 + t]] * xa.extract(t);
                            sum += wv[comptime![r * 8 + 4 + t]] * xb.extract(t);
                        }
                        acc[comptime![r * tm + i]] = sum;
                    }
                }
            }
        }
    }
    #[unroll]
    for j in 0..tn {
        let col = n0 + j;
        #[unroll]
        for i in 0..tm {
            let row = m0 + i;
            if row < m && col < n {
                let mut up = 0.0f32;
                if comptime![v.glu] {
                    up = acc[comptime![(tn + j) * tm + i]];
                }
                out[row * out_stride + out_offset + col] = finish(acc[comptime![j * tm + i]], up, bias, residual, n, row, col, v);
            }
        }
    }
}

/// Output (`row`, `col`) from its product `y` (and, gated, the up product): the epilogue.
#[cube]
#[allow(clippy::too_many_arguments)]
fn finish(y: f32, up: f32, bias: &[f32], residual: &[f32], n: usize, row: usize, col: usize, #[comptime] v: Variant) -> f32 {
    let mut y = y;
    if comptime![v.bias] {
        y += bias[col];
    }
    y = activate(y, v.act);
    if comptime![v.glu] {
        y *= up;
    }
    if comptime![v.gamma] {
        y *= bias[n + col];
    }
    if comptime![v.residual] {
        y += residual[row * n + col];
    }
    y
}

/// Lanes of a [`split_k`] workgroup.
const SPLIT_LANES: usize = 64;

/// One row of x (decode) with k split over the workgroup's lanes: lane l takes blocks l, l +
/// lanes, … of the workgroup's `tn` weight rows, so neighbouring lanes read neighbouring words
/// of a row (coalesced, as GPUs read fastest), and the partial sums meet in workgroup memory.
/// [`tiles`] gives each lane whole rows instead, which CPU adapters run fastest.
#[cube]
#[allow(clippy::too_many_arguments)]
fn split_k<N: Size, W: Int>(
    x: &[Vector<f32, N>],
    w: &[W],
    s: &[u32],
    bias: &[f32],
    residual: &[f32],
    out: &mut [f32],
    n: usize,
    k: usize,
    out_offset: usize,
    #[comptime] v: Variant,
) {
    let rows = comptime![v.tn];
    let parts = comptime![if v.glu { 2usize } else { 1usize }];
    let n0 = CUBE_POS as usize * rows;
    // A workgroup past the last row (the grid rounds up) leaves whole: the barriers stay uniform.
    if n0 >= n {
        terminate!();
    }
    let lane = UNIT_POS_X as usize;
    let blocks = k / 32;
    let wpb = comptime![v.fmt.words_per_block()];
    let mut acc = Array::<f32>::new(comptime![parts * rows]);
    let mut wrow = Array::<usize>::new(comptime![parts * rows]);
    #[unroll]
    for p in 0..parts {
        #[unroll]
        for j in 0..rows {
            acc[comptime![p * rows + j]] = 0.0f32;
            wrow[comptime![p * rows + j]] = (n0 + j).min(n - 1) + p * n;
        }
    }
    // Each block's sum per row, before its scale; x is read once per block for all rows.
    let mut sum = Array::<f32>::new(comptime![parts * rows]);
    let mut b = lane;
    while b < blocks {
        #[unroll]
        for r in 0..comptime![parts * rows] {
            sum[r] = 0.0f32;
        }
        #[unroll]
        for c in 0..4usize {
            let (xa, xb) = (x[b * 8 + 2 * c], x[b * 8 + 2 * c + 1]);
            #[unroll]
            for r in 0..comptime![parts * rows] {
                let (lo, hi) = format::decode8(w, v.fmt, (wrow[r] * blocks + b) * wpb, c, v.wide);
                #[unroll]
                for t in 0..4usize {
                    sum[r] += lo.extract(t) * xa.extract(t) + hi.extract(t) * xb.extract(t);
                }
            }
        }
        #[unroll]
        for r in 0..comptime![parts * rows] {
            acc[r] += sum[r] * format::block_scale(s, v.fmt, wrow[r], b, blocks);
        }
        b += comptime![SPLIT_LANES];
    }
    let mut shared = Shared::<[f32]>::new_slice(comptime![SPLIT_LANES]);
    #[unroll]
    for r in 0..comptime![parts * rows] {
        acc[r] = workgroup_sum(acc[r], &mut shared, comptime![SPLIT_LANES]);
    }
    #[unroll]
    for j in 0..rows {
        let col = n0 + j;
        if lane == j && col < n {
            let mut up = 0.0f32;
            if comptime![v.glu] {
                up = acc[comptime![rows + j]];
            }
            out[out_offset + col] = finish(acc[j], up, bias, residual, n, 0usize, col, v);
        }
    }
}

std::thread_local! {
    // Per thread, as the subgroup cap: tests and benchmarks run both forms side by side.
    static SPLIT_GEMV: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Products of one row launched from this thread use [`split_k`] (k over the lanes) instead of
/// [`tiles`] (rows over the lanes). Off by default: on lavapipe and SwiftShader rows per lane are
/// what measured fastest; the split form is the usual one on GPUs, unmeasured without one (README
/// "On a GPU").
pub fn split_gemv(on: bool) {
    SPLIT_GEMV.set(on);
}

/// Rows of x and weight rows per invocation, by the number of x rows. CPU adapters (lavapipe,
/// SwiftShader) load storage buffers one lane and one component at a time, so every loaded
/// value must feed as many multiply-adds as registers allow. Measured with `mgm bench
/// --kernels` on lavapipe: one x row, 4 weight rows each; several, 8 x 16 tiles (2x Burn's f32
/// matmul; 4 x 8 was 1.4x); with x shared through subgroups, 16 x 8 (1.85x the 8 x 16 tiles
/// without; 32 x 16 was 10% faster again but took 10x as long to compile).
fn tile(m: usize, plane: usize) -> (usize, usize) {
    match (m, plane) {
        (1, _) => (1, 4),
        (_, 0) => (8, 16),
        _ => (16, 8),
    }
}

impl Variant {
    /// The bare product of `m` rows of x with a `fmt` matrix, tiled for this device.
    fn plain(fmt: Format, m: usize) -> Variant {
        let plane = plane();
        let (tm, tn) = tile(m, plane);
        let split = m == 1 && SPLIT_GEMV.get();
        let wide = fmt == Format::Q8 && crate::device::int64();
        Variant { fmt, tm, tn, bias: false, gamma: false, residual: false, act: Epilogue::None, glu: false, plane, split, wide }
    }
}

/// Lanes per workgroup: 64, fewer (in whole subgroups) when the matrix has fewer rows to cover.
fn lanes(n: usize, tn: usize) -> usize {
    (n.div_ceil(tn).div_ceil(8) * 8).clamp(8, 64)
}

/// Launches `matmul` (tiles, or k split over lanes) writing into columns `out_offset..` of `out`
/// (row stride `out_stride`).
#[allow(clippy::too_many_arguments)]
fn run(x: &CubeTensor, p: &Packed, bias: Option<CubeTensor>, residual: Option<CubeTensor>, out: &CubeTensor, out_stride: usize, out_offset: usize, variant: Variant) {
    let m = x.meta.shape()[0];
    let n = if variant.glu { p.rows / 2 } else { p.rows };
    let values = words(&p.values);
    let scales = p.scales.as_ref().map(words).unwrap_or_else(|| empty(x, [1]));
    let bias = bias.unwrap_or_else(|| empty(x, [1]));
    let residual = residual.unwrap_or_else(|| empty(x, [1]));
    let client = x.client.clone();
    let (count, lanes) = if variant.split {
        let (gx, gy) = grid(n.div_ceil(variant.tn));
        (CubeCount::Static(gx, gy, 1), SPLIT_LANES)
    } else {
        let lanes = lanes(n, variant.tn);
        (CubeCount::Static(n.div_ceil(lanes * variant.tn) as u32, m.div_ceil(variant.tm) as u32, 1), lanes)
    };
    // The weight words as u32, or as u64 where one load fetches two of them.
    let launch = if variant.wide { matmul::launch_unchecked::<u64> } else { matmul::launch_unchecked::<u32> };
    unsafe {
        launch(
            &client,
            count,
            CubeDim::new_1d(lanes as u32),
            if variant.plane > 0 && !variant.split { 1 } else { 4 },
            x.clone().into_buffer_arg(),
            values.into_buffer_arg(),
            scales.into_buffer_arg(),
            bias.into_buffer_arg(),
            residual.into_buffer_arg(),
            out.clone().into_buffer_arg(),
            m,
            n,
            p.k,
            out_stride,
            out_offset,
            variant,
        );
    }
}

/// `act(x Wᵀ + bias) [⊙ up] [⊙ γ] [+ residual]` for x `[m, k]`: `[m, n]`.
pub fn launch(x: Tensor<2>, p: &Packed, bias: Option<&Tensor<1>>, gamma: Option<&Tensor<1>>, residual: Option<Tensor<2>>, act: Epilogue, glu: bool) -> Tensor<2> {
    assert!(!(glu && bias.is_some()), "a gated product has no bias");
    let m = x.dims()[0];
    let n = if glu { p.rows / 2 } else { p.rows };
    let x = float(x);
    let variant = Variant { bias: bias.is_some(), gamma: gamma.is_some(), residual: residual.is_some(), act, glu, ..Variant::plain(p.format, m) };
    // γ rides in the bias buffer, after the bias: one binding fewer (WebGPU guarantees 8).
    let bias = match (bias, gamma) {
        (Some(b), Some(g)) => Some(float(Tensor::cat(vec![b.clone(), g.clone()], 0))),
        (Some(b), None) => Some(float(b.clone())),
        (None, None) => None,
        (None, Some(_)) => panic!("layer scale needs a bias"),
    };
    let out = empty(&x, [m, n]);
    run(&x, p, bias, residual.map(float), &out, n, 0, variant);
    wrap(out)
}

/// x against several row blocks, each written into its own columns of one `[m, Σ rows]` output.
pub fn launch_blocks(x: Tensor<2>, blocks: &[&Packed]) -> Tensor<2> {
    let m = x.dims()[0];
    let total: usize = blocks.iter().map(|p| p.rows).sum();
    let x = float(x);
    let out = empty(&x, [m, total]);
    let mut offset = 0;
    for p in blocks {
        run(&x, p, None, None, &out, total, offset, Variant::plain(p.format, m));
        offset += p.rows;
    }
    wrap(out)
}
