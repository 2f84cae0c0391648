//! Gemma (the first one): the language model of MGM-2B. Spec §1.1.

use burn::tensor::activation::{gelu, gelu_approximate};
use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::kv_cache::KvCache;
use super::layers::{attend, Embedding, Linear};
use crate::config::{Gelu, GemmaConfig};
use crate::error::Result;
use crate::weights::Loader;

/// y = x / rms(x) * (1 + w): Gemma stores an offset, not a scale.
pub struct RmsNorm {
    scale: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn load(w: &mut Loader, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm { scale: w.get(name, [dim])?.add_scalar(1.0), eps })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let rms = x.clone().square().mean_dim(2).add_scalar(self.eps).sqrt();
        (x / rms) * self.scale.clone().unsqueeze::<3>()
    }
}

/// Rotate-half (NeoX) rotary embedding tables, `[max_positions, head_dim]`.
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, max_positions: usize, device: &Device) -> Self {
        // f32 like transformers: inv_freq[i] = theta^(-2i/d), angle = pos * inv_freq.
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..max_positions {
            for j in 0..head_dim {
                let angle = pos as f32 * inv[j % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v| Tensor::from_data(TensorData::new(v, [max_positions, head_dim]), device);
        Rope { cos: table(cos), sin: table(sin) }
    }

    /// x: `[1, heads, n, head_dim]` at positions `start..start+n`.
    pub fn apply(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [_, _, n, d] = x.dims();
        let cos = self.cos.clone().slice([start..start + n, 0..d]).unsqueeze::<4>();
        let sin = self.sin.clone().slice([start..start + n, 0..d]).unsqueeze::<4>();
        let first = x.clone().slice_dim(3, 0..d / 2);
        let second = x.clone().slice_dim(3, d / 2..d);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * cos + rotated * sin
    }
}

pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &mut Loader, p: &str, c: &GemmaConfig) -> Result<Self> {
        let (h, q, kv) = (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        Ok(Attention {
            q_proj: Linear::load(w, &format!("{p}.q_proj"), h, q, false)?,
            k_proj: Linear::load(w, &format!("{p}.k_proj"), h, kv, false)?,
            v_proj: Linear::load(w, &format!("{p}.v_proj"), h, kv, false)?,
            o_proj: Linear::load(w, &format!("{p}.o_proj"), q, h, false)?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        })
    }

    /// `[1, n, hidden]` -> `[1, n, hidden]`; reads and extends `cache` for `layer`.
    fn forward(&self, x: Tensor<3>, rope: &Rope, cache: &mut KvCache, layer: usize) -> Tensor<3> {
        let [_, n, _] = x.dims();
        let device = x.device();
        let start = cache.len();
        let split = |t: Tensor<3>, heads| t.reshape([1, n, heads, self.head_dim]).swap_dims(1, 2);
        let q = rope.apply(split(self.q_proj.forward(x.clone()), self.heads), start);
        let k = rope.apply(split(self.k_proj.forward(x.clone()), self.kv_heads), start);
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let (k, v) = cache.append(layer, k, v);
        let total = start + n;
        // Multi-/grouped-query: query head h reads kv head h / (heads / kv_heads).
        let group = self.heads / self.kv_heads;
        let expand = |t: Tensor<4>| {
            if group == 1 {
                return t;
            }
            t.unsqueeze_dim::<5>(2)
                .expand([1, self.kv_heads, group, total, self.head_dim])
                .reshape([1, self.heads, total, self.head_dim])
        };
        let mask = (n > 1).then(|| causal_mask(n, start, &device));
        let out = attend(q, expand(k), expand(v), mask);
        self.o_proj.forward(out.swap_dims(1, 2).reshape([1, n, self.heads * self.head_dim]))
    }
}

/// True where query i (at position start+i) must not see key j: j > start + i.
fn causal_mask(n: usize, start: usize, device: &Device) -> Tensor<4, Bool> {
    let total = start + n;
    let mask: Vec<bool> = (0..n).flat_map(|i| (0..total).map(move |j| j > start + i)).collect();
    Tensor::<2, Bool>::from_data(TensorData::new(mask, [n, total]), device).unsqueeze::<4>()
}

/// GeGLU: down(gelu(gate(x)) * up(x)).
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    gelu: Gelu,
}

impl Mlp {
    fn load(w: &mut Loader, p: &str, c: &GemmaConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(w, &format!("{p}.gate_proj"), h, i, false)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj"), h, i, false)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj"), i, h, false)?,
            gelu: c.gelu,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone());
        let gate = match self.gelu {
            Gelu::Exact => gelu(gate),
            Gelu::Tanh => gelu_approximate(gate),
        };
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// Which positions of a forward pass need logits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

pub struct Gemma {
    pub config: GemmaConfig,
    pub embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: Rope,
}

impl Gemma {
    /// Loads `model.*` weights in the HF layout; the LM head is tied to `model.embed_tokens`.
    pub fn load(w: &mut Loader, config: &GemmaConfig) -> Result<Self> {
        let c = config;
        let eps = c.rms_norm_eps;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(DecoderLayer {
                input_layernorm: RmsNorm::load(w, &format!("{p}.input_layernorm.weight"), c.hidden_size, eps)?,
                self_attn: Attention::load(w, &format!("{p}.self_attn"), c)?,
                post_attention_layernorm: RmsNorm::load(w, &format!("{p}.post_attention_layernorm.weight"), c.hidden_size, eps)?,
                mlp: Mlp::load(w, &format!("{p}.mlp"), c)?,
            });
        }
        Ok(Gemma {
            config: c.clone(),
            embed_tokens: Embedding::load(w, "model.embed_tokens.weight", c.vocab_size, c.hidden_size)?,
            layers,
            norm: RmsNorm::load(w, "model.norm.weight", c.hidden_size, eps)?,
            rope: Rope::new(c.head_dim, c.rope_theta, c.max_position_embeddings, &w.device),
        })
    }

    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let c = &self.config;
        let device = self.embed_tokens.blocks[0].device();
        KvCache::new(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, capacity, &device)
    }

    /// Unscaled token embeddings `[1, n, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Tensor<3> {
        self.embed_tokens.lookup(ids).unsqueeze::<3>()
    }

    /// Runs `embeds` (`[1, n, hidden]`, unscaled) after what `cache` holds and returns logits
    /// `[n or 1, vocab]`. Every input row is scaled by sqrt(hidden) here, image rows included:
    /// that is what transformers 4.38 did and what MGM was trained with.
    pub fn forward(&self, embeds: Tensor<3>, cache: &mut KvCache, logits: Logits) -> Tensor<2> {
        self.run(embeds, cache, logits, None)
    }

    /// `forward` that also collects each layer's output `[1, n, hidden]` (accuracy reports).
    pub fn forward_traced(&self, embeds: Tensor<3>, cache: &mut KvCache, logits: Logits, trace: &mut Vec<Tensor<3>>) -> Tensor<2> {
        self.run(embeds, cache, logits, Some(trace))
    }

    fn run(&self, embeds: Tensor<3>, cache: &mut KvCache, logits: Logits, mut trace: Option<&mut Vec<Tensor<3>>>) -> Tensor<2> {
        let [_, n, h] = embeds.dims();
        let mut x = embeds * (h as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let attn = layer.self_attn.forward(layer.input_layernorm.forward(x.clone()), &self.rope, cache, i);
            let x1 = x + attn;
            x = x1.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x1));
            if let Some(t) = trace.as_mut() {
                t.push(x.clone());
            }
        }
        cache.advance(n);
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.slice_dim(1, n - 1..n),
        };
        let rows = x.dims()[1];
        self.embed_tokens.project(self.norm.forward(x).reshape([rows, h]))
    }
}
