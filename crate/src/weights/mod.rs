//! Where weights come from. The model asks a [`WeightSource`] for tensors by checkpoint name;
//! only this module knows file formats.

pub mod hf;
pub mod random;

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::MgmConfig;
use crate::error::Result;

/// A store of named tensors. `rows` selects a range along dim 0, so a matrix larger than a GPU
/// binding can be uploaded in row blocks without ever existing whole on the device.
pub trait WeightSource {
    /// Whether the store has tensor `name`.
    fn has(&self, name: &str) -> bool;
    /// Rows `rows` of tensor `name`, which must have shape `shape`, as f32, flattened row-major.
    fn read(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>>;
}

/// Builds device tensors from a source.
pub struct Loader<'a> {
    pub source: &'a mut dyn WeightSource,
    pub device: Device,
}

impl Loader<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.source.has(name)
    }

    pub fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = self.source.read(name, &shape, 0..shape[0])?;
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }

    /// Rows `rows` of a 2-D tensor `[n, cols]`.
    pub fn get_rows(&mut self, name: &str, shape: [usize; 2], rows: Range<usize>) -> Result<Tensor<2>> {
        let n = rows.len();
        let values = self.source.read(name, &shape, rows)?;
        Ok(Tensor::from_data(TensorData::new(values, [n, shape[1]]), &self.device))
    }
}

/// Whether inference reads checkpoint tensor `name`: CLIP's layers after `select_layer` and its
/// post-LayerNorm are never used, and neither is a stored `lm_head` (tied to the embedding).
pub fn is_used(config: &MgmConfig, name: &str) -> bool {
    if name == "lm_head.weight" || name.ends_with("vision_model.post_layernorm.weight") || name.ends_with("vision_model.post_layernorm.bias") {
        return false;
    }
    let layer = name
        .split_once("vision_model.encoder.layers.")
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok());
    match (layer, &config.vision) {
        (Some(i), Some(v)) => v.clip.layers_used(v.select_layer).is_ok_and(|used| i < used),
        _ => true,
    }
}

/// Counts what passes through a source and reports it as the `load` phase.
pub struct Counted<'a> {
    pub inner: &'a mut dyn WeightSource,
    pub done: u64,
    pub total: u64,
    pub on_progress: crate::events::OnProgress<'a>,
}

impl WeightSource for Counted<'_> {
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }

    fn read(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>> {
        let values = self.inner.read(name, shape, rows)?;
        self.done += values.len() as u64;
        (self.on_progress)(crate::events::Progress { phase: "load", done: self.done, total: self.total });
        Ok(values)
    }
}
