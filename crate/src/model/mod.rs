//! The model parts, one file each. Pure tensor code: no I/O, no file formats, no `cfg(target)`.

pub mod clip;
pub mod convnext;
pub mod gemma;
pub mod kv_cache;
pub mod layers;
pub mod mgm;
pub mod mining;

pub use gemma::Gemma;
pub use kv_cache::KvCache;
pub use mgm::Mgm;
