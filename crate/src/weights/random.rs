//! Random weights with the real names and shapes, for benchmarks of full-size models that
//! cannot be downloaded here.

use std::ops::Range;

use super::WeightSource;
use crate::error::Result;
use crate::rng::Rng;

/// Serves every name the model asks for, in the shape it asks for, with uniform values of the
/// variance of N(0, 1/fan_in) (1-D tensors: small offsets).
pub struct RandomWeights {
    rng: Rng,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        RandomWeights { rng: Rng::new(seed) }
    }
}

impl WeightSource for RandomWeights {
    /// A stored `lm_head` is the one tensor a real checkpoint may lack.
    fn has(&self, name: &str) -> bool {
        name != "lm_head.weight"
    }

    fn read(&mut self, _name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>> {
        let cols: usize = shape[1..].iter().product();
        let a = if shape.len() > 1 { (3.0 / cols as f32).sqrt() } else { 0.1 };
        Ok((0..rows.len() * cols).map(|_| a * (2.0 * self.rng.uniform() - 1.0)).collect())
    }
}
