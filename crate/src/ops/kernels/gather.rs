//! Rows of a stored matrix as f32: the embedding lookup, and whole matrices where a weight is
//! needed as a plain tensor (conv kernels, the mining shortcut).

use burn::tensor::{DType, Int, Tensor, TensorData};
use cubecl::prelude::*;

use super::format::{self, Format};
use super::{empty, grid, words, wrap, Packed};

/// out[r, :] = scale * W[ids[r], :] for `ids` rows of W `[rows, cols]`. One invocation per
/// (row, block of 32 values).
#[cube(launch_unchecked)]
pub fn gather_rows(w: &[u32], s: &[u32], ids: &[u32], out: &mut [f32], n: usize, cols: usize, scale: f32, #[comptime] fmt: Format) {
    let blocks = cols / 32;
    let id = ABSOLUTE_POS;
    if id < n * blocks {
        let (r, b) = (id / blocks, id % blocks);
        let row = ids[r] as usize;
        let d = format::block_scale(s, fmt, row, b, blocks) * scale;
        #[unroll]
        for c in 0..8usize {
            let q = format::decode4(w, fmt, (row * blocks + b) * comptime![fmt.words_per_block()], c);
            #[unroll]
            for t in 0..4usize {
                out[r * cols + b * 32 + comptime![4 * c + t]] = q.extract(t) * d;
            }
        }
    }
}

/// Rows `ids` of `p`, times `scale`: `[ids.len(), k]`.
pub fn launch(p: &Packed, ids: &[u32], scale: f32) -> Tensor<2> {
    let device = p.values.device();
    let n = ids.len();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [n]), (&device, DType::U32));
    let ids = words(&ids);
    let out = empty(&ids, [n, p.k]);
    let values = words(&p.values);
    let scales = p.scales.as_ref().map(words).unwrap_or_else(|| empty(&ids, [1]));
    let units = n * p.k / 32;
    let client = ids.client.clone();
    let cube = 64;
    let (gx, gy) = grid(units.div_ceil(cube));
    unsafe {
        gather_rows::launch_unchecked(
            &client,
            CubeCount::Static(gx, gy, 1),
            CubeDim::new_1d(cube as u32),
            values.into_buffer_arg(),
            scales.into_buffer_arg(),
            ids.into_buffer_arg(),
            out.clone().into_buffer_arg(),
            n,
            p.k,
            scale,
            p.format,
        );
    }
    wrap(out)
}

/// The whole matrix as f32 `[rows, k]`.
pub fn all_rows(p: &Packed) -> Tensor<2> {
    let ids: Vec<u32> = (0..p.rows as u32).collect();
    launch(p, &ids, 1.0)
}
