//! Shared test helpers: fixture paths, reference tensors, devices, max-abs-diff reporting.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;
use mgm::device::{self, Backend};
use mgm::generate::chat::ChatRequest;
use mgm::generate::{GenerateOptions, Sampling};
use mgm::preprocess::Image;
use mgm::text::template::Role;
use safetensors::{Dtype, SafeTensors};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// `turns` and `images` under Gemma's template; greedy, up to 16 new tokens, no stop ids.
pub fn request(turns: &[(Role, &str)], images: Vec<Image>) -> ChatRequest {
    let options = GenerateOptions { max_new_tokens: 16, sampling: Sampling::default(), stop_ids: vec![], prompt_logits: false };
    ChatRequest::new(turns.iter().map(|&(r, t)| (r, t.to_string())).collect(), images, options)
}

/// Every backend a test must pass on: the CPU (flex) and wgpu (lavapipe's Vulkan without a GPU).
/// `MGM_TEST_BACKENDS=cpu` narrows it while developing; CI runs both.
pub fn devices() -> Vec<(String, Device)> {
    let want = std::env::var("MGM_TEST_BACKENDS").unwrap_or_else(|_| "cpu,wgpu".into());
    want.split(',')
        .map(|b| {
            let backend: Backend = b.parse().expect("MGM_TEST_BACKENDS");
            let (dev, name) = device::init(backend).unwrap_or_else(|e| panic!("{b}: {e}"));
            (name, dev)
        })
        .collect()
}

/// Reference tensors written by tests/fixtures/generate.py.
pub struct Reference(Vec<u8>);

impl Reference {
    pub fn open(fixture_name: &str) -> Self {
        Reference(std::fs::read(fixture(fixture_name).join("reference.safetensors")).unwrap())
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        SafeTensors::deserialize(&self.0).unwrap().tensor(name).unwrap().shape().to_vec()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("reference has no {name}"));
        assert_eq!(t.dtype(), Dtype::F32);
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    }
}

/// Largest absolute difference; panics on length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Asserts `got` within `tol` of `want`, printing the diff either way (llm.c's habit).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    println!("{what}: max |diff| = {d:.3e}");
    assert!(d <= tol, "{what}: max |diff| {d:.3e} > {tol:.0e}");
}

pub fn read<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    pollster::block_on(mgm::generate::session::read_f32(t)).unwrap()
}
