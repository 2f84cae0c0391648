//! The generation loop: prefill once, then one token at a time through the KV cache. It is
//! async so the browser can await its readbacks; native code drives it with `block_on`.

use burn::tensor::Tensor;

use super::sampling::Sampler;
use super::Sampling;
use crate::bail;
use crate::device::now_ms;
use crate::error::{MgmError, Result};
use crate::model::gemma::{Gemma, Logits};
use crate::model::KvCache;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Generation ends after emitting one of these (it is included in the ids).
    pub stop_ids: Vec<u32>,
    /// Also return the logits of every prompt position (`--dump`).
    pub prompt_logits: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Positions prefilled by this request (the prompt minus what the cache already held).
    pub prompt_tokens: usize,
    /// Positions of the prompt the KV cache already held from an earlier request.
    pub cached_tokens: usize,
    /// Tokens produced by decode steps (the first token comes from the prefill).
    pub decode_steps: usize,
}

impl Timings {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prefill_ms / 1e3)
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.decode_steps as f64 / (self.decode_ms / 1e3)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    Aborted,
}

impl Finish {
    /// The `finish_reason` users see (OpenAI's names, plus "abort").
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Aborted => "abort",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub finish: Finish,
    pub timings: Timings,
    /// `[prompt_len, vocab]` row-major, when asked for.
    pub prompt_logits: Option<Vec<f32>>,
}

/// Generates after `embeds` (`[n, hidden]`, unscaled prompt embeddings) with a fresh KV cache.
/// `on_token` sees each id as it is chosen and returns false to stop early.
pub async fn generate(model: &Gemma, embeds: Tensor<2>, opts: &GenerateOptions, on_token: &mut dyn FnMut(u32) -> bool) -> Result<Generation> {
    let mut cache = model.new_cache(embeds.dims()[0] + opts.max_new_tokens.min(model.config.max_position_embeddings));
    generate_after(model, embeds, &mut cache, opts, on_token).await
}

/// Generates after what `cache` holds followed by `embeds`. Every token but the last is fed
/// through the model, so afterwards the cache holds the prompt and the answer minus its last
/// token (a stop token, or the one past the budget).
pub async fn generate_after(
    model: &Gemma,
    embeds: Tensor<2>,
    cache: &mut KvCache,
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    opts.sampling.validate()?;
    let (cached, n) = (cache.len(), embeds.dims()[0]);
    let context = model.config.max_position_embeddings;
    if n == 0 {
        bail!(Input, "the prompt is empty");
    }
    if cached + n >= context {
        bail!(Input, "the prompt has {} tokens; the model's context holds {context} (prompt plus answer)", cached + n);
    }
    let budget = opts.max_new_tokens.min(context - cached - n);
    cache.reserve(cached + n + budget);
    let mut sampler = Sampler::new(opts.sampling);
    let mut timings = Timings { prompt_tokens: n, cached_tokens: cached, ..Default::default() };
    let mut ids = Vec::new();

    let t0 = now_ms();
    let which = if opts.prompt_logits { Logits::All } else { Logits::Last };
    let logits = model.forward(embeds, cache, which);
    let prompt_logits = if opts.prompt_logits { Some(read_f32(logits.clone()).await?) } else { None };
    let last = logits.clone().slice_dim(0, logits.dims()[0] - 1..logits.dims()[0]);
    let mut next = choose(&mut sampler, last).await?;
    timings.prefill_ms = now_ms() - t0;

    let t1 = now_ms();
    let finish = loop {
        if budget == 0 {
            break Finish::Length;
        }
        // A stop request drops the token it refused, so the reply is exactly what was streamed.
        if !on_token(next) {
            break Finish::Aborted;
        }
        ids.push(next);
        if opts.stop_ids.contains(&next) {
            break Finish::Stop;
        }
        if ids.len() == budget {
            break Finish::Length;
        }
        let logits = model.forward(model.embed(&[next]), cache, Logits::Last);
        next = choose(&mut sampler, logits).await?;
        timings.decode_steps += 1;
    };
    timings.decode_ms = now_ms() - t1;
    Ok(Generation { ids, finish, timings, prompt_logits })
}

/// Greedy picks on the device and reads back one id; sampling reads the row of logits.
async fn choose(sampler: &mut Sampler, logits: Tensor<2>) -> Result<u32> {
    if sampler.is_greedy() {
        let data = logits.argmax(1).into_data_async().await.map_err(device_err)?;
        let id = data.try_into_vec_as::<i64>().map_err(|e| MgmError::Device(format!("{e:?}")))?;
        return Ok(id[0] as u32);
    }
    Ok(sampler.sample(&read_f32(logits).await?))
}

pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(device_err)?;
    data.try_into_vec_as::<f32>().map_err(|e| MgmError::Device(format!("readback: {e:?}")))
}

fn device_err(e: impl std::fmt::Debug) -> MgmError {
    MgmError::Device(format!("device readback failed: {e:?}"))
}
