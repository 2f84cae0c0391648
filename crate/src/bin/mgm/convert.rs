//! `mgm convert`: an HF checkpoint into the web bundle the browser loads.

use std::path::PathBuf;

use mgm::error::Result;
use mgm::weights::convert::{convert, Preset};

#[derive(clap::Args)]
pub struct Args {
    /// HF checkpoint directory (config.json, tokenizer.json, safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Output bundle directory.
    #[arg(long)]
    out: PathBuf,
    /// q4 (default): Gemma's matrices int4; q8: int8; f16; f32. Vision and projectors stay f16.
    #[arg(long, default_value = "q4", value_parser = ["q4", "q8", "f16", "f32"])]
    quant: String,
    /// Largest shard file, MiB (fractions allowed).
    #[arg(long, default_value_t = 64.0)]
    shard_mib: f64,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = mgm::device::now_ms();
    let report = convert(&a.model, &a.out, a.quant.parse::<Preset>()?, (a.shard_mib * (1u64 << 20) as f64) as u64, &mut crate::progress_bar)?;
    eprintln!(
        "{}: {} tensors in {} shards, {:.1} MiB, {} preset, verified, in {:.1} s, peak RSS {:.2} GiB",
        a.out.display(),
        report.tensors,
        report.shards,
        report.bytes as f64 / (1 << 20) as f64,
        a.quant,
        (mgm::device::now_ms() - t0) / 1e3,
        crate::peak_rss_gib()
    );
    Ok(())
}
