//! Model configuration read from an HF `config.json` (Gemma keys; MGM adds its own on top).

use serde::Deserialize;

use crate::bail;
use crate::error::{MgmError, Result};

/// Gemma's MLP activation. transformers 4.38 (MGM's era) read `hidden_act: "gelu"` as exact erf-GELU;
/// 5.x rewrites it to tanh. We follow the config literally, 4.38-style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    Exact,
    Tanh,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub gelu: Gelu,
}

/// The keys as HF writes them; defaults are Gemma-2B's.
#[derive(Deserialize)]
struct HfGemma {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    8192
}

impl GemmaConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let hf: HfGemma = serde_json::from_str(text)
            .map_err(|e| MgmError::Format(format!("config.json: {e}")))?;
        // `hidden_activation` is the newer key and wins when both are present.
        let act = hf.hidden_activation.or(hf.hidden_act).unwrap_or_else(|| "gelu".into());
        let gelu = match act.as_str() {
            "gelu" => Gelu::Exact,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Gelu::Tanh,
            other => bail!(Mismatch, "config.json: unsupported activation {other:?} (expected gelu or gelu_pytorch_tanh)"),
        };
        let cfg = GemmaConfig {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_position_embeddings: hf.max_position_embeddings,
            gelu,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Gemma-2B as released (the LLM inside MGM-2B).
    pub fn gemma_2b() -> Self {
        GemmaConfig {
            vocab_size: 256000,
            hidden_size: 2048,
            intermediate_size: 16384,
            num_hidden_layers: 18,
            num_attention_heads: 8,
            num_key_value_heads: 1,
            head_dim: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 8192,
            gelu: Gelu::Exact,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            bail!(Mismatch, "config.json: {name} must be positive");
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            bail!(
                Mismatch,
                "config.json: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!(Mismatch, "config.json: head_dim ({}) must be even for rotary embeddings", self.head_dim);
        }
        Ok(())
    }
}

/// CLIP vision tower; HF `CLIPVisionConfig` keys, defaults CLIP ViT-L/14-336.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size: 336,
            patch_size: 14,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipConfig {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Layers to run for `hidden_states[select_layer]` (HF counts the embeddings as entry 0).
    pub fn layers_used(&self, select_layer: i64) -> Result<usize> {
        let n = self.num_hidden_layers as i64;
        let used = if select_layer < 0 { n + 1 + select_layer } else { select_layer };
        if !(1..=n).contains(&used) {
            bail!(Mismatch, "config.json: mm_vision_select_layer {select_layer} is outside the {n} CLIP layers");
        }
        Ok(used as usize)
    }
}

/// ConvNeXt tower; defaults ConvNeXt-L.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ConvNextConfig {
    pub depths: Vec<usize>,
    pub dims: Vec<usize>,
}

impl Default for ConvNextConfig {
    fn default() -> Self {
        ConvNextConfig { depths: vec![3, 3, 27, 3], dims: vec![192, 384, 768, 1536] }
    }
}

/// MGM: Gemma plus the two towers, patch info mining and the projector (spec §1.5). A config
/// without `mm_hidden_size` is a plain Gemma and has no vision half.
#[derive(Debug, Clone, PartialEq)]
pub struct MgmConfig {
    pub gemma: GemmaConfig,
    pub vision: Option<VisionConfig>,
    /// `tokenizer_model_max_length`: the longest embedding sequence MGM was trained on.
    pub max_length: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub clip: ClipConfig,
    pub convnext: ConvNextConfig,
    pub mm_hidden_size: usize,
    pub mm_hidden_size_aux: usize,
    pub image_size_aux: usize,
    pub select_layer: i64,
}

#[derive(Deserialize)]
struct HfMgm {
    mm_hidden_size: Option<usize>,
    mm_hidden_size_aux: Option<usize>,
    #[serde(default = "default_image_size_aux")]
    image_size_aux: usize,
    #[serde(default = "default_select_layer")]
    mm_vision_select_layer: i64,
    #[serde(default = "default_select_feature")]
    mm_vision_select_feature: String,
    #[serde(default = "default_projector")]
    mm_projector_type: String,
    #[serde(default)]
    mm_use_im_start_end: bool,
    #[serde(default = "default_grid")]
    image_grid: usize,
    tokenizer_model_max_length: Option<usize>,
    #[serde(default)]
    vision_config: ClipConfig,
    #[serde(default)]
    vision_aux_config: ConvNextConfig,
}

fn default_image_size_aux() -> usize {
    768
}
fn default_select_layer() -> i64 {
    -2
}
fn default_select_feature() -> String {
    "patch".into()
}
fn default_projector() -> String {
    "mlp2x_gelu".into()
}
fn default_grid() -> usize {
    1
}

impl MgmConfig {
    /// MGM-2B as released: Gemma-2B, CLIP ViT-L/14-336, ConvNeXt-L at 768.
    pub fn mgm_2b() -> Self {
        let clip = ClipConfig::default();
        let convnext = ConvNextConfig::default();
        MgmConfig {
            gemma: GemmaConfig::gemma_2b(),
            vision: Some(VisionConfig {
                mm_hidden_size: clip.hidden_size,
                mm_hidden_size_aux: convnext.dims.iter().sum(),
                clip,
                convnext,
                image_size_aux: 768,
                select_layer: -2,
            }),
            max_length: 2048,
        }
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let gemma = GemmaConfig::from_json(text)?;
        let hf: HfMgm = serde_json::from_str(text).map_err(|e| MgmError::Format(format!("config.json: {e}")))?;
        let max_length = hf.tokenizer_model_max_length.unwrap_or(gemma.max_position_embeddings).min(gemma.max_position_embeddings);
        let Some(mm_hidden_size) = hf.mm_hidden_size else {
            return Ok(MgmConfig { gemma, vision: None, max_length });
        };
        let v = VisionConfig {
            mm_hidden_size,
            mm_hidden_size_aux: hf.mm_hidden_size_aux.unwrap_or(hf.vision_aux_config.dims.iter().sum()),
            clip: hf.vision_config,
            convnext: hf.vision_aux_config,
            image_size_aux: hf.image_size_aux,
            select_layer: hf.mm_vision_select_layer,
        };
        // What this implementation supports of MGM's options, said plainly rather than guessed.
        let unsupported = [
            (hf.mm_vision_select_feature != "patch", format!("mm_vision_select_feature {:?}", hf.mm_vision_select_feature)),
            (hf.mm_projector_type != "mlp2x_gelu", format!("mm_projector_type {:?}", hf.mm_projector_type)),
            (hf.mm_use_im_start_end, "mm_use_im_start_end true".into()),
            (hf.image_grid != 1, format!("image_grid {} (the HD variant)", hf.image_grid)),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
            bail!(Mismatch, "config.json: {what} is not supported (MGM-2B uses patch, mlp2x_gelu, no start/end tokens, grid 1)");
        }
        let c = &v.clip;
        if v.mm_hidden_size != c.hidden_size {
            bail!(Mismatch, "config.json: mm_hidden_size {} differs from the CLIP width {}", v.mm_hidden_size, c.hidden_size);
        }
        if v.mm_hidden_size_aux != v.convnext.dims.iter().sum::<usize>() || v.convnext.dims.len() != v.convnext.depths.len() || v.convnext.dims.is_empty() {
            bail!(Mismatch, "config.json: mm_hidden_size_aux {} does not match ConvNeXt dims {:?}", v.mm_hidden_size_aux, v.convnext.dims);
        }
        let stride = 4 << (v.convnext.dims.len() - 1);
        if !c.image_size.is_multiple_of(c.patch_size) || !v.image_size_aux.is_multiple_of(stride) || !(v.image_size_aux / 4).is_multiple_of(c.grid()) {
            bail!(
                Mismatch,
                "config.json: image sizes do not tile: CLIP {} / patch {}, image_size_aux {} must be a multiple of {stride} whose stride-4 map splits into {}x{} windows",
                c.image_size, c.patch_size, v.image_size_aux, c.grid(), c.grid()
            );
        }
        c.layers_used(v.select_layer)?;
        Ok(MgmConfig { gemma, vision: Some(v), max_length })
    }
}
