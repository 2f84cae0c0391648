//! The model parts, one file each: pure tensor math on `ops`. No I/O, no file formats, no
//! `cfg(target)`, no dtype or device branches.

pub mod clip;
pub mod convnext;
pub mod gemma;
pub mod layers;
pub mod mgm;
pub mod mining;

pub use gemma::Gemma;
pub use mgm::Mgm;
pub use crate::ops::KvCache;
