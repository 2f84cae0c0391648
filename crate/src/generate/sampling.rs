//! Token choice from logits: greedy, or temperature then top-k then top-p (transformers' order).

use crate::bail;
use crate::error::Result;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 keeps every token.
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0 }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(Input, "temperature must be 0 (greedy) or positive, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!(Input, "top-p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

pub struct Sampler {
    cfg: Sampling,
    rng: Rng,
}

impl Sampler {
    pub fn new(cfg: Sampling) -> Self {
        Sampler { cfg, rng: Rng::new(cfg.seed) }
    }

    pub fn is_greedy(&self) -> bool {
        self.cfg.is_greedy()
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / self.cfg.temperature)).collect();
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if self.cfg.top_k > 0 && self.cfg.top_k < cand.len() {
            cand.select_nth_unstable_by(self.cfg.top_k - 1, by_logit);
            cand.truncate(self.cfg.top_k);
        }
        cand.sort_by(by_logit);
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        // Smallest prefix whose mass reaches top_p (always at least one token).
        let mut keep = probs.len();
        if self.cfg.top_p < 1.0 {
            let mut mass = 0.0;
            for (i, p) in probs.iter().enumerate() {
                mass += p;
                if mass >= self.cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.uniform() * kept;
        for i in 0..keep {
            r -= probs[i];
            if r < 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }
}

/// First index of the largest value (ties go to the lowest id, as torch.argmax does).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}
