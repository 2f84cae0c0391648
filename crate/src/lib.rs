//! mgm: Mini-Gemini (MGM-2B) on Burn, one model code path for CPU, native wgpu and browser WebGPU.
//!
//! Data flow: image -> `preprocess` -> `model::mgm` (CLIP, ConvNeXt, patch info mining,
//! projector); text -> `text::template` -> `text::tokenizer`; both spliced by
//! `generate::prompt` -> `model::gemma` (embeddings scaled by sqrt(hidden), decoder layers, tied
//! LM head) -> `generate::sampling` -> `text::stream` -> text. `generate::chat` runs one request
//! end to end for the CLI (`bin/mgm`) and the browser (`web`).
//!
//! Rules: `model` imports only burn and `config`; `text` uses no burn; `weights` fills `model`,
//! never the reverse; only `device` knows the platform, and only `web` knows JavaScript.

pub mod config;
pub mod device;
pub mod error;
pub mod events;
pub mod generate;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod rng;
pub mod text;
pub mod weights;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{MgmError, Result};
