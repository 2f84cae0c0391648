//! One chat request end to end: the conversation and its images in, streamed text and the reply
//! out. The CLI drives it with `block_on`; the browser engine awaits it. A [`Conversation`]
//! keeps the KV cache and the encoded images between requests, so a follow-up question
//! prefills only what is new.

use super::prompt::{ImageCache, Position, Prompt};
use super::session::{read_f32, Finish};
use super::{generate_after, GenerateOptions, Generation};
use crate::error::Result;
use crate::model::{KvCache, Mgm};
use crate::preprocess::Image;
use crate::text::stream::TextStream;
use crate::text::template::{image_prompt, Role, Template};
use crate::text::Tokenizer;

pub struct ChatRequest {
    /// Ends with a user turn.
    pub turns: Vec<(Role, String)>,
    /// They go in front of the first user message, in order (MGM's layout).
    pub images: Vec<Image>,
    pub template: Template,
    /// Ask for a text-to-image prompt too (appends ` <GEN>`).
    pub gen_prompt: bool,
    /// Parse messages as MGM does (special-token strings become tokens, `<image>` a slot)
    /// instead of as text; for parity checks.
    pub raw_prompt: bool,
    pub options: GenerateOptions,
    /// Read each image's mining attention back (for a heat map).
    pub attention: bool,
    /// Keep each image's HR map on the device (for `--dump`).
    pub keep_aux: bool,
}

impl ChatRequest {
    /// `turns` and `images` under Gemma's chat template, messages as text, nothing extra.
    pub fn new(turns: Vec<(Role, String)>, images: Vec<Image>, options: GenerateOptions) -> ChatRequest {
        ChatRequest { turns, images, template: Template::Gemma, gen_prompt: false, raw_prompt: false, options, attention: false, keep_aux: false }
    }
}

pub struct ChatReply {
    pub prompt: Prompt,
    pub generation: Generation,
    pub text: String,
    /// What the model wrote inside `<h>...</h>`, when asked with `gen_prompt`.
    pub image_prompt: Option<String>,
    /// Both towers, mining and the projector, for the images not encoded before (0 if none).
    pub image_ms: f64,
    /// Per image, the mining attention `[tokens, window²]`, row-major (when asked for).
    pub attention: Vec<Vec<f32>>,
}

impl ChatReply {
    /// The reply as the package resolves it and `mgm generate/chat --json` print it: one shape,
    /// built here only. `load_ms` goes into `usage` when given (the CLI's one-shot runs).
    pub fn to_json(&self, load_ms: Option<f64>) -> serde_json::Value {
        let (g, t) = (&self.generation, &self.generation.timings);
        let mut json = serde_json::json!({
            "text": self.text,
            "ids": g.ids,
            "prompt_ids": self.prompt.ids(),
            "finish_reason": g.finish.name(),
            "image_prompt": self.image_prompt,
            "usage": {
                "prompt_tokens": t.prompt_tokens + t.cached_tokens,
                "cached_tokens": t.cached_tokens,
                "completion_tokens": g.ids.len(),
                "time_to_first_token_ms": self.image_ms + t.prefill_ms,
                "image_encode_ms": self.image_ms,
                "prefill_ms": t.prefill_ms,
                "decode_ms": t.decode_ms,
                "prefill_tokens_per_s": t.prefill_tok_s(),
                "decode_tokens_per_s": t.decode_tok_s(),
            },
        });
        if let Some(ms) = load_ms {
            json["usage"]["load_ms"] = ms.into();
        }
        json
    }
}

/// What the decoder has seen so far: the KV cache, what each of its positions is, and the
/// encoded images of the last request. A request whose prompt starts with what the cache holds
/// (a follow-up question, a regenerated answer) reuses it; anything else is recomputed from
/// the first position that differs.
#[derive(Default)]
pub struct Conversation {
    cache: Option<KvCache>,
    held: Vec<Position>,
    images: ImageCache,
}

impl Conversation {
    /// Forgets everything (the page's Clear).
    pub fn clear(&mut self) {
        *self = Conversation::default();
    }

    /// Positions the cache holds.
    pub fn cached(&self) -> usize {
        self.held.len()
    }
}

/// Runs `req` in `conv`. `on_text` gets each token's new text (maybe empty, never half a
/// character) and returns false to stop.
pub async fn chat(conv: &mut Conversation, model: &Mgm, tok: &Tokenizer, req: &ChatRequest, on_text: &mut dyn FnMut(u32, &str) -> bool) -> Result<ChatReply> {
    let out = run(conv, model, tok, req, on_text).await;
    if out.is_err() {
        // Whatever the cache holds now is not known to match `held`.
        conv.clear();
    }
    out
}

async fn run(conv: &mut Conversation, model: &Mgm, tok: &Tokenizer, req: &ChatRequest, on_text: &mut dyn FnMut(u32, &str) -> bool) -> Result<ChatReply> {
    let t0 = crate::device::now_ms();
    let prompt = Prompt::chat(model, tok, req, &mut conv.images)?;
    let positions = prompt.positions();
    // Reuse the longest common prefix, but always run the last position: its logits start the
    // answer. Prompt logits (`--dump`) need every position.
    let same = conv.held.iter().zip(&positions).take_while(|(a, b)| a == b).count();
    let reuse = if req.options.prompt_logits { 0 } else { same.min(positions.len().saturating_sub(1)) };
    let embeds = prompt.embed_from(model, reuse)?;
    let image_ms = if prompt.encoded {
        // A one-value readback waits for the image work (queued, not done, on WebGPU), so the
        // time is the encode's and not the prefill's.
        read_f32(prompt.images.last().expect("an image").embeds.clone().slice([0..1, 0..1])).await?;
        crate::device::now_ms() - t0
    } else {
        0.0
    };
    let mut attention = Vec::new();
    if req.attention {
        for image in &prompt.images {
            attention.push(read_f32(image.attention.clone()).await?);
        }
    }

    let cache = conv.cache.get_or_insert_with(|| model.gemma.new_cache(positions.len() + req.options.max_new_tokens.min(model.config.max_length)));
    cache.truncate(reuse);
    conv.held.truncate(reuse);
    // The reply's text is exactly what was streamed: a token refused by `on_text` (an abort) is
    // not in it, and what the stream held back at the end comes with the last token.
    let mut stream = TextStream::default();
    let mut text = String::new();
    let mut failed = None;
    let generation = generate_after(&model.gemma, embeds, cache, &req.options, &mut |id| match stream.push(tok, id) {
        Ok(delta) => on_text(id, &delta) && {
            text += &delta;
            true
        },
        Err(e) => {
            failed = Some(e);
            false
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let (Some(&last), false) = (generation.ids.last(), generation.finish == Finish::Aborted) {
        let rest = stream.finish(tok)?;
        if !rest.is_empty() && on_text(last, &rest) {
            text += &rest;
        }
    }
    // The cache now holds the prompt and the answer's tokens that were fed back.
    let fed = cache.len() - positions.len();
    conv.held = positions;
    conv.held.extend(generation.ids[..fed].iter().map(|&id| Position::Token(id)));
    let image_prompt = if req.gen_prompt { image_prompt(&text) } else { None };
    Ok(ChatReply { prompt, generation, text, image_prompt, image_ms, attention })
}

/// A small PNG, so that warming up also runs (and, in a browser, compiles) the image decoder
/// and the resizes on a real picture's path.
fn warm_up_image() -> Result<Image> {
    let rgb = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    let mut png = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| crate::error::MgmError::Input(format!("warm-up image: {e}")))?;
    Ok(Image::Encoded(png))
}

/// One small request down the whole path (a small image when the model has a vision half, a
/// question of about 64 tokens, two new tokens) on the model cut to one layer of each kind, so
/// every kernel a real question needs is compiled, and buffers of a typical question's sizes are
/// in the allocator's pool, before the first one. Then, where a repeat is cheap, the same twice
/// more: browsers run wasm as baseline code first and optimise what has run often, so after one
/// pass the first question still ran partly unoptimised (tiny bundle in Chromium: 112 against
/// 73 ms for the next). A short text-only request prices them: on a slow adapter with the
/// full-size model (seconds per repeat) they are skipped.
pub async fn warm_up(model: &Mgm, tok: &Tokenizer) -> Result<()> {
    const CHEAP_MS: f64 = 100.0;
    let one = model.one_layer_each();
    warm_up_once(&one, tok, true).await?;
    let t = crate::device::now_ms();
    warm_up_once(&one, tok, false).await?;
    if crate::device::now_ms() - t < CHEAP_MS {
        for _ in 0..2 {
            warm_up_once(&one, tok, true).await?;
        }
    }
    Ok(())
}

/// The warm-up request, or without `image` the probe: one short turn and one new token, about
/// the least a question costs.
async fn warm_up_once(model: &Mgm, tok: &Tokenizer, image: bool) -> Result<()> {
    let images = if image && model.vision.is_some() { vec![warm_up_image()?] } else { vec![] };
    let (text, max_new_tokens) = if image { ("Describe this picture, please. ".repeat(8), 2) } else { ("Hi.".to_string(), 1) };
    let options = GenerateOptions { max_new_tokens, sampling: Default::default(), stop_ids: vec![], prompt_logits: false };
    let req = ChatRequest::new(vec![(Role::User, text)], images, options);
    chat(&mut Conversation::default(), model, tok, &req, &mut |_, _| true).await.map(|_| ())
}
