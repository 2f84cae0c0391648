//! The web bundle: block quantization against its definition, quantized matmuls against f32 on
//! every backend, the converter's output against the HF-directory run, and clear errors for
//! corrupted, truncated, missing or newer bundles.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use common::{assert_close, devices, fixture, max_abs_diff, read, request, Reference};
use mgm::generate::prompt::Prompt;
use mgm::preprocess::Image;
use mgm::generate::{generate, GenerateOptions, Sampling};
use mgm::model::gemma::Logits;
use mgm::model::layers::Linear;
use mgm::ops::Matrix;
use mgm::rng::Rng;
use mgm::text::template::Role;
use mgm::weights::convert::{convert, Preset};
use mgm::model::Mgm;
use mgm::text::Tokenizer;
use mgm::weights::bundle::Manifest;
use mgm::load::dir as load_dir;
use mgm::quant::{self, Storage, BLOCK};
use mgm::weights::{Loader, WeightSource};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

#[test]
fn block_quantization_meets_its_bound() {
    let x = random(96 * 64, 1);
    for (storage, qmax) in [(Storage::Q8, 127.0f32), (Storage::Q4, 7.0)] {
        let bytes = quant::encode(&x, storage);
        assert_eq!(bytes.len(), storage.bytes(96, 64));
        let y = quant::decode(&bytes, x.len(), storage);
        for (b, (xs, ys)) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).enumerate() {
            // Rounding to the nearest level: error at most half a step, the step being the
            // block's absmax / qmax (its f16 rounding adds at most 2^-11 relative).
            let step = xs.iter().fold(0f32, |m, v| m.max(v.abs())) / qmax;
            let err = max_abs_diff(xs, ys);
            assert!(err <= step * (0.5 + 1e-3) + 1e-7, "{storage:?} block {b}: {err} > {step}/2");
        }
    }
    let f16 = quant::decode(&quant::encode(&x, Storage::F16), x.len(), Storage::F16);
    assert!(max_abs_diff(&x, &f16) <= 1.0 / 2048.0);
}

/// A store holding one matrix in a chosen storage (what a bundle gives the loader).
struct One {
    name: String,
    bytes: Vec<u8>,
    storage: Storage,
}

impl WeightSource for One {
    fn has(&self, name: &str) -> bool {
        name == self.name
    }
    fn read(&mut self, _: &str, shape: &[usize], _: std::ops::Range<usize>) -> mgm::Result<Vec<f32>> {
        Ok(quant::decode(&self.bytes, shape.iter().product(), self.storage))
    }
    fn read_quantized(&mut self, _: &str, _: &[usize], _: std::ops::Range<usize>) -> mgm::Result<Option<(Vec<u8>, Storage)>> {
        Ok(Some((self.bytes.clone(), self.storage)))
    }
}

#[test]
fn quantized_matmuls_equal_f32_matmuls_of_the_dequantized_weights() {
    for (dev, device) in devices() {
        // Shapes that are not multiples of a workgroup: odd rows, odd batch, decode (1 row).
        for (d_out, d_in, rows) in [(48, 96, 5), (1000, 64, 1), (33, 128, 7)] {
            for storage in [Storage::Q8, Storage::Q4] {
                let w = random(d_out * d_in, 3);
                let bytes = quant::encode(&w, storage);
                let mut src = One { name: "w".into(), bytes: bytes.clone(), storage };
                let mut loader = Loader { source: &mut src, device: device.clone() };
                let q = Linear { weight: loader.get_matrix("w", [d_out, d_in]).unwrap(), bias: None };
                assert!(q.weight.is_quantized(), "the weight stays quantized on the device");
                let deq = quant::decode(&bytes, w.len(), storage);
                let f = Linear { weight: Matrix::from_f32(Tensor::from_data(TensorData::new(deq, [d_out, d_in]), &device)), bias: None };
                let x = Tensor::<2>::from_data(TensorData::new(random(rows * d_in, 5), [rows, d_in]), &device);
                let (got, want) = (read(q.forward(x.clone())), read(f.forward(x)));
                assert_close(&format!("{dev} {storage:?} [{rows}x{d_in}] x [{d_out}x{d_in}]^T"), &got, &want, 1e-4);
            }
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mgm-bundle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn convert_to(name: &str, preset: Preset, shard_bytes: u64) -> PathBuf {
    let out = tmp(name);
    convert(&fixture("mgm_tiny"), &out, preset, shard_bytes, &mut |_| {}).unwrap();
    out
}

/// The bundle's tensors decoded on the host by `quant::decode` into f32: the reference the
/// device-side quantized path must match.
struct HostDecoded {
    dir: PathBuf,
    manifest: Manifest,
}

impl WeightSource for HostDecoded {
    fn has(&self, name: &str) -> bool {
        self.manifest.tensors.iter().any(|t| t.name == name)
    }
    fn read(&mut self, name: &str, shape: &[usize], rows: std::ops::Range<usize>) -> mgm::Result<Vec<f32>> {
        let t = self.manifest.tensors.iter().find(|t| t.name == name).unwrap();
        let cols: usize = shape.iter().skip(1).product();
        let mut all = Vec::new();
        for p in &t.parts {
            let shard = std::fs::read(self.dir.join(&self.manifest.shards[p.shard].file)).unwrap();
            all.extend(quant::decode(&shard[p.offset as usize..(p.offset + p.length) as usize], (p.rows[1] - p.rows[0]) * cols, t.storage));
        }
        Ok(all[rows.start * cols..rows.end * cols].to_vec())
    }
}

fn dequantized_model(dir: &Path, device: &burn::tensor::Device) -> (Mgm, ()) {
    let manifest = Manifest::parse(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let config = manifest.mgm_config().unwrap();
    let mut src = HostDecoded { dir: dir.to_path_buf(), manifest };
    (Mgm::load(&mut Loader { source: &mut src, device: device.clone() }, &config).unwrap(), ())
}

fn one_image_logits_and_ids(model: &Mgm, tok: &Tokenizer) -> (Vec<f32>, Vec<u32>) {
    let img = std::fs::read(fixture("images/portrait.png")).unwrap();
    let prompt = Prompt::chat(model, tok, &request(&[(Role::User, "Describe the image.")], vec![Image::Encoded(img)]), &mut Default::default()).unwrap();
    let embeds = prompt.embed(model).unwrap();
    let mut cache = model.gemma.new_cache(embeds.dims()[0]);
    let logits = read(model.gemma.forward(embeds.clone(), &mut cache, Logits::All));
    let opts = GenerateOptions { max_new_tokens: 16, sampling: Sampling::default(), stop_ids: tok.stop_ids(), prompt_logits: false };
    let ids = pollster::block_on(generate(&model.gemma, embeds, &opts, &mut |_| true)).unwrap().ids;
    (logits, ids)
}

#[test]
fn converted_bundles_match_the_checkpoint() {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("mgm_tiny/meta.json")).unwrap()).unwrap();
    let want_ids: Vec<u32> = meta["cases"]["one_image"]["generated_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let want_logits = Reference::open("mgm_tiny").f32("one_image.logits");
    // 64 KiB shards: the 1000x64 f32 embedding (250 KiB) is split into row parts.
    let f32_dir = convert_to("f32", Preset::F32, 64 << 10);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(f32_dir.join("manifest.json")).unwrap()).unwrap();
    let embed = manifest["tensors"].as_array().unwrap().iter().find(|t| t["name"] == "model.embed_tokens.weight").unwrap();
    assert!(embed["parts"].as_array().unwrap().len() >= 4, "embedding not split");
    assert!(manifest["tensors"].as_array().unwrap().iter().all(|t| t["name"] != "lm_head.weight" && t["name"] != "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"));
    for (dev, device) in devices() {
        let (model, tok) = load_dir(&f32_dir, &device, &mut |_| {}).unwrap();
        let (logits, ids) = one_image_logits_and_ids(&model, &tok);
        assert_close(&format!("{dev} f32 bundle logits"), &logits, &want_logits, 1e-4);
        assert_eq!(ids, want_ids, "{dev} f32 bundle ids");
        // Q4 stores the vision side in q8; q4 vision is the `--vision q4` option.
        for preset in [Preset::F16, Preset::Q8, Preset::Q4, Preset { vision: Storage::Q4, ..Preset::Q4 }] {
            let dir = convert_to(&preset.name(), preset, 1 << 20);
            let (model, tok) = load_dir(&dir, &device, &mut |_| {}).unwrap();
            let (logits, ids) = one_image_logits_and_ids(&model, &tok);
            // The quantized path (packed weights, dequantized inside Burn's kernels) must compute
            // exactly the model whose weights are the host-dequantized values.
            let (reference, _) = dequantized_model(&dir, &device);
            let (ref_logits, ref_ids) = one_image_logits_and_ids(&reference, &tok);
            assert_close(&format!("{dev} {} bundle vs its host-dequantized weights", preset.name()), &logits, &ref_logits, 1e-4);
            assert_eq!(ids, ref_ids, "{dev} {}", preset.name());
            // What quantization itself costs (README, "Accuracy"): measured, not bounded here.
            let d = max_abs_diff(&logits, &want_logits);
            let agree = ids.iter().zip(&want_ids).take_while(|(a, b)| a == b).count();
            println!("{dev} {} bundle vs f32 checkpoint: logits max |diff| {d:.3e}, greedy ids agree for {agree} of {}", preset.name(), want_ids.len());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    std::fs::remove_dir_all(&f32_dir).unwrap();
}

fn assert_err(dir: &Path, needle: &str) {
    let (_, device) = devices().remove(0);
    let err = load_dir(dir, &device, &mut |_| {}).err().expect("should fail");
    assert!(err.message().contains(needle), "{err}");
}

#[test]
fn broken_bundles_are_clear_errors() {
    let dir = convert_to("broken", Preset::Q8, 1 << 20);
    let shard = dir.join("shard-00000.bin");
    let good = std::fs::read(&shard).unwrap();
    let mut bad = good.clone();
    bad[1000] ^= 0xff;
    std::fs::write(&shard, &bad).unwrap();
    assert_err(&dir, "shard shard-00000.bin: sha256 does not match");
    std::fs::write(&shard, &good[..good.len() - 10]).unwrap();
    assert_err(&dir, "shard shard-00000.bin:");
    std::fs::remove_file(&shard).unwrap();
    assert_err(&dir, "shard-00000.bin: file not found");
    std::fs::write(&shard, &good).unwrap();

    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"version\":1", "\"version\":2")).unwrap();
    assert_err(&dir, "bundle format version 2");
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"shape\":[1000,64]", "\"shape\":[999,64]")).unwrap();
    assert_err(&dir, "model.embed_tokens.weight");
    std::fs::write(dir.join("manifest.json"), manifest.replace("\"intermediate_size\":128", "\"intermediate_size\":256")).unwrap();
    assert_err(&dir, "gate_proj.weight has shape");
    for name in ["../shard-00000.bin", "/etc/passwd", "https://example.org/x.bin"] {
        std::fs::write(dir.join("manifest.json"), manifest.replace("\"shard-00000.bin\"", &format!("{name:?}"))).unwrap();
        assert_err(&dir, "is not a file name inside the bundle");
    }
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    let (_, device) = devices().remove(0);
    assert!(load_dir(&dir, &device, &mut |_| {}).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
