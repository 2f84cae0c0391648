//! Gemma (the first one): the language model of MGM-2B. Spec §1.1.

use burn::tensor::Tensor;

use super::layers::{Embedding, Linear};
use crate::config::{Gelu, GemmaConfig};
use crate::error::Result;
use crate::ops::{self, Act, Heads, KvCache, Matrix, Rope};
use crate::weights::Loader;

/// y = x / rms(x) * (1 + w): Gemma stores an offset, not a scale.
#[derive(Clone)]
pub struct RmsNorm {
    scale: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn load(w: &mut Loader, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm { scale: w.get(name, [dim])?.add_scalar(1.0), eps })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        ops::rms_norm(x, &self.scale, self.eps)
    }
}

#[derive(Clone)]
pub struct Attention {
    /// q, k and v projections as one (their outputs side by side).
    qkv_proj: Linear,
    o_proj: Linear,
    heads: Heads,
}

impl Attention {
    fn load(w: &mut Loader, p: &str, c: &GemmaConfig) -> Result<Self> {
        let (h, q, kv) = (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let proj = |w: &mut Loader, name: &str, d_out| Linear::load(w, &format!("{p}.{name}"), h, d_out, false);
        Ok(Attention {
            qkv_proj: Linear::stack(vec![proj(w, "q_proj", q)?, proj(w, "k_proj", kv)?, proj(w, "v_proj", kv)?]),
            o_proj: Linear::load(w, &format!("{p}.o_proj"), q, h, false)?,
            heads: Heads { heads: c.num_attention_heads, kv_heads: c.num_key_value_heads, dim: c.head_dim },
        })
    }

    /// residual + attention(x) for `[n, hidden]` rows after what `cache` holds for `layer`.
    fn forward(&self, x: Tensor<2>, residual: Tensor<2>, rope: &Rope, cache: &mut KvCache, layer: usize) -> Tensor<2> {
        let out = ops::causal_self_attention(self.qkv_proj.forward(x), self.heads, rope, cache, layer);
        self.o_proj.forward_add(out, residual)
    }
}

/// GeGLU: down(gelu(gate(x)) * up(x)).
#[derive(Clone)]
pub struct Mlp {
    /// [gate; up] as one matrix.
    gate_up_proj: Matrix,
    down_proj: Linear,
    act: Act,
}

impl Mlp {
    fn load(w: &mut Loader, p: &str, c: &GemmaConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let gate = w.get_matrix(&format!("{p}.gate_proj.weight"), [i, h])?;
        let up = w.get_matrix(&format!("{p}.up_proj.weight"), [i, h])?;
        Ok(Mlp {
            gate_up_proj: Matrix::stack(vec![gate, up]),
            down_proj: Linear::load(w, &format!("{p}.down_proj"), i, h, false)?,
            act: match c.gelu {
                Gelu::Exact => Act::Gelu,
                Gelu::Tanh => Act::GeluTanh,
            },
        })
    }

    /// residual + mlp(x).
    fn forward(&self, x: Tensor<2>, residual: Tensor<2>) -> Tensor<2> {
        self.down_proj.forward_add(ops::glu(x, &self.gate_up_proj, self.act), residual)
    }
}

#[derive(Clone)]
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

#[derive(Clone)]
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

    /// The same decoder with only its first `n` layers (see `Mgm::one_layer_each`).
    pub fn first_layers(&self, n: usize) -> Self {
        let mut g = self.clone();
        g.layers.truncate(n);
        g
    }

    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let c = &self.config;
        KvCache::new(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, capacity, &self.embed_tokens.table.device())
    }

    /// Bytes one decoded token reads with `context` positions cached: every weight matrix, the
    /// tied head (the whole table), and the cached keys and values.
    pub fn decode_bytes(&self, context: usize) -> u64 {
        let c = &self.config;
        let layers: u64 = self.layers.iter().map(|l| l.self_attn.qkv_proj.weight.bytes() + l.self_attn.o_proj.weight.bytes() + l.mlp.gate_up_proj.bytes() + l.mlp.down_proj.weight.bytes()).sum();
        let head = self.embed_tokens.table.bytes();
        let kv = (2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4 * context) as u64;
        layers + head + kv
    }

    /// Unscaled token embeddings `[n, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Tensor<2> {
        self.embed_tokens.lookup(ids, 1.0)
    }

    /// Runs `embeds` (`[n, hidden]`, unscaled) after what `cache` holds and returns logits
    /// `[n or 1, vocab]`. Every input row is scaled by sqrt(hidden) here, image rows included:
    /// that is what transformers 4.38 did and what MGM was trained with.
    pub fn forward(&self, embeds: Tensor<2>, cache: &mut KvCache, logits: Logits) -> Tensor<2> {
        self.run(embeds, cache, logits, None)
    }

    /// `forward` that also collects each layer's output `[n, hidden]` (accuracy reports).
    pub fn forward_traced(&self, embeds: Tensor<2>, cache: &mut KvCache, logits: Logits, trace: &mut Vec<Tensor<2>>) -> Tensor<2> {
        self.run(embeds, cache, logits, Some(trace))
    }

    fn run(&self, embeds: Tensor<2>, cache: &mut KvCache, logits: Logits, mut trace: Option<&mut Vec<Tensor<2>>>) -> Tensor<2> {
        let [n, h] = embeds.dims();
        cache.reserve(cache.len() + n);
        let mut x = embeds * (h as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let x1 = layer.self_attn.forward(layer.input_layernorm.forward(x.clone()), x, &self.rope, cache, i);
            x = layer.mlp.forward(layer.post_attention_layernorm.forward(x1.clone()), x1);
            if let Some(t) = trace.as_mut() {
                t.push(x.clone());
            }
        }
        cache.advance(n);
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.slice_dim(0, n - 1..n),
        };
        self.embed_tokens.project(self.norm.forward(x))
    }
}
