//! MGM: the two vision towers, patch info mining and the projector in front of Gemma (spec §2).

use burn::tensor::Tensor;

use super::clip::ClipVision;
use super::convnext::{hr_rows, ConvNext};
use super::gemma::Gemma;
use super::layers::Linear;
use super::mining::{windows, Mined, PatchMining};
use crate::config::{MgmConfig, VisionConfig};
use crate::ops::{self, Act};
use crate::error::Result;
use crate::weights::{Loader, BLOCK_BYTES};

#[derive(Clone)]
pub struct Vision {
    pub config: VisionConfig,
    pub clip: ClipVision,
    pub convnext: ConvNext,
    pub mining: PatchMining,
    /// `mlp2x_gelu`: Linear(C_v -> D), exact GELU, Linear(D -> D).
    pub mm_projector: (Linear, Linear),
    /// Largest slice of the HR map mined at once (bytes of f32).
    pub band_bytes: usize,
}

/// What one image becomes on its way into Gemma.
#[derive(Clone)]
pub struct ImageFeatures {
    /// CLIP tokens X_L, `[N, C_v]`.
    pub clip: Tensor<2>,
    /// The HR map X_H `[C_a, H, W]`, only when asked for (it is large).
    pub aux: Option<Tensor<3>>,
    /// Mining attention over each token's window, `[N, S*S]`.
    pub attention: Tensor<2>,
    /// Mining's output: the CLIP tokens with what they mined added, `[N, C_v]`.
    pub mined: Tensor<2>,
    /// Projected tokens for Gemma, `[N, hidden]` (unscaled; Gemma scales them).
    pub embeds: Tensor<2>,
}

impl Vision {
    pub fn load(w: &mut Loader, v: &VisionConfig, hidden: usize) -> Result<Self> {
        let c_v = v.mm_hidden_size;
        Ok(Vision {
            clip: ClipVision::load(w, "model.vision_tower.vision_tower.vision_model", &v.clip, v.select_layer)?,
            convnext: ConvNext::load(w, "model.vision_tower_aux", &v.convnext)?,
            mining: PatchMining::load(w, c_v, v.mm_hidden_size_aux)?,
            mm_projector: (
                Linear::load(w, "model.mm_projector.0", c_v, hidden, true)?,
                Linear::load(w, "model.mm_projector.2", hidden, hidden, true)?,
            ),
            config: v.clone(),
            band_bytes: BLOCK_BYTES,
        })
    }

    /// One preprocessed image `[1, 3, s_aux, s_aux]` (normalised) through both towers, mining and
    /// the projector. `keep_aux` returns X_H too.
    pub fn encode(&self, hr: Tensor<4>, keep_aux: bool) -> ImageFeatures {
        self.encode_mining_with(hr, keep_aux, PatchMining::forward)
    }

    /// `encode` with another form of mining (`PatchMining::forward_direct`, the reference).
    pub fn encode_mining_with(&self, hr: Tensor<4>, keep_aux: bool, mine: fn(&PatchMining, Tensor<2>, Tensor<3>) -> Mined) -> ImageFeatures {
        let c = &self.config.clip;
        // The LR input is the normalised HR tensor resized bilinearly (no antialias), not a
        // fresh 336 px preprocess: that is how MGM was trained (spec §3 step 4).
        let hr = hr.squeeze_dim::<3>(0).permute([1, 2, 0]); // channels last
        let clip = self.clip.forward(ops::resize_bilinear(hr.clone(), [c.image_size, c.image_size])); // [N, C_v]
        let stages = self.convnext.stages(hr);
        let ([h, w, _], c_a) = (stages[0].dims(), self.config.mm_hidden_size_aux);
        let (grid, window) = (c.grid(), h / c.grid());
        // Mine a band of window rows at a time so no tensor outgrows a WebGPU binding.
        let band = (self.band_bytes / (window * w * c_a * 4)).clamp(1, grid);
        let (mut tokens, mut attention, mut aux) = (Vec::new(), Vec::new(), Vec::new());
        for r0 in (0..grid).step_by(band) {
            let r1 = (r0 + band).min(grid);
            let x_h = hr_rows(&stages, r0 * window..r1 * window);
            if keep_aux {
                aux.push(x_h.clone());
            }
            let lr_band = clip.clone().slice_dim(0, r0 * grid..r1 * grid);
            let win = windows(x_h, window);
            let mined = mine(&self.mining, lr_band, win);
            tokens.push(mined.tokens);
            attention.push(mined.attention);
        }
        let (p0, p2) = &self.mm_projector;
        let mined = Tensor::cat(tokens, 0);
        let embeds = p2.forward(p0.forward_act(mined.clone(), Act::Gelu));
        ImageFeatures {
            clip,
            aux: keep_aux.then(|| Tensor::cat(aux, 0).permute([2, 0, 1])),
            attention: Tensor::cat(attention, 0),
            mined,
            embeds,
        }
    }
}

#[derive(Clone)]
pub struct Mgm {
    pub config: MgmConfig,
    pub gemma: Gemma,
    pub vision: Option<Vision>,
}

impl Mgm {
    pub fn load(w: &mut Loader, config: &MgmConfig) -> Result<Self> {
        let gemma = Gemma::load(w, &config.gemma)?;
        let vision = match &config.vision {
            Some(v) => Some(Vision::load(w, v, config.gemma.hidden_size)?),
            None => None,
        };
        Ok(Mgm { config: config.clone(), gemma, vision })
    }

    /// The model with one layer of each kind (Gemma, CLIP, each ConvNeXt stage), sharing the
    /// weights: it launches every kernel the whole model does, with the same shapes, in a
    /// fraction of the time. Loading runs it once so that no question compiles a shader.
    pub fn one_layer_each(&self) -> Mgm {
        let mut m = self.clone();
        m.gemma = m.gemma.first_layers(1);
        if let Some(v) = &mut m.vision {
            v.clip = v.clip.first_layers(1);
            v.convnext = v.convnext.first_blocks(1);
        }
        m
    }
}
