//! ConvNeXt (V1, timm `convnext_large` flags) — the high-resolution branch, spec §1.3. MGM keeps
//! the stem and the four stages and uses every stage's output. Maps are channels-last
//! `[h, w, c]` throughout, so LayerNorms and the MLPs read rows.

use std::ops::Range;

use burn::tensor::Tensor;

use super::layers::{LayerNorm, Linear, PatchConv};
use crate::config::ConvNextConfig;
use crate::error::Result;
use crate::ops::{self, Act};
use crate::weights::Loader;

const EPS: f64 = 1e-6; // timm's ConvNeXt LayerNorms (CLIP's use 1e-5)

/// LayerNorm over the channels of a channels-last map.
fn norm_2d(norm: &LayerNorm, x: Tensor<3>) -> Tensor<3> {
    let [h, w, c] = x.dims();
    norm.forward(x.reshape([h * w, c])).reshape([h, w, c])
}

#[derive(Clone)]
struct Block {
    /// Depthwise 7x7, stored `[7, 7, dim]`.
    dw_weight: Tensor<3>,
    dw_bias: Tensor<1>,
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    gamma: Tensor<1>,
}

impl Block {
    fn load(w: &mut Loader, p: &str, dim: usize) -> Result<Self> {
        let dw: Tensor<4> = w.get(&format!("{p}.conv_dw.weight"), [dim, 1, 7, 7])?;
        Ok(Block {
            dw_weight: dw.reshape([dim, 7, 7]).permute([1, 2, 0]),
            dw_bias: w.get(&format!("{p}.conv_dw.bias"), [dim])?,
            norm: LayerNorm::load(w, &format!("{p}.norm"), dim, EPS)?,
            fc1: Linear::load(w, &format!("{p}.mlp.fc1"), dim, 4 * dim, true)?,
            fc2: Linear::load(w, &format!("{p}.mlp.fc2"), 4 * dim, dim, true)?,
            gamma: w.get(&format!("{p}.gamma"), [dim])?,
        })
    }

    /// x + gamma * fc2(gelu(fc1(LN(dwconv(x))))). No DropPath at inference.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [h, w, c] = x.dims();
        let y = ops::depthwise_conv(x.clone(), &self.dw_weight, &self.dw_bias).reshape([h * w, c]);
        let y = self.fc1.forward_act(self.norm.forward(y), Act::Gelu);
        let bias = self.fc2.bias.as_ref().expect("fc2 has a bias");
        ops::linear_scale_add(y, &self.fc2.weight, bias, &self.gamma, x.reshape([h * w, c])).reshape([h, w, c])
    }
}

#[derive(Clone)]
struct Stage {
    /// LayerNorm then a 2x2 stride-2 conv; absent in stage 0.
    downsample: Option<(LayerNorm, PatchConv)>,
    blocks: Vec<Block>,
}

#[derive(Clone)]
pub struct ConvNext {
    stem: (PatchConv, LayerNorm),
    stages: Vec<Stage>,
}

impl ConvNext {
    /// `prefix` is e.g. `model.vision_tower_aux` (keys `vision_stem.*`, `vision_stages.*`).
    pub fn load(w: &mut Loader, prefix: &str, c: &ConvNextConfig) -> Result<Self> {
        let stem = (
            PatchConv::load(w, &format!("{prefix}.vision_stem.0"), 3, c.dims[0], 4, true)?,
            LayerNorm::load(w, &format!("{prefix}.vision_stem.1"), c.dims[0], EPS)?,
        );
        let mut stages = Vec::new();
        for (s, (&depth, &dim)) in c.depths.iter().zip(&c.dims).enumerate() {
            let p = format!("{prefix}.vision_stages.{s}");
            let downsample = if s == 0 {
                None
            } else {
                let prev = c.dims[s - 1];
                Some((LayerNorm::load(w, &format!("{p}.downsample.0"), prev, EPS)?, PatchConv::load(w, &format!("{p}.downsample.1"), prev, dim, 2, true)?))
            };
            let blocks = (0..depth).map(|b| Block::load(w, &format!("{p}.blocks.{b}"), dim)).collect::<Result<_>>()?;
            stages.push(Stage { downsample, blocks });
        }
        Ok(ConvNext { stem, stages })
    }

    /// Channels-last pixels `[s, s, 3]` -> the four stage outputs `[h, w, c]`, strides 4, 8, 16, 32.
    pub fn stages(&self, pixels: Tensor<3>) -> Vec<Tensor<3>> {
        let mut x = norm_2d(&self.stem.1, self.stem.0.forward(pixels));
        let mut outs = Vec::new();
        for stage in &self.stages {
            if let Some((norm, conv)) = &stage.downsample {
                x = conv.forward(norm_2d(norm, x));
            }
            for block in &stage.blocks {
                x = block.forward(x);
            }
            outs.push(x.clone());
        }
        outs
    }

    /// The same tower with only the first `n` blocks of each stage (see `Mgm::one_layer_each`).
    pub fn first_blocks(&self, n: usize) -> Self {
        let mut t = self.clone();
        t.stages.iter_mut().for_each(|s| s.blocks.truncate(n));
        t
    }

    /// The high-resolution map X_H: every stage bilinearly upsampled (align_corners=false) to
    /// stage 0's size and concatenated on channels, `[s/4, s/4, sum(dims)]`.
    pub fn forward(&self, pixels: Tensor<3>) -> Tensor<3> {
        let stages = self.stages(pixels);
        let h = stages[0].dims()[0];
        hr_rows(&stages, 0..h)
    }
}

/// Rows `rows` of X_H `[rows, w, Σ c]`, computed from a band of each stage with one source row
/// of margin, so the whole 2880-channel map never has to exist at once (it is 425 MB in f32 at
/// 768 px, more than a WebGPU binding may hold). Bilinear weights only depend on the scale, so a
/// band upsampled by the same integer factor gives the same rows as the whole map.
pub fn hr_rows(stages: &[Tensor<3>], rows: Range<usize>) -> Tensor<3> {
    let [h0, w0, _] = stages[0].dims();
    let mut maps = vec![stages[0].clone().slice_dim(0, rows.clone())];
    for s in &stages[1..] {
        let h = s.dims()[0];
        let f = h0 / h;
        // Source rows that output rows [y0, y1) read, plus one row either side.
        let src = |y: usize| ((y as f64 + 0.5) / f as f64 - 0.5).floor().max(0.0) as usize;
        let a = src(rows.start).saturating_sub(1);
        let b = (src(rows.end - 1) + 3).min(h);
        let band = ops::resize_bilinear(s.clone().slice_dim(0, a..b), [(b - a) * f, w0]);
        maps.push(band.slice_dim(0, rows.start - a * f..rows.end - a * f));
    }
    Tensor::cat(maps, 2)
}
