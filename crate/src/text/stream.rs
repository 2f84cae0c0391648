//! Streams text as tokens arrive without ever emitting half a character.

use super::Tokenizer;
use crate::error::Result;

#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Adds a token and returns the new complete text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, true)?;
        // A byte-fallback character split across tokens decodes to U+FFFD until complete.
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }

    /// Everything decoded so far.
    pub fn text(&self, tok: &Tokenizer) -> Result<String> {
        tok.decode(&self.ids, true)
    }
}
