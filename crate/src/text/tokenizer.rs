//! A `tokenizer.json` (HF tokenizers) with Gemma's special ids looked up by name.

use crate::bail;
use crate::error::{MgmError, Result};

pub struct Tokenizer {
    /// Set to encode special-token strings as text; [`Tokenizer::encode`] splits them itself.
    inner: tokenizers::Tokenizer,
    /// The special tokens' strings and ids, longest first.
    specials: Vec<(String, u32)>,
    pub bos: u32,
    pub eos: u32,
    /// `<end_of_turn>`, when the vocabulary has it.
    pub end_of_turn: Option<u32>,
}

impl Tokenizer {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| MgmError::Format(format!("tokenizer.json: {e}")))?;
        inner.set_encode_special_tokens(true);
        let mut specials: Vec<(String, u32)> =
            inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, t)| (t.content, id)).collect();
        specials.sort_by_key(|(s, id)| (std::cmp::Reverse(s.len()), *id));
        let id = |t: &str| inner.token_to_id(t);
        let (Some(bos), Some(eos)) = (id("<bos>"), id("<eos>")) else {
            bail!(Mismatch, "tokenizer.json: no <bos>/<eos> tokens; is this a Gemma tokenizer?");
        };
        Ok(Tokenizer { bos, eos, end_of_turn: id("<end_of_turn>"), inner, specials })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of `text` as `tokenizers` encodes a string: special-token strings in it become those
    /// tokens. With `bos`, the tokenizer's post-processor prepends `<bos>`.
    pub fn encode(&self, text: &str, bos: bool) -> Result<Vec<u32>> {
        let mut ids = if bos { self.encode_with("", true)? } else { vec![] };
        let mut rest = text;
        while !rest.is_empty() {
            // The leftmost special string (the longest where several start there).
            let next = self.specials.iter().filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id))).min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            let Some((at, len, id)) = next else {
                ids.extend(self.encode_text(rest)?);
                break;
            };
            ids.extend(self.encode_text(&rest[..at])?);
            ids.push(id);
            rest = &rest[at + len..];
        }
        Ok(ids)
    }

    /// Ids of `text` as plain text: `<end_of_turn>` typed in a message is the characters, not the
    /// turn marker (transformers' `split_special_tokens=True`).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, bos: bool) -> Result<Vec<u32>> {
        if text.is_empty() && !bos {
            return Ok(vec![]);
        }
        let enc = self.inner.encode(text, bos).map_err(|e| MgmError::Input(format!("cannot tokenize the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The id of a special token the template writes.
    pub fn special(&self, token: &str) -> Result<u32> {
        match self.specials.iter().find(|(s, _)| s == token) {
            Some((_, id)) => Ok(*id),
            None => bail!(Mismatch, "tokenizer.json has no {token} token; is this a Gemma tokenizer?"),
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| MgmError::Format(format!("cannot decode ids: {e}")))
    }

    /// Whether `id` is a byte-fallback token (`<0x0A>`): such tokens decode together, as UTF-8.
    pub fn is_byte(&self, id: u32) -> bool {
        self.inner.id_to_token(id).is_some_and(|t| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>'))
    }

    /// Ids that end generation: `<eos>`, and `<end_of_turn>` which the model writes just before it.
    pub fn stop_ids(&self) -> Vec<u32> {
        std::iter::once(self.eos).chain(self.end_of_turn).collect()
    }
}
