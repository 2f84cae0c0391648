//! One chat request end to end: the conversation and its images in, streamed text and the reply
//! out. The CLI drives it with `block_on`; the browser engine awaits it.

use super::prompt::Prompt;
use super::session::read_f32;
use super::{generate, GenerateOptions, Generation};
use crate::device::now_ms;
use crate::error::Result;
use crate::model::Mgm;
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
    pub options: GenerateOptions,
    /// Read each image's mining attention back (for a heat map).
    pub attention: bool,
    /// Keep each image's HR map on the device (for `--dump`).
    pub keep_aux: bool,
}

pub struct ChatReply {
    pub prompt: Prompt,
    pub generation: Generation,
    pub text: String,
    /// What the model wrote inside `<h>...</h>`, when asked with `gen_prompt`.
    pub image_prompt: Option<String>,
    /// Both towers, mining and the projector, for all images.
    pub image_ms: f64,
    /// Per image, the mining attention `[tokens, window²]`, row-major (when asked for).
    pub attention: Vec<Vec<f32>>,
}

/// Runs `req`. `on_text` gets each token's new text (maybe empty, never half a character) and
/// returns false to stop.
pub async fn chat(model: &Mgm, tok: &Tokenizer, req: &ChatRequest, on_text: &mut dyn FnMut(u32, &str) -> bool) -> Result<ChatReply> {
    let t0 = now_ms();
    let turns: Vec<(Role, &str)> = req.turns.iter().map(|(r, t)| (*r, t.as_str())).collect();
    let prompt = Prompt::chat(model, tok, req.template, &turns, &req.images, req.gen_prompt, req.keep_aux)?;
    let embeds = prompt.embed(model)?;
    // A one-value readback waits for the image work, so the time is the encode's, not the queue's.
    let image_ms = if prompt.images.is_empty() { 0.0 } else { read_f32(embeds.clone().slice([0..1, 0..1])).await.map(|_| now_ms() - t0)? };
    let mut attention = Vec::new();
    if req.attention {
        for image in &prompt.images {
            attention.push(read_f32(image.attention.clone()).await?);
        }
    }

    let mut stream = TextStream::default();
    let mut failed = None;
    let generation = generate(&model.gemma, embeds, &req.options, &mut |id| match stream.push(tok, id) {
        Ok(text) => on_text(id, &text),
        Err(e) => {
            failed = Some(e);
            false
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    let text = tok.decode(&generation.ids, true)?;
    let image_prompt = if req.gen_prompt { image_prompt(&text) } else { None };
    Ok(ChatReply { prompt, generation, text, image_prompt, image_ms, attention })
}
