//! The web bundle: `manifest.json` + shard files + `tokenizer.json`, servable by any static web
//! server (format: docs/bundle-format.md). Shards are read whole (in the browser they arrive by
//! fetch), verified by sha256 before use, and at most two are held at once.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::quant::{self, Storage};
use super::WeightSource;
use crate::bail;
use crate::config::MgmConfig;
use crate::error::{MgmError, Result};

pub const FORMAT: &str = "mgm-bundle";
pub const VERSION: u32 = 1;
/// Every part starts at a multiple of this, so it can be uploaded as is.
pub const ALIGN: u64 = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The checkpoint's `config.json`, verbatim.
    pub config: serde_json::Value,
    pub tokenizer: String,
    pub generation: GenerationDefaults,
    /// The quantization preset the converter used (q4, q8, f16, f32).
    pub preset: String,
    pub shards: Vec<Shard>,
    pub tensors: Vec<TensorEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationDefaults {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub max_new_tokens: usize,
}

impl Default for GenerationDefaults {
    /// MGM's demo settings (spec §4.3).
    fn default() -> Self {
        GenerationDefaults { temperature: 0.2, top_p: 0.7, top_k: 0, max_new_tokens: 512 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shard {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
    /// Quantization block along a row (0 for float storage).
    pub block: usize,
    /// Row ranges, each inside one shard; a tensor larger than a shard has several.
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub shard: usize,
    pub offset: u64,
    pub length: u64,
    pub rows: [usize; 2],
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        // Read the version first, so a newer bundle gets a clear message rather than a parse error.
        let head: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| MgmError::Format(format!("manifest.json: {e}")))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            bail!(Format, "manifest.json: not an mgm bundle (format is not \"{FORMAT}\")");
        }
        let version = head.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != VERSION as u64 {
            bail!(Mismatch, "manifest.json: bundle format version {version}; this build reads version {VERSION} (convert it again with this mgm)");
        }
        let m: Manifest = serde_json::from_value(head).map_err(|e| MgmError::Format(format!("manifest.json: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        for t in &self.tensors {
            let cols: usize = t.shape.iter().skip(1).product();
            let mut next = 0;
            for p in &t.parts {
                let Some(shard) = self.shards.get(p.shard) else { bail!(Format, "manifest.json: tensor {} points at shard {} which is not listed", t.name, p.shard) };
                let rows = p.rows[1].saturating_sub(p.rows[0]);
                if p.rows[0] != next || p.offset + p.length > shard.size || p.length != t.storage.bytes(rows, cols) as u64 {
                    bail!(Format, "manifest.json: tensor {} has an inconsistent part in {}", t.name, shard.file);
                }
                next = p.rows[1];
            }
            if next != t.shape.first().copied().unwrap_or(1) {
                bail!(Format, "manifest.json: tensor {} does not cover its rows", t.name);
            }
        }
        Ok(())
    }

    pub fn mgm_config(&self) -> Result<MgmConfig> {
        MgmConfig::from_json(&self.config.to_string())
    }
}

/// Where bundle files come from: a directory natively, `fetch` in the browser.
pub trait ByteSource {
    /// The whole file `name` of the bundle.
    fn fetch(&mut self, name: &str) -> Result<Vec<u8>>;
}

/// A bundle directory on disk.
pub struct DirSource(pub std::path::PathBuf);

impl ByteSource for DirSource {
    fn fetch(&mut self, name: &str) -> Result<Vec<u8>> {
        let path = self.0.join(name);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MgmError::Missing(format!("{}: file not found", path.display())),
            _ => MgmError::Io(format!("{}: {e}", path.display())),
        })
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves a bundle's tensors to the model loader, fetching and verifying shards as needed.
pub struct BundleReader<S: ByteSource> {
    pub manifest: Manifest,
    source: S,
    index: HashMap<String, usize>,
    /// Most recently used last; at most two shards are held.
    held: Vec<(usize, Vec<u8>)>,
}

impl<S: ByteSource> BundleReader<S> {
    pub fn new(manifest: Manifest, source: S) -> Self {
        let index = manifest.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        BundleReader { manifest, source, index, held: Vec::new() }
    }

    /// Fetches shard `i` (checking its size and sha256) unless held.
    fn shard(&mut self, i: usize) -> Result<&[u8]> {
        if let Some(pos) = self.held.iter().position(|(s, _)| *s == i) {
            let entry = self.held.remove(pos);
            self.held.push(entry);
        } else {
            let info = &self.manifest.shards[i];
            let bytes = self.source.fetch(&info.file)?;
            if bytes.len() as u64 != info.size {
                bail!(Format, "shard {}: {} bytes, expected {} (truncated or wrong file)", info.file, bytes.len(), info.size);
            }
            if sha256_hex(&bytes) != info.sha256 {
                bail!(Format, "shard {}: sha256 does not match the manifest (corrupted download?)", info.file);
            }
            if self.held.len() == 2 {
                self.held.remove(0);
            }
            self.held.push((i, bytes));
        }
        Ok(&self.held.last().expect("just pushed").1)
    }

    fn entry(&self, name: &str, shape: &[usize]) -> Result<&TensorEntry> {
        let Some(&i) = self.index.get(name) else { bail!(Missing, "bundle: tensor {name} is missing") };
        let t = &self.manifest.tensors[i];
        if t.shape != shape {
            bail!(Mismatch, "bundle: tensor {name} has shape {:?}, expected {shape:?}", t.shape);
        }
        Ok(t)
    }

    /// The stored bytes of rows `rows`, gathered over parts, with the storage type.
    fn rows_bytes(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<(Vec<u8>, Storage, usize)> {
        let t = self.entry(name, shape)?.clone();
        let cols: usize = shape.iter().skip(1).product();
        // Quantized rows keep values and scales apart, so gather each side separately.
        let (mut values, mut scales) = (Vec::new(), Vec::new());
        for p in t.parts.iter().filter(|p| p.rows[0] < rows.end && p.rows[1] > rows.start) {
            let (r0, r1) = (rows.start.max(p.rows[0]) - p.rows[0], rows.end.min(p.rows[1]) - p.rows[0]);
            let part_rows = p.rows[1] - p.rows[0];
            let shard = self.shard(p.shard)?;
            let bytes = &shard[p.offset as usize..(p.offset + p.length) as usize];
            let (v, s) = split_rows(bytes, t.storage, part_rows, cols, r0..r1);
            values.extend_from_slice(v);
            scales.extend_from_slice(s);
        }
        values.extend(scales);
        Ok((values, t.storage, rows.len() * cols))
    }
}

/// Rows `rows` of one part: (value bytes, scale bytes); scale bytes are empty for floats.
fn split_rows(bytes: &[u8], storage: Storage, part_rows: usize, cols: usize, rows: Range<usize>) -> (&[u8], &[u8]) {
    let row_bytes = storage.bytes(1, cols);
    match storage {
        Storage::F32 | Storage::F16 => (&bytes[rows.start * row_bytes..rows.end * row_bytes], &[]),
        Storage::Q8 | Storage::Q4 => {
            let vals = if storage == Storage::Q8 { cols } else { cols / 2 };
            let scales = 2 * cols / quant::BLOCK;
            let (v, s) = bytes.split_at(part_rows * vals);
            (&v[rows.start * vals..rows.end * vals], &s[rows.start * scales..rows.end * scales])
        }
    }
}

impl<S: ByteSource> WeightSource for BundleReader<S> {
    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn read(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>> {
        let (bytes, storage, n) = self.rows_bytes(name, shape, rows)?;
        Ok(quant::decode(&bytes, n, storage))
    }

    fn read_quantized(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Option<(Vec<i8>, Vec<f32>, Storage)>> {
        if !self.entry(name, shape)?.storage.is_quantized() {
            return Ok(None);
        }
        let (bytes, storage, n) = self.rows_bytes(name, shape, rows)?;
        let (q, scales) = quant::split_quantized(&bytes, n, storage);
        Ok(Some((q, scales, storage)))
    }
}

/// Loads a bundle: manifest, tokenizer, then every tensor the model asks for.
pub fn load<S: ByteSource>(mut source: S, device: &burn::tensor::Device, on_progress: crate::events::OnProgress) -> Result<(crate::model::Mgm, crate::text::Tokenizer)> {
    let manifest = Manifest::parse(&source.fetch("manifest.json")?)?;
    let config = manifest.mgm_config()?;
    let tokenizer = super::open_tokenizer(&source.fetch(&manifest.tokenizer)?, &config, &format!("bundle {}", manifest.tokenizer))?;
    let total = manifest.tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();
    let mut reader = BundleReader::new(manifest, source);
    Ok((super::load_model(&mut reader, total, &config, device, on_progress)?, tokenizer))
}
