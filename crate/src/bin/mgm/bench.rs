//! `mgm bench`: speed tables with ratios against the first backend of each row group.
//! - text: prefill and decode tokens/s of the tiny checkpoint and of a Gemma-2B-shaped model
//!   with random weights;
//! - image (`--mgm`): each stage of a full-size MGM-2B-shaped model with random weights
//!   (preprocess, CLIP, ConvNeXt, mining + projector, prefill, decode) and peak RSS.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use mgm::config::{GemmaConfig, MgmConfig};
use mgm::device::{self, now_ms, Backend};
use mgm::error::Result;
use mgm::generate::session::read_f32;
use mgm::generate::{generate, GenerateOptions, Sampling};
use mgm::model::{Gemma, Mgm};
use mgm::weights::random::RandomWeights;
use mgm::weights::convert::Preset;
use mgm::quant::{self, Storage};
use mgm::weights::{Loader, WeightSource};

use crate::{peak_rss_gib, reset_peak_rss};

#[derive(clap::Args)]
pub struct Args {
    /// Backends to compare; the first is the baseline of each ratio.
    #[arg(long, default_value = "cpu,wgpu", value_delimiter = ',')]
    backend: Vec<String>,
    /// The tiny checkpoint.
    #[arg(long, default_value = "tests/fixtures/gemma_mqa")]
    tiny: PathBuf,
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 16)]
    new_tokens: usize,
    /// Layers of the Gemma-2B-shaped model (18 is the real depth; fewer is quicker).
    #[arg(long, default_value_t = 18)]
    layers: usize,
    /// Only the tiny model.
    #[arg(long)]
    skip_full: bool,
    /// Time each stage of a full-size MGM-2B-shaped model on one image instead.
    #[arg(long)]
    mgm: bool,
    /// The image for --mgm.
    #[arg(long, default_value = "tests/fixtures/images/landscape.png")]
    image: PathBuf,
    /// Bundles (or checkpoints) to load and time instead: load time, peak RSS, text speed.
    #[arg(long, value_delimiter = ',')]
    bundle: Vec<PathBuf>,
    /// With --bundle or --mgm: also run wgpu with Burn's own ops instead of our kernels (the
    /// implementation before them), first, as the same-run baseline.
    #[arg(long)]
    baseline: bool,
    /// With --bundle or --mgm: also run our kernels without subgroup operations and with 32-bit
    /// words only (as browsers without subgroups run them), before the run with the device's own.
    #[arg(long)]
    no_subgroups: bool,
    /// With --bundle or --mgm: also run our kernels with one-row products (decode) split over
    /// the lanes along k (`split_k`, the usual form on GPUs), after the run with the default.
    #[arg(long)]
    split_gemv: bool,
    /// With --mgm --encode-only or --bundle: time our kernels' encode (or prefill and decode)
    /// with the host waiting for the device every N launches (0: never; see `device::pace`),
    /// for each N listed, in three interleaved rounds, reporting their means (a drifting
    /// machine makes separate runs unfair).
    #[arg(long, value_delimiter = ',')]
    pace: Vec<usize>,
    /// Time the matrix kernels against Burn's matmul on one device (development).
    #[arg(long)]
    kernels: bool,
    /// With --mgm: time every kernel launch of one image encode and one decode step (each waits
    /// for the previous one, so the sum is not the pipelined time) and print where time goes.
    #[arg(long)]
    profile: bool,
    /// With --mgm: time only the whole image encode (no tower split, no prefill or decode), for
    /// a same-run --baseline ratio that does not spend most of its hour on Burn's prefill.
    #[arg(long)]
    encode_only: bool,
    /// Report each preset's error per Gemma layer and on the logits against f32, on a
    /// Gemma-2B-shaped model with random weights (first backend only). With --mgm: the error
    /// of each image-encode stage with the vision side in f16, q8 and q4.
    #[arg(long)]
    accuracy: bool,
    /// With --accuracy --mgm: this HF checkpoint instead of MGM-2B-shaped random weights.
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if !a.pace.is_empty() && !(a.mgm && a.encode_only || !a.mgm && !a.bundle.is_empty()) {
        return Err(mgm::MgmError::Input("--pace goes with --mgm --encode-only or with --bundle".into()));
    }
    if a.mgm && a.accuracy {
        return run_vision_accuracy(&a);
    }
    if a.mgm {
        return run_mgm(&a);
    }
    if !a.bundle.is_empty() {
        return run_bundles(&a);
    }
    if a.accuracy {
        return run_accuracy(&a);
    }
    if a.kernels {
        return run_kernels(&a);
    }
    let mut full = GemmaConfig::gemma_2b();
    full.num_hidden_layers = a.layers;
    let mut rows: Vec<(String, String, Vec<f64>)> = Vec::new();
    let models: &[&str] = if a.skip_full { &["tiny"] } else { &["tiny", "gemma-2b"] };
    for &model_name in models {
        for b in &a.backend {
            let (device, desc) = device::init(b.parse::<Backend>()?)?;
            eprintln!("{model_name} on {desc} ...");
            let t0 = now_ms();
            let model = if model_name == "tiny" {
                mgm::load::dir(&a.tiny, &device, &mut |_| {})?.0.gemma
            } else {
                Gemma::load(&mut Loader { source: &mut RandomWeights::new(7), device: device.clone() }, &full)?
            };
            let load_s = (now_ms() - t0) / 1e3;
            let (prefill, decode) = text_speed(&model, a.prompt_tokens, a.new_tokens)?;
            rows.push((model_name.into(), desc, vec![load_s, prefill, decode]));
        }
    }
    println!("\n{} prompt tokens, {} new tokens, f32 weights, greedy", a.prompt_tokens, a.new_tokens);
    table(["model", "backend"], &["load s", "prefill tok/s", "decode tok/s"], &rows, &[false, true, true]);
    Ok(())
}

/// Which ops a run uses on wgpu.
#[derive(Clone, Copy, PartialEq)]
enum Ops {
    /// Burn's own ops: the implementation before the kernels.
    Burn,
    /// Our kernels as on a device without subgroup operations.
    NoSubgroups,
    Kernels,
    /// Our kernels, one-row products with k split over the lanes.
    SplitGemv,
}

/// The runs of a benchmark: each backend, and on wgpu the baselines asked for first.
fn runs(a: &Args) -> Result<Vec<(Backend, Ops)>> {
    let mut out = Vec::new();
    for b in &a.backend {
        let backend: Backend = b.parse()?;
        if backend == Backend::Wgpu {
            out.extend(a.baseline.then_some((backend, Ops::Burn)));
            out.extend(a.no_subgroups.then_some((backend, Ops::NoSubgroups)));
        }
        out.push((backend, Ops::Kernels));
        if backend == Backend::Wgpu && a.split_gemv {
            out.push((backend, Ops::SplitGemv));
        }
    }
    Ok(out)
}

/// Selects the ops for a run; returns the device, its label and which ops run.
fn start(backend: Backend, ops: Ops) -> Result<(burn::tensor::Device, String, &'static str)> {
    mgm::ops::kernels::BURN_ONLY.store(ops == Ops::Burn, std::sync::atomic::Ordering::Relaxed);
    // Without subgroups as browsers run the kernels: nor 64-bit words, which WebGPU lacks.
    device::cap_subgroups(if ops == Ops::NoSubgroups { 0 } else { usize::MAX });
    device::without_int64(ops == Ops::NoSubgroups);
    mgm::ops::kernels::matmul::split_gemv(ops == Ops::SplitGemv);
    let (device, desc) = device::init(backend)?;
    let label = match (ops, backend) {
        (Ops::Burn, _) => "Burn's ops (before the kernels)",
        (Ops::NoSubgroups, _) => "our kernels without subgroups",
        (Ops::SplitGemv, _) => "our kernels, decode split along k",
        (Ops::Kernels, Backend::Wgpu) => "our kernels",
        (Ops::Kernels, Backend::Cpu) => "Burn's ops",
    };
    Ok((device, desc, label))
}

/// Prefill and decode tokens/s; a warm-up pass compiles the kernels first.
fn text_speed(model: &Gemma, prompt_tokens: usize, new_tokens: usize) -> Result<(f64, f64)> {
    Ok(text_speeds(model, prompt_tokens, new_tokens, &[None])?[0])
}

/// The paces of `--pace` to compare, or the adapter's own (`None`).
fn paces(a: &Args) -> Vec<Option<usize>> {
    if a.pace.is_empty() { vec![None] } else { a.pace.iter().map(|&n| Some(n)).collect() }
}

/// Prefill and decode tok/s after a first run that compiles the kernels; for each pace of
/// `--pace` (`Some`), the means of its rounds.
fn text_speeds(model: &Gemma, prompt_tokens: usize, new_tokens: usize, paces: &[Option<usize>]) -> Result<Vec<(f64, f64)>> {
    let vocab = model.config.vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_tokens as u32).map(|i| 2 + (i * 7919) % (vocab - 2)).collect();
    let opts = GenerateOptions { max_new_tokens: new_tokens, sampling: Sampling::default(), stop_ids: vec![], prompt_logits: false };
    let run = || pollster::block_on(generate(model, model.embed(&prompt), &opts, &mut |_| true)).map(|g| (g.timings.prefill_tok_s(), g.timings.decode_tok_s()));
    run()?;
    let mean = |v: &[(f64, f64)]| v.iter().fold((0.0, 0.0), |m, s| (m.0 + s.0 / v.len() as f64, m.1 + s.1 / v.len() as f64));
    Ok(interleaved(paces, run)?.iter().map(|v| mean(v)).collect())
}

/// Rounds per pace with `--pace`.
const PACE_ROUNDS: usize = 3;

/// A row's label with its pace, if `--pace` set one.
fn paced(what: String, pace: Option<usize>) -> String {
    match pace {
        Some(n) => format!("{what}, pace {n} (mean of {PACE_ROUNDS})"),
        None => what,
    }
}

/// Runs `f` once for each pace, that pace set (`None`: the adapter's own); with paces to compare
/// (`--pace`), interleaved rounds, as a drifting machine makes separate runs unfair.
fn interleaved<T>(paces: &[Option<usize>], mut f: impl FnMut() -> Result<T>) -> Result<Vec<Vec<T>>> {
    let rounds = if paces.iter().any(Option::is_some) { PACE_ROUNDS } else { 1 };
    let mut out: Vec<Vec<T>> = paces.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (&p, out) in paces.iter().zip(&mut out) {
            device::set_pace(p);
            let r = f();
            device::set_pace(None);
            out.push(r?);
        }
    }
    Ok(out)
}

/// Serves weights quantized as the preset would store them.
struct Quantized {
    inner: Box<dyn WeightSource>,
    preset: Preset,
}

impl WeightSource for Quantized {
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
    fn read(&mut self, name: &str, shape: &[usize], rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let storage = self.preset.storage(name, shape);
        let v = self.inner.read(name, shape, rows)?;
        Ok(quant::decode(&quant::encode(&v, storage), v.len(), storage))
    }
    fn read_quantized(&mut self, name: &str, shape: &[usize], rows: std::ops::Range<usize>) -> Result<Option<(Vec<u8>, Storage)>> {
        let storage = self.preset.storage(name, shape);
        if !storage.is_quantized() {
            return Ok(None);
        }
        let v = self.inner.read(name, shape, rows)?;
        Ok(Some((quant::encode(&v, storage), storage)))
    }
}

fn run_accuracy(a: &Args) -> Result<()> {
    let mut config = GemmaConfig::gemma_2b();
    config.num_hidden_layers = a.layers;
    let (device, desc) = device::init(a.backend[0].parse::<Backend>()?)?;
    let prompt: Vec<u32> = (0..a.prompt_tokens as u32).map(|i| 2 + (i * 7919) % 255_998).collect();
    let trace = |model: &Gemma| -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
        let mut cache = model.new_cache(prompt.len());
        let mut layers = Vec::new();
        let logits = model.forward_traced(model.embed(&prompt), &mut cache, mgm::model::gemma::Logits::All, &mut layers);
        let layers = layers.into_iter().map(|t| pollster::block_on(read_f32(t))).collect::<Result<_>>()?;
        Ok((layers, pollster::block_on(read_f32(logits))?))
    };
    eprintln!("f32 reference on {desc} ...");
    let reference = {
        let model = Gemma::load(&mut Loader { source: &mut RandomWeights::new(7), device: device.clone() }, &config)?;
        trace(&model)?
    };
    let mut rows = Vec::new();
    for preset in [Preset::F16, Preset::Q8, Preset::Q4] {
        eprintln!("{} on {desc} ...", preset.name());
        let mut src = Quantized { inner: Box::new(RandomWeights::new(7)), preset };
        let model = Gemma::load(&mut Loader { source: &mut src, device: device.clone() }, &config)?;
        let (layers, logits) = trace(&model)?;
        let argmax = |l: &[f32]| l.chunks(config.vocab_size).map(mgm::generate::sampling::argmax).collect::<Vec<_>>();
        let same = argmax(&logits).iter().zip(argmax(&reference.1)).filter(|(a, b)| **a == *b).count();
        for (i, (got, want)) in layers.iter().zip(&reference.0).enumerate() {
            let (max, rel) = error(got, want);
            rows.push((preset.name().to_string(), format!("layer {i}"), vec![max, rel]));
        }
        let (max, rel) = error(&logits, &reference.1);
        rows.push((preset.name().to_string(), format!("logits (argmax equal at {same} of {} positions)", prompt.len()), vec![max, rel]));
    }
    println!("\nGemma-2B shape ({} layers), random weights, {} prompt tokens, {desc}; error vs f32", a.layers, a.prompt_tokens);
    table(["preset", "output"], &["max abs error", "relative error (L2)"], &rows, &[false, false]);
    Ok(())
}

/// Relative L2 error and max |error| of `got` against `want`.
fn error(got: &[f32], want: &[f32]) -> (f64, f64) {
    let max = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) as f64;
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (max, (num / den).sqrt())
}

/// Each stage of one image encode with the vision side's matrices stored as each preset stores
/// them (convolution kernels f16), against all-f32 weights, on one image.
fn run_vision_accuracy(a: &Args) -> Result<()> {
    let (config, label) = match &a.model {
        Some(dir) => (MgmConfig::from_json(&mgm::weights::hf::read_text(&dir.join("config.json"))?)?, dir.display().to_string()),
        None => (MgmConfig::mgm_2b(), "MGM-2B shapes, random weights".into()),
    };
    let Some(v) = config.vision.clone() else { return Err(mgm::MgmError::Input(format!("{label}: no vision tower"))) };
    let (device, desc) = device::init(a.backend[0].parse::<Backend>()?)?;
    let bytes = std::fs::read(&a.image).map_err(|e| mgm::MgmError::Input(format!("{}: {e}", a.image.display())))?;
    let pixels = mgm::preprocess::preprocess(&mgm::preprocess::decode(&bytes)?, v.image_size_aux);
    let size = v.image_size_aux;
    let encode = |preset: Preset| -> Result<Vec<Vec<f32>>> {
        eprintln!("vision as stored by {} on {desc} ...", preset.name());
        let inner: Box<dyn WeightSource> = match &a.model {
            Some(dir) => Box::new(mgm::weights::hf::Safetensors::open_dir(dir)?),
            None => Box::new(RandomWeights::new(7)),
        };
        let mut src = Quantized { inner, preset };
        let vision = mgm::model::mgm::Vision::load(&mut Loader { source: &mut src, device: device.clone() }, &v, config.gemma.hidden_size)?;
        let hr = Tensor::<1>::from_data(TensorData::new(pixels.clone(), [3 * size * size]), &device).reshape([1, 3, size, size]);
        let f = vision.encode(hr.clone(), false);
        // The HR map is the four ConvNeXt stages upsampled and stacked (424 MB at full size, more
        // than lavapipe allocates at once): its error is theirs.
        let convnext = vision.convnext.stages(hr.squeeze_dim::<3>(0).permute([1, 2, 0]));
        let all = [vec![f.clip], convnext.into_iter().map(|t| t.reshape([0, -1])).collect(), vec![f.mined, f.embeds]].concat();
        all.into_iter().map(|t| pollster::block_on(read_f32::<1>(t.reshape([-1])))).collect()
    };
    let reference = encode(Preset::F32)?;
    let stages = ["CLIP features", "HR map: ConvNeXt stage 1", "stage 2", "stage 3", "stage 4", "mining output", "projected embeddings"];
    let mut rows = Vec::new();
    for (name, preset) in [("f16 (f16 preset)", Preset::F16), ("q8 (q4 and q8 presets)", Preset::Q4), ("q4 (--vision q4)", Preset { vision: Storage::Q4, ..Preset::Q4 })] {
        for (stage, (got, want)) in stages.iter().zip(encode(preset)?.iter().zip(&reference)) {
            let (max, rel) = error(got, want);
            rows.push((name.to_string(), stage.to_string(), vec![max, rel]));
        }
    }
    println!("\nimage encode, {label}, {} on {desc}; error vs f32 weights", a.image.display());
    table(["vision matrices", "stage"], &["max abs error", "relative error (L2)"], &rows, &[false, false]);
    Ok(())
}

fn run_bundles(a: &Args) -> Result<()> {
    let bandwidth = read_bandwidth_gbs();
    let mut rows = Vec::new();
    for (backend, run_ops) in runs(a)? {
        let (device, desc, ops) = start(backend, run_ops)?;
        for dir in &a.bundle {
            reset_peak_rss();
            eprintln!("{} on {desc} ...", dir.display());
            let t0 = now_ms();
            let (model, _) = mgm::load::dir(dir, &device, &mut |_| {})?;
            let load_s = (now_ms() - t0) / 1e3;
            let rss = peak_rss_gib();
            device.memory_cleanup();
            let (in_use, reserved) = device.memory_pool_usage().map_or((f64::NAN, f64::NAN), |u| (u.bytes_in_use as f64 / 1e9, u.bytes_reserved as f64 / 1e9));
            // Burn's ops do not go through the kernels' launches that pace.
            let paces = if run_ops == Ops::Kernels { paces(a) } else { vec![None] };
            let speeds = text_speeds(&model.gemma, a.prompt_tokens, a.new_tokens, &paces)?;
            let g = &model.gemma;
            let launches = decode_dispatches(g)?;
            if a.profile {
                let mut cache = g.new_cache(a.prompt_tokens + 2);
                let prompt: Vec<u32> = (0..a.prompt_tokens as u32).map(|i| 2 + i * 97).collect();
                let step = |cache: &mut mgm::model::KvCache, ids: &[u32]| pollster::block_on(read_f32(g.forward(g.embed(ids), cache, mgm::model::gemma::Logits::Last)));
                step(&mut cache, &prompt)?;
                step(&mut cache, &[7])?;
                profile("one decode step", || step(&mut cache, &[8]))?;
            }
            // Context at the middle of the timed decode.
            let bytes = g.decode_bytes(a.prompt_tokens + a.new_tokens / 2) as f64;
            let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let per_layer = launches as f64 / g.config.num_hidden_layers as f64;
            for (p, (prefill, decode)) in paces.iter().zip(speeds) {
                let gbs = bytes * decode / 1e9;
                rows.push((desc.clone(), paced(format!("{name}, {ops}"), *p), vec![load_s, rss, in_use, reserved, prefill, decode, launches as f64, per_layer, bytes / 1e6, gbs, 100.0 * gbs / bandwidth]));
            }
        }
    }
    println!("\n{} prompt tokens, {} new tokens, greedy; peak RSS is the process's during the load; host read bandwidth (probe, this run): {bandwidth:.1} GB/s", a.prompt_tokens, a.new_tokens);
    table(
        ["backend", "bundle"],
        &["load s", "load peak RSS GiB", "device GB in use", "device GB reserved", "prefill tok/s", "decode tok/s", "dispatches per token", "per layer", "MB read per token", "GB/s", "% of read bandwidth"],
        &rows,
        &[false, false, false, false, true, true, false, false, false, false, false],
    );
    Ok(())
}

/// Counts kernel launches while installed (Burn's own included).
#[derive(Default)]
struct Launches(std::sync::atomic::AtomicUsize);

impl cubecl::logging::LaunchObserver for Launches {
    fn launched(&self, _kernel: &'static str) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Total time and launches per kernel, each launch timed alone (the launch path waits for it).
#[derive(Default)]
struct KernelTimes(std::sync::Mutex<HashMap<String, (usize, f64)>>);

impl cubecl::logging::LaunchObserver for KernelTimes {
    fn launched(&self, _kernel: &'static str) {}
    fn timing(&self) -> cubecl::logging::TimingRequest {
        cubecl::logging::TimingRequest::Resolved
    }
    fn timed(&self, kernel: &'static str, duration: cubecl::logging::Duration, _method: cubecl::logging::TimingMethod) {
        // Kernel names carry their generics and comptime options; the path's last part is enough.
        let name = kernel.split('<').next().unwrap_or(kernel).rsplit("::").next().unwrap_or(kernel).to_string();
        let mut m = self.0.lock().unwrap();
        let e = m.entry(name).or_default();
        e.0 += 1;
        e.1 += duration.as_secs_f64() * 1e3;
    }
}

/// Runs `f` with every launch timed and prints the kernels by total time.
fn profile<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let times = std::sync::Arc::new(KernelTimes::default());
    let guard = cubecl::logging::LaunchObservation::new(times.clone());
    let t = now_ms();
    let out = f();
    let wall = now_ms() - t;
    drop(guard);
    let mut rows: Vec<(String, (usize, f64))> = times.0.lock().unwrap().drain().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    println!("\n{what}: {total:.0} ms in {} launches ({wall:.0} ms wall, launches one at a time)\n| kernel | launches | ms | share |\n|---|---:|---:|---:|", rows.iter().map(|r| r.1 .0).sum::<usize>());
    for (name, (n, ms)) in rows {
        println!("| {name} | {n} | {ms:.1} | {:.1}% |", 100.0 * ms / total);
    }
    out
}

/// Kernel launches of one greedy decode step (embedding, every layer, head, argmax), after a
/// short prefill and a warm-up step.
fn decode_dispatches(model: &Gemma) -> Result<usize> {
    use mgm::model::gemma::Logits;
    let mut cache = model.new_cache(8);
    let step = |cache: &mut mgm::model::KvCache, id: u32| pollster::block_on(read_f32(model.forward(model.embed(&[id]), cache, Logits::Last).argmax(1).float()));
    model.forward(model.embed(&[2, 3, 4]), &mut cache, Logits::Last);
    step(&mut cache, 5)?;
    let counter = std::sync::Arc::new(Launches::default());
    let guard = cubecl::logging::LaunchObservation::new(counter.clone());
    step(&mut cache, 6)?;
    drop(guard);
    Ok(counter.0.load(std::sync::atomic::Ordering::Relaxed))
}

/// The host's memory read bandwidth in GB/s: every core sums its share of 1 GiB, best of 3.
fn read_bandwidth_gbs() -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let words = (1usize << 30) / 8;
    let data: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = data.chunks(chunk).map(|c| s.spawn(move || c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).fold(0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn run_mgm(a: &Args) -> Result<()> {
    let config = MgmConfig::mgm_2b();
    let v = config.vision.clone().expect("MGM-2B has a vision half");
    let bytes = std::fs::read(&a.image).map_err(|e| mgm::MgmError::Input(format!("{}: {e}", a.image.display())))?;
    let mut rows = Vec::new();
    for (backend, run_ops) in runs(a)? {
        let (device, desc, ops) = start(backend, run_ops)?;
        let desc = format!("{desc}, {ops}");
        reset_peak_rss();
        // A bundle (`--bundle DIR`) as users load it, or random f32 weights of the same shapes.
        let t0 = now_ms();
        let model = match a.bundle.first() {
            Some(dir) => {
                eprintln!("MGM-2B on {desc}: {} ...", dir.display());
                mgm::load::dir(dir, &device, &mut |_| {})?.0
            }
            None => {
                eprintln!("MGM-2B on {desc}: random weights ...");
                Mgm::load(&mut Loader { source: &mut RandomWeights::new(7), device: device.clone() }, &config)?
            }
        };
        let load_s = (now_ms() - t0) / 1e3;
        let vision = model.vision.as_ref().expect("vision");
        if a.profile {
            let size = v.image_size_aux;
            let pixels = mgm::preprocess::preprocess(&mgm::preprocess::decode(&bytes)?, size);
            let hr = Tensor::<1>::from_data(TensorData::new(pixels, [3 * size * size]), &device).reshape([1, 3, size, size]);
            // Once to compile, then timed.
            pollster::block_on(read_f32(vision.encode(hr.clone(), false).embeds.slice([0..1, 0..1])))?;
            // The same encode not serialised, for comparison with the profile's sum.
            let t = now_ms();
            pollster::block_on(read_f32(vision.encode(hr.clone(), false).embeds.slice([0..1, 0..1])))?;
            println!("image encode, not serialised: {:.0} ms", now_ms() - t);
            let f = profile("image encode (both towers, mining, projector)", || pollster::block_on(read_f32(vision.encode(hr, false).embeds.slice([0..1, 0..1]))))?;
            std::hint::black_box(f);
            let g = &model.gemma;
            let mut cache = g.new_cache(80);
            let warm: Vec<u32> = (0..32).map(|i| 5 + i * 31).collect();
            pollster::block_on(read_f32(g.forward(g.embed(&warm), &mut cache, mgm::model::gemma::Logits::Last)))?;
            pollster::block_on(read_f32(g.forward(g.embed(&[9]), &mut cache, mgm::model::gemma::Logits::Last)))?;
            let prompt: Vec<u32> = (0..32).map(|i| 2 + i * 97).collect();
            let logits = profile("prefill of 32 tokens", || pollster::block_on(read_f32(g.forward(g.embed(&prompt), &mut cache, mgm::model::gemma::Logits::Last))))?;
            std::hint::black_box(logits);
            profile("one decode step", || pollster::block_on(read_f32(g.forward(g.embed(&[7]), &mut cache, mgm::model::gemma::Logits::Last))))?;
            continue;
        }
        let mut times = vec![load_s];
        // Two passes: the first compiles kernels, the second is measured. The Burn-ops baseline
        // (slow, and its generic kernels compile in seconds) runs once.
        let passes = if run_ops == Ops::Burn { 1 } else { 2 };
        for pass in 0..passes {
            let sync = |t: Tensor<2>| read_f32(t.slice([0..1, 0..1]));
            let t = now_ms();
            let pixels = mgm::preprocess::preprocess(&mgm::preprocess::decode(&bytes)?, v.image_size_aux);
            let preprocess_ms = now_ms() - t;
            let size = v.image_size_aux;
            let hr = Tensor::<1>::from_data(TensorData::new(pixels, [3 * size * size]), &device).reshape([1, 3, size, size]);
            if a.encode_only {
                let last = pass == passes - 1;
                let paces = if last && run_ops == Ops::Kernels { paces(a) } else { vec![None] };
                let ms = interleaved(&paces, || {
                    let t = now_ms();
                    pollster::block_on(sync(vision.encode(hr.clone(), false).embeds))?;
                    Ok(now_ms() - t)
                })?;
                if last {
                    for (p, ms) in paces.iter().zip(&ms) {
                        let desc = paced(desc.clone(), *p);
                        println!("image encode ms, {desc}: {ms:.0?}");
                        rows.push(("mgm-2b".to_string(), desc, vec![ms.iter().sum::<f64>() / ms.len() as f64]));
                    }
                }
                continue;
            }
            let t = now_ms();
            let lr = burn::tensor::module::interpolate(hr.clone(), burn::tensor::ops::InterpolateOptions::new(burn::tensor::ops::InterpolateMode::Bilinear).with_align_corners(false).with_output_size([v.clip.image_size; 2]));
            let channels_last = |t: Tensor<4>| t.squeeze_dim::<3>(0).permute([1, 2, 0]);
            pollster::block_on(sync(vision.clip.forward(channels_last(lr))))?;
            let clip_ms = now_ms() - t;
            let t = now_ms();
            let stages = vision.convnext.stages(channels_last(hr.clone()));
            let n = stages[3].shape().num_elements();
            pollster::block_on(sync(stages[3].clone().reshape([n, 1])))?;
            let convnext_ms = now_ms() - t;
            // The whole encode, timed on its own (towers, HR map, mining, projector). Mining alone
            // is too small to time as a difference of these: `--profile` shows it per kernel.
            let t = now_ms();
            let f = vision.encode(hr, false);
            pollster::block_on(sync(f.embeds.clone()))?;
            let encode_ms = now_ms() - t;
            let prompt: Vec<u32> = (0..32).map(|i| 2 + i * 97).collect();
            let embeds = Tensor::cat(vec![f.embeds, model.gemma.embed(&prompt)], 0);
            let opts = GenerateOptions { max_new_tokens: a.new_tokens, sampling: Sampling::default(), stop_ids: vec![], prompt_logits: false };
            let g = pollster::block_on(generate(&model.gemma, embeds, &opts, &mut |_| true))?.timings;
            if pass == passes - 1 {
                times.extend([preprocess_ms, clip_ms, convnext_ms, encode_ms, g.prefill_ms, g.prefill_tok_s(), g.decode_tok_s()]);
            }
        }
        if a.encode_only {
            continue; // its rows are in, each printed as it was measured
        }
        times.push(peak_rss_gib());
        // Printed as soon as it is known: a slow backend after it must not lose this row.
        eprintln!("{desc}: {times:.2?}");
        rows.push(("mgm-2b".to_string(), desc, times));
    }
    let weights = a.bundle.first().map_or("random f32 weights".to_string(), |d| format!("bundle {}", d.display()));
    if a.encode_only {
        println!("\nMGM-2B shape, {weights}, one image");
        table(["model", "backend"], &["image encode ms"], &rows, &[false]);
        if let [first, .., last] = rows.as_slice() {
            println!("image encode speed-up, {} against {}: {:.2}x", last.1, first.1, first.2[0] / last.2[0]);
        }
        return Ok(());
    }
    println!("\nMGM-2B shape, {weights}, one image, {} prompt tokens (576 image + 32 text), {} new tokens", 608, a.new_tokens);
    table(
        ["model", "backend"],
        &["load s", "preprocess ms", "CLIP ms", "ConvNeXt ms", "image encode ms", "prefill ms", "prefill tok/s", "decode tok/s", "peak RSS GiB"],
        &rows,
        &[false, false, false, false, false, false, true, true, false],
    );
    Ok(())
}

/// Prints a markdown table; for the columns marked `ratio`, adds "x vs the first row" with the
/// same first label.
fn table(labels: [&str; 2], cols: &[&str], rows: &[(String, String, Vec<f64>)], ratio: &[bool]) {
    let mut head = vec![labels[0].to_string(), labels[1].into()];
    for (c, r) in cols.iter().zip(ratio) {
        head.push(c.to_string());
        if *r {
            head.push(format!("{c} vs base"));
        }
    }
    println!("| {} |", head.join(" | "));
    println!("|{}", "---|".repeat(head.len()));
    let mut base: HashMap<&str, &Vec<f64>> = HashMap::new();
    for (model, backend, vals) in rows {
        let b = *base.entry(model.as_str()).or_insert(vals);
        let mut cells = vec![model.clone(), backend.clone()];
        for (i, v) in vals.iter().enumerate() {
            // Small errors need significant digits, not two decimals.
            cells.push(if *v != 0.0 && v.abs() < 0.1 { format!("{v:.2e}") } else { format!("{v:.2}") });
            if ratio.get(i).copied().unwrap_or(false) {
                cells.push(format!("{:.2}x", v / b[i]));
            }
        }
        println!("| {} |", cells.join(" | "));
    }
}


/// Largest |got - want|, infinite where `got` is not finite.
fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(a, b)| if a.is_finite() { (a - b).abs() } else { f32::INFINITY }).fold(0f32, f32::max)
}

/// The matrix kernel against Burn's matmul on the same device, for Gemma-2B's decode and
/// prefill shapes: milliseconds per product and the largest difference.
fn run_kernels(a: &Args) -> Result<()> {
    use mgm::ops::{self, Matrix};
    let (device, desc) = device::init(a.backend[0].parse::<Backend>()?)?;
    let time = |f: &dyn Fn() -> Tensor<2>| -> Result<(f64, Vec<f32>)> {
        let out = pollster::block_on(read_f32(f()))?;
        // The fastest of five: this machine is shared, and the minimum is the least disturbed.
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = now_ms();
            pollster::block_on(read_f32(f().slice([0..1, 0..1])))?;
            best = best.min(now_ms() - t);
        }
        Ok((best, out))
    };
    let mut rng = mgm::rng::Rng::new(1);
    let mut rows_out = Vec::new();
    let shapes: Vec<(usize, usize)> = std::env::var("MGM_SHAPES").map(|v| v.split(';').map(|p| { let q: Vec<usize> = p.split('x').map(|x| x.parse().unwrap()).collect(); (q[0], q[1]) }).collect()).unwrap_or(vec![(2560, 2048), (16384, 2048), (2048, 16384)]);
    let ms: Vec<usize> = std::env::var("MGM_MS").map(|v| v.split(',').map(|x| x.parse().unwrap()).collect()).unwrap_or(vec![1, 32, 256]);
    for (n, k) in shapes {
        let w: Vec<f32> = (0..n * k).map(|_| rng.uniform() - 0.5).collect();
        for storage in [Storage::Q4, Storage::Q8, Storage::F16] {
            let stored = quant::encode(&w, storage);
            let burn_w = if storage.is_quantized() {
                ops::reference::burn_quantized(&stored, [n, k], storage, &device)
            } else {
                Tensor::<2>::from_data(TensorData::new(quant::decode(&stored, n * k, storage), [n, k]), &device)
            };
            let ours = Matrix::from_stored(&stored, n, k, storage, &device);
            let cubek = storage.is_quantized().then(|| crate::cubek_gemv::CubekGemv::new(&stored, n, k, storage, &device));
            for m in [1usize, 32] {
                let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; m * k], [m, k]), &device);
                let t = now_ms();
                pollster::block_on(read_f32(ops::linear(x.clone(), &ours, None)))?;
                let first = now_ms() - t;
                let t = now_ms();
                pollster::block_on(read_f32(ops::linear(x, &ours, None)))?;
                eprintln!("{storage:?} m={m}: first call {first:.0} ms, second {:.0} ms", now_ms() - t);
            }
            for &m in &ms {
                let x: Vec<f32> = (0..m * k).map(|_| rng.uniform() - 0.5).collect();
                let x = Tensor::<2>::from_data(TensorData::new(x, [m, k]), &device);
                let (t_burn, want) = time(&|| ops::reference::product(x.clone(), std::slice::from_ref(&burn_w), Default::default()))?;
                let (t_ours, got) = time(&|| ops::linear(x.clone(), &ours, None))?;
                if std::env::var("MGM_GLU").is_ok() {
                    let (t_glu, _) = time(&|| ops::glu(x.clone(), &ours, ops::Act::Gelu))?;
                    eprintln!("  glu: {t_glu:.1} ms");
                }
                let err = max_diff(&got, &want);
                eprintln!("[{m}x{k}] x [{n}x{k}]^T {storage:?}: burn {t_burn:.1} ms, ours {t_ours:.1} ms, max diff {err:.1e}");
                rows_out.push((format!("{storage:?} [{m}x{k}]x[{n}x{k}]^T"), "burn".to_string(), vec![t_burn, err as f64]));
                rows_out.push((format!("{storage:?} [{m}x{k}]x[{n}x{k}]^T"), "ours".to_string(), vec![t_ours, err as f64]));
                if m == 1 {
                    mgm::ops::kernels::matmul::split_gemv(true);
                    let timed = time(&|| ops::linear(x.clone(), &ours, None));
                    mgm::ops::kernels::matmul::split_gemv(false);
                    let (t, got) = timed?;
                    rows_out.push((format!("{storage:?} [{m}x{k}]x[{n}x{k}]^T"), "ours, k split over lanes".to_string(), vec![t, max_diff(&got, &want) as f64]));
                }
                // cubek's decode GEMV (one row only), where it takes the shape.
                if let Some(cubek) = cubek.as_ref().filter(|_| m == 1) {
                    match cubek.run(&x) {
                        Ok(_) => {
                            let (t, got) = time(&|| cubek.run(&x).expect("ran once"))?;
                            let err = max_diff(&got, &want);
                            eprintln!("  cubek quant_gemv {t:.1} ms, max diff {err:.1e}");
                            rows_out.push((format!("{storage:?} [{m}x{k}]x[{n}x{k}]^T"), "cubek quant_gemv".to_string(), vec![t, err as f64]));
                        }
                        Err(e) => eprintln!("  {e}"),
                    }
                }
            }
        }
    }
    println!("\n{desc}: milliseconds per product (Burn's matmul; Burn's dequantized f32 matmul for several quantized rows)");
    table(["product", "kernel"], &["ms", "max diff"], &rows_out, &[true, false]);
    // CLIP's attention (577 tokens, 16 heads of 64): the kernels without subgroups, then with the
    // device's (query rows and softmax weights shared through broadcasts).
    let (n, heads, dim) = (577, 16, 64);
    let qkv: Vec<f32> = (0..n * 3 * heads * dim).map(|_| rng.uniform() - 0.5).collect();
    let qkv = Tensor::<2>::from_data(TensorData::new(qkv, [n, 3 * heads * dim]), &device);
    let mut rows_att = Vec::new();
    let (_, want) = time(&|| ops::reference::attention(qkv.clone(), heads))?;
    for cap in [0, usize::MAX] {
        device::cap_subgroups(cap);
        let (t, got) = time(&|| ops::attention(qkv.clone(), heads))?;
        rows_att.push(("CLIP attention, 577 x 16 x 64".to_string(), format!("ours, subgroups of {}", device::subgroup_size()), vec![t, max_diff(&got, &want) as f64]));
    }
    device::cap_subgroups(usize::MAX);
    println!("\n{desc}: milliseconds per attention (max diff against Burn's ops)");
    table(["attention", "kernels"], &["ms", "max diff"], &rows_att, &[true, false]);
    Ok(())
}
