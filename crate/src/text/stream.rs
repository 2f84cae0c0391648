//! Streams text as tokens arrive, never emitting text that a later token could change.

use super::Tokenizer;
use crate::error::Result;

#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Bytes of the decoding emitted so far.
    emitted: usize,
}

impl TextStream {
    /// Adds a token and returns the text it makes final, if any. Byte-fallback tokens decode as
    /// one run, and a run that is not valid UTF-8 decodes to U+FFFD for every byte in it, the
    /// complete characters before included: so a run is held back until a token that is not a
    /// byte ends it.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let stable = self.ids.iter().rposition(|&i| !tok.is_byte(i)).map_or(0, |k| k + 1);
        Ok(self.emit(tok.decode(&self.ids[..stable], true)?))
    }

    /// What is still held back when generation ends: a trailing byte run, decoded as a full
    /// decode shows it (a character cut off by the token limit is U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        Ok(self.emit(tok.decode(&self.ids, true)?))
    }

    fn emit(&mut self, text: String) -> String {
        if text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return String::new();
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        new
    }

    /// Everything decoded so far.
    pub fn text(&self, tok: &Tokenizer) -> Result<String> {
        tok.decode(&self.ids, true)
    }
}
