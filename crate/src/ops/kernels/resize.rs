//! Bilinear resizing of a channels-last map (PyTorch's `interpolate(mode="bilinear",
//! align_corners=False)`, no antialiasing).

use burn::tensor::Tensor;
use cubecl::prelude::*;

use super::{empty, float, grid, wrap};

/// out[oy, ox, c] from the four input pixels around ((oy + ½)·sy − ½, (ox + ½)·sx − ½), the
/// source clamped to the map: one invocation per (output pixel, vector of channels).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn bilinear<N: Size>(x: &[Vector<f32, N>], out: &mut [Vector<f32, N>], h: usize, w: usize, oh: usize, ow: usize, cv: usize, sy: f32, sx: f32) {
    let id = ABSOLUTE_POS;
    if id < oh * ow * cv {
        let ch = id % cv;
        let ox = (id / cv) % ow;
        let oy = id / (cv * ow);
        let fy = f32::min(f32::max((f32::cast_from(oy) + 0.5f32) * sy - 0.5f32, 0.0f32), f32::cast_from(h - 1));
        let fx = f32::min(f32::max((f32::cast_from(ox) + 0.5f32) * sx - 0.5f32, 0.0f32), f32::cast_from(w - 1));
        let (y0, x0) = (usize::cast_from(fy), usize::cast_from(fx));
        let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
        let ly = Vector::<f32, N>::new(fy - f32::cast_from(y0));
        let lx = Vector::<f32, N>::new(fx - f32::cast_from(x0));
        let (a, b) = (x[(y0 * w + x0) * cv + ch], x[(y0 * w + x1) * cv + ch]);
        let (c, d) = (x[(y1 * w + x0) * cv + ch], x[(y1 * w + x1) * cv + ch]);
        let top = a + (b - a) * lx;
        let bottom = c + (d - c) * lx;
        out[id] = top + (bottom - top) * ly;
    }
}

/// `x` `[h, w, c]` -> `[oh, ow, c]`.
pub fn launch(x: Tensor<3>, [oh, ow]: [usize; 2]) -> Tensor<3> {
    let [h, w, c] = x.dims();
    let nv = if c % 4 == 0 { 4 } else { 1 };
    let x = float(x);
    let out = empty(&x, [oh, ow, c]);
    let units = oh * ow * c / nv;
    let cube = 64;
    let (gx, gy) = grid(units.div_ceil(cube));
    let client = x.client.clone();
    unsafe {
        bilinear::launch_unchecked(
            &client,
            CubeCount::Static(gx, gy, 1),
            CubeDim::new_1d(cube as u32),
            nv,
            x.into_buffer_arg(),
            out.clone().into_buffer_arg(),
            h,
            w,
            oh,
            ow,
            c / nv,
            h as f32 / oh as f32,
            w as f32 / ow as f32,
        );
    }
    wrap(out)
}
