//! `mgm convert`: an HF checkpoint into the web bundle the browser loads.

use std::path::PathBuf;

use mgm::error::Result;
use mgm::weights::convert::{convert, vision_storage, Preset};

#[derive(clap::Args)]
pub struct Args {
    /// HF checkpoint directory (config.json, tokenizer.json, safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Output bundle directory.
    #[arg(long)]
    out: PathBuf,
    /// q4 (default): Gemma's matrices int4, the vision side's (both towers, mining, projector)
    /// int8; q8: both int8; f16; f32. Convolution kernels stay f16, norms and biases f32.
    #[arg(long, default_value = "q4", value_parser = ["q4", "q8", "f16", "f32"])]
    quant: String,
    /// Store the vision side's matrices as this instead of the preset's choice (f16 keeps the
    /// towers as released; q4 is smaller and less exact: README "Converting").
    #[arg(long, value_parser = ["q4", "q8", "f16", "f32"])]
    vision: Option<String>,
    /// Largest shard file, MiB (fractions allowed).
    #[arg(long, default_value_t = 64.0)]
    shard_mib: f64,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = mgm::device::now_ms();
    let mut preset = a.quant.parse::<Preset>()?;
    if let Some(v) = &a.vision {
        preset.vision = vision_storage(v)?;
    }
    let report = convert(&a.model, &a.out, preset, (a.shard_mib * (1u64 << 20) as f64) as u64, &mut crate::progress_bar)?;
    eprintln!(
        "{}: {} tensors in {} shards, {:.1} MiB, {} preset, verified, in {:.1} s, peak RSS {:.2} GiB",
        a.out.display(),
        report.tensors,
        report.shards,
        report.bytes as f64 / (1 << 20) as f64,
        preset.name(),
        (mgm::device::now_ms() - t0) / 1e3,
        crate::peak_rss_gib()
    );
    Ok(())
}
