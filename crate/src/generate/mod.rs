//! Generation: prompt embeddings, sampling on host logits and the one async decode loop every
//! target runs.

pub mod chat;
pub mod prompt;
pub mod sampling;
pub mod session;

pub use sampling::Sampling;
pub use session::{generate, generate_after, GenerateOptions, Generation, Timings};
