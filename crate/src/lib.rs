//! mgm: Mini-Gemini (MGM-2B) on Burn, one model code path for CPU, native wgpu and browser WebGPU.
//!
//! Data flow: image -> `preprocess` -> `model::mgm` (CLIP, ConvNeXt, patch info mining,
//! projector); text -> `text::template` -> `text::tokenizer`; both spliced by
//! `generate::prompt` -> `model::gemma` (embeddings scaled by sqrt(hidden), decoder layers, tied
//! LM head) -> `generate::sampling` -> `text::stream` -> text. `generate::chat` runs one request
//! end to end for the CLI (`bin/mgm`) and the browser (`web`).
//!
//! Layers, each importing only those below it: `ops` (kernels and their Burn references) <
//! `weights` (sources of named tensors) < `model` (pure math on `ops`) < `load` (a source into a
//! model) < `generate`; `text` uses no burn; only `device` knows the platform, and only `web`
//! knows JavaScript.

pub mod config;
pub mod device;
pub mod error;
pub mod events;
pub mod generate;
pub mod load;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod quant;
pub mod rng;
pub mod text;
pub mod weights;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{MgmError, Result};
