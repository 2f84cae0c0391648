//! The web bundle: `manifest.json` + shard files + `tokenizer.json`, servable by any static web
//! server (format: docs/bundle-format.md). Shards are read whole (in the browser they arrive by
//! fetch), verified by sha256 before use, uploaded, and dropped.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};
use burn::tensor::{Device, Tensor, TensorData};
use sha2::{Digest, Sha256};

use crate::quant::{self, Storage};
use super::{Uploaded, WeightSource};
use crate::ops::Matrix;
use crate::bail;
use crate::config::MgmConfig;
use crate::error::{MgmError, Result};

pub const FORMAT: &str = "mgm-bundle";
pub const VERSION: u32 = 1;
/// Every part starts at a multiple of this, so it can be uploaded as is.
pub const ALIGN: u64 = 256;
/// The most values one tensor may hold: MGM-2B's largest, the embedding, has 5.24e8; at 2^29 its
/// f32 size still fits wasm32's usize.
const MAX_VALUES: usize = 1 << 29;

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
        // Files resolve inside the bundle only: a name with a path, `..` or a scheme could reach
        // other files on disk or other URLs.
        for name in std::iter::once(&self.tokenizer).chain(self.shards.iter().map(|s| &s.file)) {
            let plain = !name.starts_with('.') && !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !plain {
                bail!(Format, "manifest.json: {name:?} is not a file name inside the bundle");
            }
        }
        for t in &self.tensors {
            // Sizes are checked before any arithmetic on them: a manifest is untrusted input.
            let values = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if values.is_none_or(|n| n > MAX_VALUES) {
                bail!(Format, "manifest.json: tensor {} has an impossible shape {:?}", t.name, t.shape);
            }
            let cols: usize = t.shape.iter().skip(1).product();
            if t.storage.is_quantized() && (t.shape.len() != 2 || !cols.is_multiple_of(quant::BLOCK)) {
                bail!(Format, "manifest.json: tensor {} is quantized but its rows are not whole blocks of {}", t.name, quant::BLOCK);
            }
            let mut next = 0;
            for p in &t.parts {
                let Some(shard) = self.shards.get(p.shard) else { bail!(Format, "manifest.json: tensor {} points at shard {} which is not listed", t.name, p.shard) };
                let fits = p.offset.checked_add(p.length).is_some_and(|end| end <= shard.size);
                if p.rows[0] != next || p.rows[1] <= p.rows[0] || !fits || p.length != t.storage.bytes(p.rows[1] - p.rows[0], cols) as u64 {
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

/// A bundle's tensors on the device, filled shard by shard as the bytes arrive (read from disk,
/// or fetched by the browser, in any order). A shard is verified, its parts uploaded, and its
/// bytes can go: host memory holds one shard at a time, whatever the model size. The browser
/// verifies a shard with WebCrypto and hands its parts over one at a time ([`Self::add_part`]),
/// so wasm memory holds one part, not a shard.
pub struct BundleStore {
    pub manifest: Manifest,
    device: Device,
    index: HashMap<String, usize>,
    /// Uploaded parts per tensor, taken by the model as it loads.
    parts: HashMap<String, Vec<([usize; 2], Uploaded)>>,
    /// (tensor, part) pairs uploaded so far.
    done: HashSet<(usize, usize)>,
}

impl BundleStore {
    /// Checks the manifest's config and the tokenizer before any shard is fetched.
    pub fn open(manifest: Manifest, tokenizer: &[u8], device: &Device) -> Result<(Self, crate::text::Tokenizer)> {
        let config = manifest.mgm_config()?;
        let tokenizer = super::open_tokenizer(tokenizer, &config, &format!("bundle {}", manifest.tokenizer))?;
        let index = manifest.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok((BundleStore { manifest, device: device.clone(), index, parts: HashMap::new(), done: HashSet::new() }, tokenizer))
    }

    /// Verifies shard `i` (size and sha256) and uploads every tensor part it holds.
    pub fn add_shard(&mut self, i: usize, bytes: &[u8]) -> Result<()> {
        let Some(info) = self.manifest.shards.get(i) else { bail!(Input, "bundle: there is no shard {i}") };
        if bytes.len() as u64 != info.size {
            bail!(Format, "shard {}: {} bytes, expected {} (truncated or wrong file)", info.file, bytes.len(), info.size);
        }
        if sha256_hex(bytes) != info.sha256 {
            bail!(Format, "shard {}: sha256 does not match the manifest (corrupted download?)", info.file);
        }
        let held: Vec<(usize, usize, Range<usize>)> = self.parts_in(i).collect();
        for (t, k, range) in held {
            self.add_part(t, k, &bytes[range])?;
        }
        Ok(())
    }

    /// (tensor, part, byte range) of every part stored in shard `i`.
    fn parts_in(&self, i: usize) -> impl Iterator<Item = (usize, usize, Range<usize>)> + '_ {
        self.manifest.tensors.iter().enumerate().flat_map(move |(t, e)| {
            e.parts.iter().enumerate().filter(move |(_, p)| p.shard == i).map(move |(k, p)| (t, k, p.offset as usize..(p.offset + p.length) as usize))
        })
    }

    /// Uploads part `k` of tensor `t` (`manifest.tensors[t].parts[k]`) from its bytes, which the
    /// caller took from a shard it verified. A part already in is skipped.
    pub fn add_part(&mut self, t: usize, k: usize, bytes: &[u8]) -> Result<()> {
        let Some(p) = self.manifest.tensors.get(t).and_then(|e| e.parts.get(k)) else { bail!(Input, "bundle: there is no part {k} of tensor {t}") };
        if bytes.len() as u64 != p.length {
            bail!(Input, "bundle: part {k} of {} is {} bytes, not {}", self.manifest.tensors[t].name, bytes.len(), p.length);
        }
        if !self.done.insert((t, k)) {
            return Ok(());
        }
        let e = &self.manifest.tensors[t];
        let cols: usize = e.shape.iter().skip(1).product();
        let rows = p.rows[1] - p.rows[0];
        // Weight matrices stay in their stored format; vectors and convolution kernels (rows
        // that are not whole blocks of 32) become f32.
        let part = if e.shape.len() == 2 && cols.is_multiple_of(quant::BLOCK) {
            Uploaded::Matrix(Matrix::from_stored(bytes, rows, cols, e.storage, &self.device))
        } else {
            Uploaded::Tensor(Tensor::from_data(TensorData::new(quant::decode(bytes, rows * cols, e.storage), [rows, cols]), &self.device))
        };
        self.parts.entry(e.name.clone()).or_default().push((p.rows, part));
        // The device queues the write with its own copy of the bytes until it next runs its
        // queue: run it now, or a load holds a good part of the bundle in (wasm) memory.
        self.device.flush().map_err(|err| MgmError::Device(format!("uploading {}: {err:?}", e.name)))?;
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks that every shard is in, before the model takes the tensors.
    pub fn complete(&self) -> Result<()> {
        for (t, e) in self.manifest.tensors.iter().enumerate() {
            if let Some(p) = (0..e.parts.len()).find(|&k| !self.done.contains(&(t, k))).map(|k| &e.parts[k]) {
                bail!(Missing, "bundle: shard {} was not loaded", self.manifest.shards[p.shard].file);
            }
        }
        Ok(())
    }

    /// Values in every tensor (the `load` progress total).
    pub fn values(&self) -> u64 {
        self.manifest.tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum()
    }

    fn entry(&self, name: &str, shape: &[usize]) -> Result<&TensorEntry> {
        let Some(&i) = self.index.get(name) else { bail!(Missing, "bundle: tensor {name} is missing") };
        let t = &self.manifest.tensors[i];
        if t.shape != shape {
            bail!(Mismatch, "bundle: tensor {name} has shape {:?}, expected {shape:?}", t.shape);
        }
        Ok(t)
    }
}

impl WeightSource for BundleStore {
    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn read(&mut self, name: &str, _: &[usize], _: Range<usize>) -> Result<Vec<f32>> {
        bail!(Format, "bundle: tensor {name} is on the device; it has no host copy")
    }

    /// The parts covering `rows`, taken from the store: a part the request covers is used as
    /// is (the converter splits the embedding at its lookup blocks), others are sliced or joined.
    fn uploaded(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Option<Uploaded>> {
        let parts = self.entry(name, shape)?.parts.clone();
        let (mut matrices, mut tensors) = (Vec::new(), Vec::new());
        for p in parts.iter().filter(|p| p.rows[0] < rows.end && p.rows[1] > rows.start) {
            let held = self.parts.get_mut(name).and_then(|v| v.iter().position(|(r, _)| *r == p.rows).map(|k| (v, k)));
            let Some((held, k)) = held else {
                bail!(Missing, "bundle: tensor {name} rows {:?} are not loaded (shard {})", p.rows, self.manifest.shards[p.shard].file)
            };
            let (a, b) = (rows.start.max(p.rows[0]) - p.rows[0], rows.end.min(p.rows[1]) - p.rows[0]);
            let whole = (a, b) == (0, p.rows[1] - p.rows[0]);
            match (whole, &held[k].1) {
                (true, _) => match held.remove(k).1 {
                    Uploaded::Matrix(m) => matrices.push(m),
                    Uploaded::Tensor(t) => tensors.push(t),
                },
                (false, Uploaded::Matrix(m)) => matrices.push(m.slice_rows(a..b)),
                (false, Uploaded::Tensor(t)) => tensors.push(t.clone().slice_dim(0, a..b)),
            }
        }
        Ok(Some(if tensors.is_empty() { Uploaded::Matrix(Matrix::stack(matrices)) } else { Uploaded::Tensor(Tensor::cat(tensors, 0)) }))
    }
}
