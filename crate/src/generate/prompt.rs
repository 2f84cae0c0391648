//! The prompt as Gemma receives it: token embeddings with each image's projected tokens spliced
//! into its slot (spec §4.2). Gemma then scales the whole sequence by sqrt(hidden).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use burn::tensor::{Tensor, TensorData};

use crate::bail;
use crate::error::{MgmError, Result};
use crate::model::mgm::ImageFeatures;
use crate::model::Mgm;
use crate::preprocess::{preprocess, Image};
use super::chat::ChatRequest;
use crate::text::template::{pieces, render, sentinel_ids, Piece, Role};
use crate::text::Tokenizer;

/// What one position of the decoder's input is: a token, or row `row` of the image whose
/// content hashes to `image`. Two prompts agree on a prefix of positions exactly when the KV
/// cache of one serves the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Token(u32),
    Image { image: u64, row: usize },
}

/// Encoded images by content hash, kept between the requests of a conversation.
pub type ImageCache = HashMap<u64, ImageFeatures>;

/// A hash of an image's bytes (or pixels): equal inputs encode to equal features.
pub fn image_hash(image: &Image) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match image {
        Image::Encoded(bytes) => (0u8, bytes).hash(&mut h),
        Image::Rgba { width, height, data } => (1u8, width, height, data).hash(&mut h),
    }
    h.finish()
}

/// A user's request, ready for the decoder: text pieces, and each image encoded.
pub struct Prompt {
    pub pieces: Vec<Piece>,
    pub images: Vec<ImageFeatures>,
    /// Content hash of each image, in slot order.
    pub hashes: Vec<u64>,
    /// Whether an image had to be encoded (it was not in the conversation's cache).
    pub encoded: bool,
}

impl Prompt {
    /// `req`'s conversation, which ends with a user turn. As in MGM's CLI, the images go in
    /// front of the first user message and ` <GEN>` (when `gen_prompt`) after the last one;
    /// completed model turns end with `<eos>`. Messages are text unless `raw_prompt` (MGM's
    /// parsing, see [`pieces`]). Images found in `cache` are not encoded again; `cache` ends up
    /// holding exactly this prompt's images. `keep_aux` keeps each HR map (for `--dump`).
    pub fn chat(model: &Mgm, tok: &Tokenizer, req: &ChatRequest, cache: &mut ImageCache) -> Result<Self> {
        let (images, keep_aux) = (&req.images, req.keep_aux);
        let turns: Vec<(Role, &str)> = req.turns.iter().map(|(r, t)| (*r, t.as_str())).collect();
        if !matches!(turns.last(), Some((Role::User, text)) if !text.is_empty()) {
            bail!(Input, "the prompt is empty: a conversation must end with a non-empty user message");
        }
        let vision = match (&model.vision, images.is_empty()) {
            (_, true) => None,
            (Some(v), false) => Some(v),
            (None, false) => bail!(Input, "this model has no vision tower, so it cannot take images"),
        };
        let pieces = pieces(tok, render(req.template, &turns, images.len(), req.gen_prompt), req.raw_prompt)?;
        let hashes: Vec<u64> = images.iter().map(image_hash).collect();
        cache.retain(|h, f| hashes.contains(h) && (f.aux.is_some() || !keep_aux));
        let (mut encoded, mut fresh) = (Vec::new(), false);
        if let Some(v) = vision {
            let size = v.config.image_size_aux;
            let device = model.gemma.embed_tokens.table.device();
            for (k, (image, hash)) in images.iter().zip(&hashes).enumerate() {
                if let Some(f) = cache.get(hash) {
                    encoded.push(f.clone());
                    continue;
                }
                let rgb = image.rgb().map_err(|e| MgmError::Input(format!("image {}: {}", k + 1, e.message())))?;
                let pixels = preprocess(&rgb, size);
                let hr = Tensor::<1>::from_data(TensorData::new(pixels, [3 * size * size]), &device).reshape([1, 3, size, size]);
                let f = v.encode(hr, keep_aux);
                cache.insert(*hash, f.clone());
                fresh = true;
                encoded.push(f);
            }
        }
        Ok(Prompt { pieces, images: encoded, hashes, encoded: fresh })
    }

    /// Ids with -200 in image slots.
    pub fn ids(&self) -> Vec<i64> {
        sentinel_ids(&self.pieces)
    }

    /// Every position of the decoder's input.
    pub fn positions(&self) -> Vec<Position> {
        let mut images = self.images.iter().zip(&self.hashes);
        let mut out = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(ids) => out.extend(ids.iter().map(|&id| Position::Token(id))),
                Piece::Image => {
                    if let Some((f, &image)) = images.next() {
                        out.extend((0..f.embeds.dims()[0]).map(|row| Position::Image { image, row }));
                    }
                }
            }
        }
        out
    }

    /// The embeddings `[len - start, hidden]` (unscaled) of positions `start..`.
    pub fn embed_from(&self, model: &Mgm, start: usize) -> Result<Tensor<2>> {
        let slots = self.pieces.iter().filter(|p| **p == Piece::Image).count();
        if slots != self.images.len() {
            bail!(Input, "the prompt has {slots} image slots but {} images were given", self.images.len());
        }
        let len = self.positions().len();
        // MGM silently truncated at this length; a clear error loses nothing instead.
        if len > model.config.max_length {
            bail!(Input, "the conversation is {len} tokens with its images; the model takes at most {}: start a new conversation or send less", model.config.max_length);
        }
        let mut images = self.images.iter();
        let (mut parts, mut at) = (Vec::new(), 0);
        for piece in &self.pieces {
            let n = match piece {
                Piece::Text(ids) => ids.len(),
                Piece::Image => images.as_slice().first().map_or(0, |f| f.embeds.dims()[0]),
            };
            let skip = start.saturating_sub(at).min(n);
            if skip < n {
                parts.push(match piece {
                    Piece::Text(ids) => model.gemma.embed(&ids[skip..]),
                    Piece::Image => images.as_slice()[0].embeds.clone().slice_dim(0, skip..n),
                });
            }
            if *piece == Piece::Image {
                images.next();
            }
            at += n;
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(parts, 0) })
    }

    /// The whole prompt's embeddings `[len, hidden]`, unscaled.
    pub fn embed(&self, model: &Mgm) -> Result<Tensor<2>> {
        self.embed_from(model, 0)
    }
}
