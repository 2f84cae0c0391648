//! Where weights come from. The model asks a [`WeightSource`] for tensors by checkpoint name;
//! only this module knows file formats.

pub mod bundle;
pub mod convert;
pub mod hf;
pub mod random;

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use crate::quant::Storage;

use crate::config::MgmConfig;
use crate::error::Result;
use crate::ops::Matrix;

/// A tensor (or rows of it) already on the device, as a store uploaded it: weight matrices in
/// their stored format, everything else as f32 `[rows, cols]`.
pub enum Uploaded {
    Matrix(Matrix),
    Tensor(Tensor<2>),
}

/// A store of named tensors. `rows` selects a range along dim 0, so a matrix larger than a GPU
/// binding can be uploaded in row blocks without ever existing whole on the device.
pub trait WeightSource {
    /// Whether the store has tensor `name`.
    fn has(&self, name: &str) -> bool;
    /// Rows `rows` of tensor `name`, which must have shape `shape`, as f32, flattened row-major.
    fn read(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>>;
    /// The same rows still quantized, in the bundle's stored layout (values, then f16 scales),
    /// when the store keeps `name` quantized; `None` means read it as f32.
    fn read_quantized(&mut self, _name: &str, _shape: &[usize], _rows: Range<usize>) -> Result<Option<(Vec<u8>, Storage)>> {
        Ok(None)
    }
    /// The same rows already on the device, when the store uploads as it receives bytes (a
    /// bundle); `None` means read them from the host.
    fn uploaded(&mut self, _name: &str, _shape: &[usize], _rows: Range<usize>) -> Result<Option<Uploaded>> {
        Ok(None)
    }
}

/// Builds device tensors from a source.
pub struct Loader<'a> {
    pub source: &'a mut dyn WeightSource,
    pub device: Device,
}

impl Loader<'_> {
    /// A tensor as f32.
    pub fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        match self.source.uploaded(name, &shape, 0..shape[0])? {
            Some(Uploaded::Tensor(t)) => Ok(t.reshape(shape)),
            Some(Uploaded::Matrix(m)) => Ok(m.to_f32().reshape(shape)),
            None => {
                let values = self.source.read(name, &shape, 0..shape[0])?;
                Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
            }
        }
    }

    /// Rows `rows` of a weight matrix `[n, cols]`, in the store's format (quantized stays
    /// quantized: the matmul decodes it).
    pub fn get_rows(&mut self, name: &str, shape: [usize; 2], rows: Range<usize>) -> Result<Matrix> {
        let dims = [rows.len(), shape[1]];
        match self.source.uploaded(name, &shape, rows.clone())? {
            Some(Uploaded::Matrix(m)) => return Ok(m),
            Some(Uploaded::Tensor(t)) => return Ok(Matrix::from_f32(t)),
            None => {}
        }
        if let Some((stored, storage)) = self.source.read_quantized(name, &shape, rows.clone())? {
            return Ok(Matrix::from_stored(&stored, dims[0], dims[1], storage, &self.device));
        }
        let values = self.source.read(name, &shape, rows)?;
        Ok(Matrix::from_f32(Tensor::from_data(TensorData::new(values, dims), &self.device)))
    }

    /// A whole weight matrix.
    pub fn get_matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Matrix> {
        self.get_rows(name, shape, 0..shape[0])
    }
}

/// Largest block of an embedding matrix. WebGPU's default maxStorageBufferBindingSize is 128 MiB
/// and Gemma's table is 2 GiB in f32, so it is stored and read as row blocks of at most this
/// much f32.
pub const BLOCK_BYTES: usize = 64 << 20;

/// Rows of a `[rows, cols]` table per block: at most [`BLOCK_BYTES`] of f32. The converter splits
/// the embedding at these rows and the model reads it block by block, so each is one part.
pub fn block_rows(rows: usize, cols: usize) -> usize {
    (BLOCK_BYTES / (cols * 4)).clamp(1, rows.max(1))
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

/// Parses `tokenizer.json` bytes (`what` names the file in errors) and checks it fits the model.
pub fn open_tokenizer(bytes: &[u8], config: &MgmConfig, what: &str) -> Result<crate::text::Tokenizer> {
    let tokenizer = crate::text::Tokenizer::from_bytes(bytes)?;
    if tokenizer.vocab_size() > config.gemma.vocab_size {
        crate::bail!(
            Mismatch,
            "{what}: tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            config.gemma.vocab_size
        );
    }
    Ok(tokenizer)
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
        self.count(values.len());
        Ok(values)
    }

    fn read_quantized(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Option<(Vec<u8>, Storage)>> {
        let cols: usize = shape.iter().skip(1).product();
        let out = self.inner.read_quantized(name, shape, rows.clone())?;
        if out.is_some() {
            self.count(rows.len() * cols);
        }
        Ok(out)
    }

    fn uploaded(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Option<Uploaded>> {
        let cols: usize = shape.iter().skip(1).product();
        let out = self.inner.uploaded(name, shape, rows.clone())?;
        if out.is_some() {
            self.count(rows.len() * cols);
        }
        Ok(out)
    }
}

impl Counted<'_> {
    fn count(&mut self, values: usize) {
        self.done += values as u64;
        (self.on_progress)(crate::events::Progress { phase: "load", done: self.done, total: self.total });
    }
}
