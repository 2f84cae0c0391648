//! CLIP ViT vision tower (the low-resolution branch, spec §1.2). MGM reads hidden_states[-2]:
//! the output of the second-to-last layer, CLS dropped, no post-LayerNorm.

use burn::tensor::Tensor;

use super::layers::{LayerNorm, Linear, PatchConv};
use crate::config::ClipConfig;
use crate::error::Result;
use crate::ops::{self, Act};
use crate::weights::Loader;

#[derive(Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    /// q, k and v projections as one.
    qkv_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl EncoderLayer {
    fn load(w: &mut Loader, p: &str, c: &ClipConfig) -> Result<Self> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let lin = |w: &mut Loader, name: &str, a, b| Linear::load(w, &format!("{p}.{name}"), a, b, true);
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(w, &format!("{p}.layer_norm1"), h, eps)?,
            qkv_proj: Linear::stack(vec![lin(w, "self_attn.q_proj", h, h)?, lin(w, "self_attn.k_proj", h, h)?, lin(w, "self_attn.v_proj", h, h)?]),
            out_proj: lin(w, "self_attn.out_proj", h, h)?,
            layer_norm2: LayerNorm::load(w, &format!("{p}.layer_norm2"), h, eps)?,
            fc1: lin(w, "mlp.fc1", h, i)?,
            fc2: lin(w, "mlp.fc2", i, h)?,
            heads: c.num_attention_heads,
        })
    }

    /// `[n, hidden]` -> same.
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let attn = ops::attention(self.qkv_proj.forward(self.layer_norm1.forward(x.clone())), self.heads);
        let x = self.out_proj.forward_add(attn, x);
        let y = self.fc1.forward_act(self.layer_norm2.forward(x.clone()), Act::QuickGelu);
        self.fc2.forward_add(y, x)
    }
}

#[derive(Clone)]
pub struct ClipVision {
    patch_embedding: PatchConv,
    class_embedding: Tensor<1>,
    position_embedding: Tensor<2>,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
}

impl ClipVision {
    /// `prefix` is the `vision_model` path, e.g. `model.vision_tower.vision_tower.vision_model`.
    /// Only the layers MGM uses are loaded (23 of 24 for select_layer -2).
    pub fn load(w: &mut Loader, prefix: &str, c: &ClipConfig, select_layer: i64) -> Result<Self> {
        let (h, p) = (c.hidden_size, c.patch_size);
        let positions = c.num_patches() + 1;
        let used = c.layers_used(select_layer)?;
        let mut layers = Vec::with_capacity(used);
        for j in 0..used {
            layers.push(EncoderLayer::load(w, &format!("{prefix}.encoder.layers.{j}"), c)?);
        }
        Ok(ClipVision {
            patch_embedding: PatchConv::load(w, &format!("{prefix}.embeddings.patch_embedding"), 3, h, p, false)?,
            class_embedding: w.get(&format!("{prefix}.embeddings.class_embedding"), [h])?,
            position_embedding: w.get(&format!("{prefix}.embeddings.position_embedding.weight"), [positions, h])?,
            // (sic) the checkpoint's spelling
            pre_layrnorm: LayerNorm::load(w, &format!("{prefix}.pre_layrnorm"), h, c.layer_norm_eps)?,
            layers,
        })
    }

    /// Channels-last pixels `[s, s, 3]` -> patch features `[(s/p)^2, hidden]`, row-major over
    /// the grid.
    pub fn forward(&self, pixels: Tensor<3>) -> Tensor<2> {
        let patches = self.patch_embedding.forward(pixels); // [g, g, h]
        let [g, _, h] = patches.dims();
        let x = Tensor::cat(vec![self.class_embedding.clone().reshape([1, h]), patches.reshape([g * g, h])], 0) + self.position_embedding.clone();
        let mut x = self.pre_layrnorm.forward(x);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        x.slice_dim(0, 1..g * g + 1)
    }

    /// The same tower with only its first `n` layers (see `Mgm::one_layer_each`).
    pub fn first_layers(&self, n: usize) -> Self {
        let mut t = self.clone();
        t.layers.truncate(n);
        t
    }
}
