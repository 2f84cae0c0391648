//! ConvNeXt (V1, timm `convnext_large` flags) — the high-resolution branch, spec §1.3. MGM keeps
//! the stem and the four stages and uses every stage's output.

use std::ops::Range;

use burn::tensor::activation::gelu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use super::layers::{Conv2d, LayerNorm, Linear};
use crate::config::ConvNextConfig;
use crate::error::Result;
use crate::weights::Loader;

const EPS: f64 = 1e-6; // timm's ConvNeXt LayerNorms (CLIP's use 1e-5)

/// LayerNorm over the channels of an NCHW map (timm's LayerNorm2d).
fn norm_2d(norm: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    norm.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

struct Block {
    conv_dw: Conv2d,
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    gamma: Tensor<1>,
}

impl Block {
    fn load(w: &mut Loader, p: &str, dim: usize) -> Result<Self> {
        Ok(Block {
            conv_dw: Conv2d::load(w, &format!("{p}.conv_dw"), dim, dim, 7, 1, 3, dim, true)?,
            norm: LayerNorm::load(w, &format!("{p}.norm"), dim, EPS)?,
            fc1: Linear::load(w, &format!("{p}.mlp.fc1"), dim, 4 * dim, true)?,
            fc2: Linear::load(w, &format!("{p}.mlp.fc2"), 4 * dim, dim, true)?,
            gamma: w.get(&format!("{p}.gamma"), [dim])?,
        })
    }

    /// x + gamma * fc2(gelu(fc1(LN(dwconv(x))))), computed channels-last. No DropPath at inference.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv_dw.forward(x.clone()).permute([0, 2, 3, 1]);
        let y = self.fc2.forward(gelu(self.fc1.forward(self.norm.forward(y))));
        x + (y * self.gamma.clone().unsqueeze::<4>()).permute([0, 3, 1, 2])
    }
}

struct Stage {
    /// LayerNorm2d then a 2x2 stride-2 conv; absent in stage 0.
    downsample: Option<(LayerNorm, Conv2d)>,
    blocks: Vec<Block>,
}

pub struct ConvNext {
    stem: (Conv2d, LayerNorm),
    stages: Vec<Stage>,
}

impl ConvNext {
    /// `prefix` is e.g. `model.vision_tower_aux` (keys `vision_stem.*`, `vision_stages.*`).
    pub fn load(w: &mut Loader, prefix: &str, c: &ConvNextConfig) -> Result<Self> {
        let stem = (
            Conv2d::load(w, &format!("{prefix}.vision_stem.0"), 3, c.dims[0], 4, 4, 0, 1, true)?,
            LayerNorm::load(w, &format!("{prefix}.vision_stem.1"), c.dims[0], EPS)?,
        );
        let mut stages = Vec::new();
        for (s, (&depth, &dim)) in c.depths.iter().zip(&c.dims).enumerate() {
            let p = format!("{prefix}.vision_stages.{s}");
            let downsample = if s == 0 {
                None
            } else {
                let prev = c.dims[s - 1];
                Some((
                    LayerNorm::load(w, &format!("{p}.downsample.0"), prev, EPS)?,
                    Conv2d::load(w, &format!("{p}.downsample.1"), prev, dim, 2, 2, 0, 1, true)?,
                ))
            };
            let blocks = (0..depth).map(|b| Block::load(w, &format!("{p}.blocks.{b}"), dim)).collect::<Result<_>>()?;
            stages.push(Stage { downsample, blocks });
        }
        Ok(ConvNext { stem, stages })
    }

    /// Pixels `[b, 3, s, s]` -> the four stage outputs, strides 4, 8, 16, 32.
    pub fn stages(&self, pixels: Tensor<4>) -> Vec<Tensor<4>> {
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

    /// The high-resolution map X_H: every stage bilinearly upsampled (align_corners=false) to
    /// stage 0's size and concatenated on channels, `[b, sum(dims), s/4, s/4]`.
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<4> {
        let stages = self.stages(pixels);
        let h = stages[0].dims()[2];
        hr_rows(&stages, 0..h)
    }
}

/// Rows `rows` of X_H, computed from a band of each stage with one source row of margin, so the
/// whole 2880-channel map never has to exist at once (it is 425 MB in f32 at 768 px, more than
/// a WebGPU binding may hold). Bilinear weights only depend on the scale, so a band upsampled by
/// the same integer factor gives the same rows as the whole map.
pub fn hr_rows(stages: &[Tensor<4>], rows: Range<usize>) -> Tensor<4> {
    let [_, _, h0, w0] = stages[0].dims();
    let mut maps = vec![stages[0].clone().slice_dim(2, rows.clone())];
    for s in &stages[1..] {
        let h = s.dims()[2];
        let f = h0 / h;
        // Source rows that output rows [y0, y1) read, plus one row either side.
        let src = |y: usize| ((y as f64 + 0.5) / f as f64 - 0.5).floor().max(0.0) as usize;
        let a = src(rows.start).saturating_sub(1);
        let b = (src(rows.end - 1) + 3).min(h);
        let up = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size([(b - a) * f, w0]);
        let band = interpolate(s.clone().slice_dim(2, a..b), up);
        maps.push(band.slice_dim(2, rows.start - a * f..rows.end - a * f));
    }
    Tensor::cat(maps, 1)
}
