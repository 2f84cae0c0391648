//! The prompt as Gemma receives it: token embeddings with each image's projected tokens spliced
//! into its slot (spec §4.2). Gemma then scales the whole sequence by sqrt(hidden).

use burn::tensor::{Tensor, TensorData};

use crate::bail;
use crate::error::{MgmError, Result};
use crate::model::mgm::ImageFeatures;
use crate::model::Mgm;
use crate::preprocess::{preprocess, Image};
use crate::text::template::{label_images, pieces, render, sentinel_ids, Piece, Role, Template, GEN_SUFFIX, IMAGE_TOKEN};
use crate::text::Tokenizer;

/// `[len, hidden]`, unscaled. `images[k]` (`[N, hidden]`) fills the k-th slot.
pub fn embed_prompt(model: &Mgm, pieces: &[Piece], images: &[Tensor<2>]) -> Result<Tensor<2>> {
    let slots = pieces.iter().filter(|p| **p == Piece::Image).count();
    if slots != images.len() {
        bail!(Input, "the prompt has {slots} image slots but {} images were given", images.len());
    }
    let text: usize = pieces.iter().map(|p| if let Piece::Text(ids) = p { ids.len() } else { 0 }).sum();
    let len = text + images.iter().map(|i| i.dims()[0]).sum::<usize>();
    // MGM silently truncated at this length; a clear error loses nothing instead.
    if len > model.config.max_length {
        bail!(Input, "the prompt is {len} tokens with its images; the model takes at most {}", model.config.max_length);
    }
    let mut images = images.iter().cloned();
    let mut parts = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(ids) => parts.push(model.gemma.embed(ids)),
            Piece::Image => parts.extend(images.next()),
        }
    }
    Ok(Tensor::cat(parts, 0))
}

/// A user's request, ready for the decoder: text pieces, and each image encoded.
pub struct Prompt {
    pub pieces: Vec<Piece>,
    pub images: Vec<ImageFeatures>,
}

impl Prompt {
    /// A conversation ending with a user turn. As in MGM's CLI, the images go in front of the
    /// first user message and ` <GEN>` (when `gen_prompt`) after the last one; completed model
    /// turns end with `<eos>`. `keep_aux` keeps each image's HR map (for `--dump`).
    pub fn chat(
        model: &Mgm,
        tok: &Tokenizer,
        template: Template,
        turns: &[(Role, &str)],
        images: &[Image],
        gen_prompt: bool,
        keep_aux: bool,
    ) -> Result<Self> {
        let (first, last) = match (turns.iter().position(|t| t.0 == Role::User), turns.last()) {
            (Some(first), Some((Role::User, text))) if !text.is_empty() => (first, turns.len() - 1),
            _ => bail!(Input, "the prompt is empty: a conversation must end with a non-empty user message"),
        };
        let vision = match (&model.vision, images.is_empty()) {
            (_, true) => None,
            (Some(v), false) => Some(v),
            (None, false) => bail!(Input, "this model has no vision tower, so it cannot take images"),
        };
        let texts: Vec<String> = turns
            .iter()
            .enumerate()
            .map(|(i, (_, text))| {
                let text = if i == last && gen_prompt { format!("{text}{GEN_SUFFIX}") } else { text.to_string() };
                if i == first { format!("{}{text}", format!("{IMAGE_TOKEN}\n").repeat(images.len())) } else { text }
            })
            .collect();
        let rendered: Vec<(Role, &str)> = turns.iter().zip(&texts).map(|((role, _), text)| (*role, text.as_str())).collect();
        let pieces = pieces(tok, &label_images(&render(template, &rendered)))?;
        let mut encoded = Vec::new();
        if let Some(v) = vision {
            let size = v.config.image_size_aux;
            let device = model.gemma.embed_tokens.blocks[0].device();
            for (k, image) in images.iter().enumerate() {
                let rgb = image.rgb().map_err(|e| MgmError::Input(format!("image {}: {}", k + 1, e.message())))?;
                let pixels = preprocess(&rgb, size);
                let hr = Tensor::<1>::from_data(TensorData::new(pixels, [3 * size * size]), &device).reshape([1, 3, size, size]);
                encoded.push(v.encode(hr, false, keep_aux));
            }
        }
        Ok(Prompt { pieces, images: encoded })
    }

    /// Ids with -200 in image slots.
    pub fn ids(&self) -> Vec<i64> {
        sentinel_ids(&self.pieces)
    }

    pub fn embed(&self, model: &Mgm) -> Result<Tensor<2>> {
        let images: Vec<Tensor<2>> = self.images.iter().map(|f| f.embeds.clone()).collect();
        embed_prompt(model, &self.pieces, &images)
    }
}
