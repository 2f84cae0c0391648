//! HF checkpoint -> web bundle, streamed: tensors go through in row chunks, so host memory stays
//! at one chunk (32 MiB of f32) plus the scales of one shard part, whatever the model size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::bundle::{sha256_hex, DirSource, GenerationDefaults, Manifest, Part, Shard, TensorEntry, ALIGN, FORMAT, VERSION};
use super::hf::{read_text, Safetensors};
use crate::quant::{self, Storage};
use super::{is_used, WeightSource};
use crate::bail;
use crate::config::MgmConfig;
use crate::error::{MgmError, Result};
use crate::events::{OnProgress, Progress};

const EMBEDDING: &str = "model.embed_tokens.weight";

/// A `--quant` preset: what each tensor is stored as. Gemma's linear layers and embedding take
/// `text`; the vision side's matrices (both towers' linear layers, mining, the projector) take
/// `vision`; convolution kernels stay f16 and vectors (norms, biases) f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub text: Storage,
    pub vision: Storage,
}

impl Preset {
    /// Gemma in q4, the vision side in q8 (the towers are compute-bound and 4 bits cost them more
    /// accuracy than it saves bytes; README: "Converting").
    pub const Q4: Preset = Preset { text: Storage::Q4, vision: Storage::Q8 };
    pub const Q8: Preset = Preset { text: Storage::Q8, vision: Storage::Q8 };
    pub const F16: Preset = Preset { text: Storage::F16, vision: Storage::F16 };
    pub const F32: Preset = Preset { text: Storage::F32, vision: Storage::F32 };

    /// The preset whose text side is `text`.
    fn of(text: Storage) -> Preset {
        match text {
            Storage::Q4 => Preset::Q4,
            Storage::Q8 => Preset::Q8,
            Storage::F16 => Preset::F16,
            Storage::F32 => Preset::F32,
        }
    }
}

fn storage_name(s: Storage) -> &'static str {
    match s {
        Storage::Q4 => "q4",
        Storage::Q8 => "q8",
        Storage::F16 => "f16",
        Storage::F32 => "f32",
    }
}

fn parse_storage(s: &str, what: &str) -> Result<Storage> {
    Ok(match s {
        "q4" => Storage::Q4,
        "q8" => Storage::Q8,
        "f16" => Storage::F16,
        "f32" => Storage::F32,
        _ => bail!(Input, "unknown {what} {s:?} (expected q4, q8, f16 or f32)"),
    })
}

impl std::str::FromStr for Preset {
    type Err = MgmError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(Preset::of(parse_storage(s, "--quant")?))
    }
}

/// `--vision`: what the vision side's matrices are stored as, overriding the preset's choice.
pub fn vision_storage(s: &str) -> Result<Storage> {
    parse_storage(s, "--vision")
}

impl Preset {
    /// `q4`, or `q4+vision-f16` when the vision side is not the preset's own.
    pub fn name(self) -> String {
        match Preset::of(self.text).vision == self.vision {
            true => storage_name(self.text).into(),
            false => format!("{}+vision-{}", storage_name(self.text), storage_name(self.vision)),
        }
    }

    pub fn storage(self, name: &str, shape: &[usize]) -> Storage {
        let gemma = name == EMBEDDING || (name.starts_with("model.layers.") && name.ends_with("_proj.weight"));
        // Linear layers only: CLIP's position embedding is a table, not a matrix to multiply.
        let vision = ["model.vision_tower", "model.vlm_uni", "model.mm_projector"].iter().any(|p| name.starts_with(p)) && !name.contains("embedding");
        let blockable = shape.len() == 2 && shape[1].is_multiple_of(quant::BLOCK);
        match () {
            _ if shape.len() < 2 => Storage::F32,
            _ if gemma && blockable => self.text,
            _ if vision && blockable => self.vision,
            _ if self.text == Storage::F32 => Storage::F32,
            _ => Storage::F16,
        }
    }
}

/// `model.layers.10` after `model.layers.9`: the order the model loads in, so a reader walks the
/// shards front to back.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut n = c.to_digit(10).unwrap_or(0) as u64;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + d as u64;
                chars.next();
            }
            key.push((std::mem::take(&mut text), n));
        } else {
            text.push(c);
        }
    }
    key.push((text, u64::MAX));
    key
}

struct ShardWriter<'a> {
    dir: &'a Path,
    limit: u64,
    shards: Vec<Shard>,
    file: Option<(BufWriter<File>, Sha256, u64)>,
}

impl ShardWriter<'_> {
    /// Starts a part of `len` bytes: a new shard when it does not fit; returns (shard, offset).
    fn begin(&mut self, len: u64) -> Result<(usize, u64)> {
        let used = self.file.as_ref().map_or(0, |f| f.2.div_ceil(ALIGN) * ALIGN);
        if self.file.is_none() || (used + len > self.limit && used > 0) {
            self.finish()?;
            let name = format!("shard-{:05}.bin", self.shards.len());
            let path = self.dir.join(&name);
            let f = File::create(&path).map_err(|e| MgmError::Io(format!("{}: {e}", path.display())))?;
            self.shards.push(Shard { file: name, size: 0, sha256: String::new() });
            self.file = Some((BufWriter::new(f), Sha256::new(), 0));
        } else {
            self.write(&vec![0u8; (used - self.file.as_ref().map_or(0, |f| f.2)) as usize])?;
        }
        Ok((self.shards.len() - 1, self.file.as_ref().map_or(0, |f| f.2)))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some((w, hash, len)) = self.file.as_mut() else { bail!(Io, "bundle writer: no open shard") };
        w.write_all(bytes).map_err(|e| MgmError::Io(format!("writing a shard: {e}")))?;
        hash.update(bytes);
        *len += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some((mut w, hash, len)) = self.file.take() {
            w.flush().map_err(|e| MgmError::Io(format!("writing a shard: {e}")))?;
            let shard = self.shards.last_mut().expect("a shard is open");
            shard.size = len;
            shard.sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        }
        Ok(())
    }
}

pub struct Report {
    pub tensors: usize,
    pub bytes: u64,
    pub shards: usize,
}

/// Converts the HF checkpoint in `hf_dir` into a bundle in `out_dir`, then reads it back to check.
/// `shard_bytes` caps each shard file (a tensor larger than that is split into row parts).
pub fn convert(hf_dir: &Path, out_dir: &Path, preset: Preset, shard_bytes: u64, on_progress: OnProgress) -> Result<Report> {
    let config_text = read_text(&hf_dir.join("config.json"))?;
    let config = MgmConfig::from_json(&config_text)?;
    let tok_path = hf_dir.join("tokenizer.json");
    let tok = std::fs::read(&tok_path).map_err(|e| MgmError::Missing(format!("{}: {e}", tok_path.display())))?;
    super::open_tokenizer(&tok, &config, &tok_path.display().to_string())?;
    let mut st = Safetensors::open_dir(hf_dir)?;
    super::hf::check_tied_head(&mut st, &config)?;
    let mut names: Vec<String> = st.names().filter(|n| is_used(&config, n)).map(String::from).collect();
    names.sort_by_key(|n| natural_key(n));

    std::fs::create_dir_all(out_dir).map_err(|e| MgmError::Io(format!("{}: {e}", out_dir.display())))?;
    let mut w = ShardWriter { dir: out_dir, limit: shard_bytes.max(ALIGN), shards: Vec::new(), file: None };
    let total: u64 = names.iter().map(|n| st.shape_of(n).iter().product::<usize>() as u64).sum();
    let mut done = 0u64;
    let mut tensors = Vec::new();
    for name in &names {
        let shape = st.shape_of(name);
        let storage = preset.storage(name, &shape);
        let (rows, cols) = (shape.first().copied().unwrap_or(1), shape.iter().skip(1).product::<usize>().max(1));
        let row_bytes = storage.bytes(1, cols) as u64;
        let fit = ((w.limit / row_bytes.max(1)) as usize).clamp(1, rows);
        // The embedding is looked up in row blocks; one part per block is one upload per block,
        // so the loader never slices a quantized tensor.
        let table_block = super::block_rows(rows, cols);
        let part_rows = if name == EMBEDDING && fit >= table_block { table_block } else { fit };
        let chunk_rows = ((32 << 20) / (4 * cols)).clamp(1, part_rows);
        let mut parts = Vec::new();
        for p0 in (0..rows).step_by(part_rows) {
            let p1 = (p0 + part_rows).min(rows);
            let length = storage.bytes(p1 - p0, cols) as u64;
            let (shard, offset) = w.begin(length)?;
            let mut scales = Vec::new();
            for c0 in (p0..p1).step_by(chunk_rows) {
                let c1 = (c0 + chunk_rows).min(p1);
                let values = st.read(name, &shape, c0..c1)?;
                let bytes = quant::encode(&values, storage);
                let (vals, chunk_scales) = if storage.is_quantized() { quant::split_stored(&bytes, values.len(), storage) } else { (&bytes[..], &[][..]) };
                w.write(vals)?;
                scales.extend_from_slice(chunk_scales);
                done += values.len() as u64;
                on_progress(Progress { phase: "convert", done, total });
            }
            w.write(&scales)?;
            parts.push(Part { shard, offset, length, rows: [p0, p1] });
        }
        let block = if storage.is_quantized() { quant::BLOCK } else { 0 };
        tensors.push(TensorEntry { name: name.clone(), shape, storage, block, parts });
    }
    w.finish()?;
    std::fs::write(out_dir.join("tokenizer.json"), &tok).map_err(|e| MgmError::Io(format!("tokenizer.json: {e}")))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        config: serde_json::from_str(&config_text).map_err(|e| MgmError::Format(format!("config.json: {e}")))?,
        tokenizer: "tokenizer.json".into(),
        generation: GenerationDefaults::default(),
        preset: preset.name(),
        shards: w.shards,
        tensors,
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| MgmError::Format(format!("manifest.json: {e}")))?;
    std::fs::write(out_dir.join("manifest.json"), &json).map_err(|e| MgmError::Io(format!("manifest.json: {e}")))?;
    verify(out_dir, &mut *on_progress)
}

/// Reads a bundle back: the manifest parses and is consistent, every shard has its size and hash.
pub fn verify(dir: &Path, on_progress: OnProgress) -> Result<Report> {
    let mut src = DirSource(dir.to_path_buf());
    let manifest = Manifest::parse(&super::bundle::ByteSource::fetch(&mut src, "manifest.json")?)?;
    manifest.mgm_config()?;
    let total: u64 = manifest.shards.iter().map(|s| s.size).sum();
    let mut done = 0;
    for s in &manifest.shards {
        let bytes = super::bundle::ByteSource::fetch(&mut src, &s.file)?;
        if bytes.len() as u64 != s.size || sha256_hex(&bytes) != s.sha256 {
            bail!(Format, "{}: shard {} does not match the manifest", dir.display(), s.file);
        }
        done += s.size;
        on_progress(Progress { phase: "verify", done, total });
    }
    Ok(Report { tensors: manifest.tensors.len(), bytes: total, shards: manifest.shards.len() })
}
