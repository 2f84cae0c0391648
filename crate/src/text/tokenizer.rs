//! A `tokenizer.json` (HF tokenizers) with Gemma's special ids looked up by name.

use crate::bail;
use crate::error::{MgmError, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: u32,
    pub eos: u32,
    /// `<end_of_turn>`, when the vocabulary has it.
    pub end_of_turn: Option<u32>,
}

impl Tokenizer {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| MgmError::Format(format!("tokenizer.json: {e}")))?;
        let id = |t: &str| inner.token_to_id(t);
        let (Some(bos), Some(eos)) = (id("<bos>"), id("<eos>")) else {
            bail!(Mismatch, "tokenizer.json: no <bos>/<eos> tokens; is this a Gemma tokenizer?");
        };
        Ok(Tokenizer { bos, eos, end_of_turn: id("<end_of_turn>"), inner })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of `text`; with `bos`, the tokenizer's post-processor prepends `<bos>`.
    pub fn encode(&self, text: &str, bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, bos)
            .map_err(|e| MgmError::Input(format!("cannot tokenize the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| MgmError::Format(format!("cannot decode ids: {e}")))
    }

    /// Ids that end generation: `<eos>`, and `<end_of_turn>` which the model writes just before it.
    pub fn stop_ids(&self) -> Vec<u32> {
        std::iter::once(self.eos).chain(self.end_of_turn).collect()
    }
}
