//! Text in and out: the tokenizer, the chat template, streaming detokenisation. No Burn here.

pub mod stream;
pub mod template;
pub mod tokenizer;

pub use tokenizer::Tokenizer;
