//! Where a model comes from: an HF checkpoint directory, a bundle directory, or a bundle store
//! the browser fills shard by shard. The one place that turns a weight source into a model.

use std::path::Path;

use burn::tensor::Device;

use crate::bail;
use crate::config::MgmConfig;
use crate::error::{MgmError, Result};
use crate::events::{OnProgress, Progress};
use crate::model::Mgm;
use crate::text::Tokenizer;
use crate::weights::bundle::{BundleStore, ByteSource, DirSource, Manifest};
use crate::weights::hf::{check_tied_head, read_text, used_values, Safetensors};
use crate::weights::{open_tokenizer, Counted, Loader, WeightSource};

/// Builds the model from `source` on `device`, reporting progress against `total` values.
pub fn model(source: &mut dyn WeightSource, total: u64, config: &MgmConfig, device: &Device, on_progress: OnProgress) -> Result<Mgm> {
    let mut counted = Counted { inner: source, done: 0, total, on_progress };
    Mgm::load(&mut Loader { source: &mut counted, device: device.clone() }, config)
}

/// The model from a bundle store once every shard is in.
pub fn from_store(mut store: BundleStore, on_progress: OnProgress) -> Result<Mgm> {
    store.complete()?;
    let (config, total, device) = (store.manifest.mgm_config()?, store.values(), store.device().clone());
    model(&mut store, total, &config, &device, on_progress)
}

/// Loads a bundle: manifest and tokenizer, then each shard in turn (fetched, verified, uploaded,
/// dropped), then the model from the device-resident tensors.
pub fn bundle<S: ByteSource>(mut source: S, device: &Device, on_progress: OnProgress) -> Result<(Mgm, Tokenizer)> {
    let manifest = Manifest::parse(&source.fetch("manifest.json")?)?;
    let tokenizer = source.fetch(&manifest.tokenizer)?;
    let (mut store, tokenizer) = BundleStore::open(manifest, &tokenizer, device)?;
    let total = store.manifest.shards.iter().map(|s| s.size).sum();
    let mut done = 0;
    for i in 0..store.manifest.shards.len() {
        let bytes = source.fetch(&store.manifest.shards[i].file)?;
        store.add_shard(i, &bytes)?;
        done += bytes.len() as u64;
        on_progress(Progress { phase: "upload", done, total });
    }
    Ok((from_store(store, on_progress)?, tokenizer))
}

/// A model directory: a bundle (`manifest.json`), or an HF checkpoint (Gemma or MGM:
/// `config.json`, `tokenizer.json`, safetensors weights).
pub fn dir(dir: &Path, device: &Device, on_progress: OnProgress) -> Result<(Mgm, Tokenizer)> {
    if !dir.is_dir() {
        bail!(Missing, "{}: model directory not found", dir.display());
    }
    if dir.join("manifest.json").exists() {
        return bundle(DirSource(dir.to_path_buf()), device, on_progress);
    }
    let config = MgmConfig::from_json(&read_text(&dir.join("config.json"))?)?;
    let tok_path = dir.join("tokenizer.json");
    let tok_bytes = std::fs::read(&tok_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => MgmError::Missing(format!("{}: file not found", tok_path.display())),
        _ => MgmError::Io(format!("{}: {e}", tok_path.display())),
    })?;
    let tokenizer = open_tokenizer(&tok_bytes, &config, &tok_path.display().to_string())?;
    let mut st = Safetensors::open_dir(dir)?;
    check_tied_head(&mut st, &config)?;
    let total = used_values(&st, &config);
    Ok((model(&mut st, total, &config, device, on_progress)?, tokenizer))
}
