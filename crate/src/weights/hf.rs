//! HF checkpoints: one `model.safetensors`, or shards listed by `model.safetensors.index.json`.
//! Tensors are read one at a time straight from the files, so host memory stays at one tensor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::TensorInfo;
use safetensors::Dtype;

use super::WeightSource;
use crate::config::MgmConfig;
use crate::bail;
use crate::error::{MgmError, Result};

struct Entry {
    file: usize,
    info: TensorInfo,
    /// Byte offset of the data section in its file.
    base: u64,
}

/// A set of safetensors files read lazily, tensor by tensor.
pub struct Safetensors {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
}

impl Safetensors {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut st = Safetensors { files: Vec::new(), entries: HashMap::new() };
        for path in paths {
            let mut file = File::open(path).map_err(|e| io_err(path, e))?;
            let len = file.metadata().map_err(|e| io_err(path, e))?.len();
            let (base, tensors) = read_header(&mut file, len, path)?;
            for (name, info) in tensors {
                st.entries.insert(name, Entry { file: st.files.len(), info, base });
            }
            st.files.push((path.clone(), file));
        }
        Ok(st)
    }

    /// The weights of an HF checkpoint directory: single file or indexed shards.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| io_err(&index, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| MgmError::Format(format!("{}: {e}", index.display())))?;
            let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
                bail!(Format, "{}: no weight_map", index.display());
            };
            let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            shards.sort();
            shards.dedup();
            let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            if let Some(p) = paths.iter().find(|p| !p.exists()) {
                bail!(Missing, "{}: shard listed in the index is missing", p.display());
            }
            let st = Self::open(&paths)?;
            if let Some((name, _)) = map.iter().find(|(name, _)| !st.entries.contains_key(*name)) {
                bail!(Mismatch, "{}: tensor {name} is listed but not in its shard", index.display());
            }
            return Ok(st);
        }
        let single = dir.join("model.safetensors");
        if !single.exists() {
            bail!(Missing, "{}: no model.safetensors or model.safetensors.index.json", dir.display());
        }
        Self::open(&[single])
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Stored shape of `name` (empty when absent).
    pub fn shape_of(&self, name: &str) -> Vec<usize> {
        self.entries.get(name).map(|e| e.info.shape.clone()).unwrap_or_default()
    }
}

impl WeightSource for Safetensors {
    fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn read(&mut self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>> {
        let Some(e) = self.entries.get(name) else { bail!(Missing, "weights: tensor {name} is missing") };
        let (path, file) = &mut self.files[e.file];
        if e.info.shape != shape {
            bail!(Mismatch, "{}: tensor {name} has shape {:?}, expected {shape:?}", path.display(), e.info.shape);
        }
        let width = match e.info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => bail!(Mismatch, "{}: tensor {name} has dtype {other:?}; expected f32, f16 or bf16", path.display()),
        };
        let cols: usize = e.info.shape.iter().skip(1).product();
        let rows_total = e.info.shape.first().copied().unwrap_or(1);
        let begin = e.info.data_offsets.0;
        if rows.end > rows_total {
            bail!(Input, "{}: tensor {name}: rows {rows:?} of {rows_total}", path.display());
        }
        let mut bytes = vec![0u8; rows.len() * cols * width];
        let start = e.base + (begin + rows.start * cols * width) as u64;
        file.seek(SeekFrom::Start(start)).map_err(|err| io_err(path, err))?;
        file.read_exact(&mut bytes).map_err(|_| truncated(path))?;
        Ok(to_f32(&bytes, e.info.dtype))
    }
}

/// Reads a safetensors header from the start of a file of `len` bytes: where the data begins and
/// each tensor, every one checked to lie inside the file with as many bytes as its shape needs
/// (so reads never go out of bounds, whatever the header says).
pub fn read_header(file: &mut impl Read, len: u64, path: &Path) -> Result<(u64, Vec<(String, TensorInfo)>)> {
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|_| truncated(path))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n > len.saturating_sub(8) {
        bail!(Format, "{}: not a safetensors file (bad header length)", path.display());
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|_| truncated(path))?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| MgmError::Format(format!("{}: bad safetensors header: {e}", path.display())))?;
    let base = 8 + n;
    let mut tensors = Vec::new();
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let info: TensorInfo = serde_json::from_value(value).map_err(|e| MgmError::Format(format!("{}: tensor {name}: {e}", path.display())))?;
        let (begin, end) = info.data_offsets;
        let bytes = info.shape.iter().try_fold(info.dtype.bitsize(), |a, &d| a.checked_mul(d)).map(|bits| bits.div_ceil(8));
        if begin > end || Some(end - begin) != bytes {
            bail!(Format, "{}: tensor {name}: byte length does not match its shape", path.display());
        }
        if base.checked_add(end as u64).is_none_or(|e| e > len) {
            bail!(Format, "{}: truncated file (tensor {name} runs past the end)", path.display());
        }
        tensors.push((name, info));
    }
    Ok((base, tensors))
}

/// Little-endian f32 / f16 / bf16 bytes to f32.
pub fn to_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> MgmError {
    if e.kind() == std::io::ErrorKind::NotFound {
        MgmError::Missing(format!("{}: file not found", path.display()))
    } else {
        MgmError::Io(format!("{}: {e}", path.display()))
    }
}

fn truncated(path: &Path) -> MgmError {
    MgmError::Format(format!("{}: truncated file", path.display()))
}

/// Reads a small text file of a checkpoint directory, with a clear error when it is absent.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

/// The size in values of what inference reads from this store.
pub fn used_values(st: &Safetensors, config: &MgmConfig) -> u64 {
    st.entries.iter().filter(|(name, _)| super::is_used(config, name)).map(|(_, e)| e.info.shape.iter().product::<usize>() as u64).sum()
}

/// MGM's checkpoint stores `lm_head.weight` as a copy of the embedding (spec §6). It is not
/// loaded; a head that differs would be a different model, so that is an error, not a guess.
pub fn check_tied_head(st: &mut Safetensors, config: &MgmConfig) -> Result<()> {
    if !st.has("lm_head.weight") {
        return Ok(());
    }
    let shape = [config.gemma.vocab_size, config.gemma.hidden_size];
    let step = 4096;
    for start in (0..shape[0]).step_by(step) {
        let rows = start..(start + step).min(shape[0]);
        if st.read("lm_head.weight", &shape, rows.clone())? != st.read("model.embed_tokens.weight", &shape, rows)? {
            bail!(Mismatch, "lm_head.weight differs from model.embed_tokens.weight; untied heads are not supported");
        }
    }
    Ok(())
}
