//! Every kernel against the plain-Burn reference of the same op: on the CPU (flex), from the same
//! inputs, within 1e-4; quantized and f16 weights against the weights decoded on the host. Shapes
//! are odd on purpose (partial tiles, rows that are not whole vectors, non-square grids).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{assert_close, devices, read};
use mgm::ops::{self, Act, Heads, Matrix};
use mgm::device;
use mgm::rng::Rng;
use mgm::quant::{self, Storage};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// The wgpu device, when the run includes it (the kernels only run there).
fn gpu() -> Option<(String, Device)> {
    let d = devices().into_iter().find(|(name, _)| name.starts_with("wgpu"));
    if d.is_none() {
        println!("no wgpu device in MGM_TEST_BACKENDS: kernels not exercised");
    }
    d
}

#[test]
fn matrix_products_match_burn_for_every_format_and_epilogue() {
    let Some((dev, gpu)) = gpu() else { return };
    // As lavapipe runs them natively (subgroups of 8 lanes sharing x through broadcasts, q8
    // weights in 64-bit words), then as browsers do: 4 lanes (SwiftShader in Chromium) and no
    // subgroups, 32-bit words in both (WebGPU has no 64-bit integers). One after the other: the
    // device compiles shaders one at a time, and three such tests side by side took twice as
    // long. The caps are per thread, so the other tests keep the device's own.
    println!("{dev}: subgroups of {}, 64-bit words {}", device::subgroup_size(), device::int64());
    for cap in [usize::MAX, 4, 0] {
        device::cap_subgroups(cap);
        device::without_int64(cap != usize::MAX);
        matrix_products_match(&format!("{dev}, subgroups {}, 64-bit words {}", device::subgroup_size(), device::int64()), &gpu);
    }
    // One row with k split over the lanes (the form for GPUs; the other shapes are as above).
    device::cap_subgroups(usize::MAX);
    device::without_int64(false);
    ops::kernels::matmul::split_gemv(true);
    matrix_products_match(&format!("{dev}, k split over lanes"), &gpu);
    ops::kernels::matmul::split_gemv(false);
}

fn matrix_products_match(dev: &str, gpu: &Device) {
    let cpu = Device::flex();
    for storage in [Storage::Q4, Storage::Q8, Storage::F16, Storage::F32] {
        for (m, n, k) in [(1, 300, 64), (5, 37, 96), (33, 130, 160), (1, 7, 48)] {
            if storage.is_quantized() && k % 32 != 0 {
                continue;
            }
            let stored = quant::encode(&random(n * k, 1), storage);
            // The kernel reads the stored bytes; the reference multiplies the host-decoded f32 weights.
            let ours = Matrix::from_stored(&stored, n, k, storage, gpu);
            let reference = Matrix::from_f32(tensor(quant::decode(&stored, n * k, storage), [n, k], &cpu));
            let x = random(m * k, 2);
            let (b, g, r) = (random(n, 3), random(n, 4), random(m * n, 5));
            let case = |what: &str| format!("{dev} {storage:?} [{m}x{k}]x[{n}x{k}]^T {what}");
            let on = |d: &Device| (tensor(x.clone(), [m, k], d), tensor(b.clone(), [n], d), tensor(g.clone(), [n], d), tensor(r.clone(), [m, n], d));
            let (xg, bg, gg, rg) = on(gpu);
            let (xc, bc, gc, rc) = on(&cpu);
            assert_close(&case("plain"), &read(ops::linear(xg.clone(), &ours, None)), &read(ops::linear(xc.clone(), &reference, None)), 1e-4);
            // Epilogues are independent of the format (each variant is one more shader to compile).
            if storage == Storage::Q4 {
                assert_close(&case("bias"), &read(ops::linear(xg.clone(), &ours, Some(&bg))), &read(ops::linear(xc.clone(), &reference, Some(&bc))), 1e-4);
                for act in [Act::Gelu, Act::GeluTanh, Act::QuickGelu] {
                    assert_close(&case(&format!("{act:?}")), &read(ops::linear_act(xg.clone(), &ours, Some(&bg), act)), &read(ops::linear_act(xc.clone(), &reference, Some(&bc), act)), 1e-4);
                }
                assert_close(&case("residual"), &read(ops::linear_add(xg.clone(), &ours, Some(&bg), rg.clone())), &read(ops::linear_add(xc.clone(), &reference, Some(&bc), rc.clone())), 1e-4);
                assert_close(&case("layer scale"), &read(ops::linear_scale_add(xg.clone(), &ours, &bg, &gg, rg)), &read(ops::linear_scale_add(xc.clone(), &reference, &bc, &gc, rc)), 1e-4);
            }
            if n % 2 == 0 {
                assert_close(&case("gated"), &read(ops::glu(xg.clone(), &ours, Act::Gelu)), &read(ops::glu(xc.clone(), &reference, Act::Gelu)), 1e-4);
            }
            // Stacked matrices and row blocks written side by side.
            let halves = |mat: &Matrix| vec![mat.slice_rows(0..n / 2), mat.slice_rows(n / 2..n)];
            assert_close(&case("stacked"), &read(ops::linear(xg.clone(), &Matrix::stack(halves(&ours)), None)), &read(ops::linear(xc.clone(), &reference, None)), 1e-4);
            assert_close(&case("stacked, gated"), &read(ops::glu(xg, &Matrix::stack(halves(&ours)), Act::GeluTanh)), &read(ops::glu(xc, &Matrix::stack(halves(&reference)), Act::GeluTanh)), 1e-4);
            // Rows back as f32, and looked up by id (the embedding).
            assert_close(&case("to f32"), &read(ours.to_f32()), &read(reference.to_f32()), 1e-6);
            let ids = [n as u32 - 1, 0, 3, 3];
            assert_close(&case("row lookup"), &read(ours.rows_f32(&ids, 2.5)), &read(reference.rows_f32(&ids, 2.5)), 1e-6);
        }
    }
}

#[test]
fn norms_match_burn() {
    let Some((dev, gpu)) = gpu() else { return };
    let cpu = Device::flex();
    // Few long rows (a workgroup each) and many short ones (one invocation each).
    for (rows, cols) in [(1, 2048), (37, 120), (3, 5), (300, 40)] {
        let x: Vec<f32> = random(rows * cols, 1).iter().map(|v| 3.0 * v + 0.5).collect();
        let (w, b) = (random(cols, 2), random(cols, 3));
        let on = |d: &Device| (tensor(x.clone(), [rows, cols], d), tensor(w.clone(), [cols], d), tensor(b.clone(), [cols], d));
        let (xg, wg, bg) = on(&gpu);
        let (xc, wc, bc) = on(&cpu);
        assert_close(&format!("{dev} rms norm [{rows}x{cols}]"), &read(ops::rms_norm(xg.clone(), &wg, 1e-6)), &read(ops::rms_norm(xc.clone(), &wc, 1e-6)), 1e-4);
        assert_close(&format!("{dev} layer norm [{rows}x{cols}]"), &read(ops::layer_norm(xg, &wg, &bg, 1e-5)), &read(ops::layer_norm(xc, &wc, &bc, 1e-5)), 1e-4);
    }
}

#[test]
fn attention_matches_burn() {
    let Some((dev, gpu)) = gpu() else { return };
    // With the device's subgroups (query rows and weights shared through broadcasts), with 4
    // lanes (SwiftShader) and without.
    for cap in [usize::MAX, 4, 0] {
        device::cap_subgroups(cap);
        attention_matches(&format!("{dev}, subgroups {}", device::subgroup_size()), &gpu);
    }
}

fn attention_matches(dev: &str, gpu: &Device) {
    let cpu = Device::flex();
    // Grouped-query causal attention with RoPE through the cache: a prefill of 5, a chunk of 3
    // (the causal mask offset by what is cached), then one row (decode).
    for h in [Heads { heads: 4, kv_heads: 2, dim: 16 }, Heads { heads: 8, kv_heads: 1, dim: 32 }] {
        let width = (h.heads + 2 * h.kv_heads) * h.dim;
        let rope = |d: &Device| ops::Rope::new(h.dim, 10000.0, 64, d);
        let (rg, rc) = (rope(gpu), rope(&cpu));
        let (mut cg, mut cc) = (ops::KvCache::new(1, h.kv_heads, h.dim, 6, gpu), ops::KvCache::new(1, h.kv_heads, h.dim, 6, &cpu));
        for (step, n) in [5usize, 3, 1].into_iter().enumerate() {
            let qkv = random(n * width, 10 + step as u64);
            cg.reserve(cg.len() + n);
            cc.reserve(cc.len() + n);
            let got = read(ops::causal_self_attention(tensor(qkv.clone(), [n, width], gpu), h, &rg, &mut cg, 0));
            let want = read(ops::causal_self_attention(tensor(qkv, [n, width], &cpu), h, &rc, &mut cc, 0));
            cg.advance(n);
            cc.advance(n);
            assert_close(&format!("{dev} {h:?} causal attention, {n} rows after {}", cg.len() - n), &got, &want, 1e-4);
        }
    }
    // CLIP's full attention over q, k and v side by side; keys over more than one workgroup.
    for (n, heads, dim) in [(19, 4, 16), (300, 2, 64)] {
        let qkv = random(n * 3 * heads * dim, 20);
        let got = read(ops::attention(tensor(qkv.clone(), [n, 3 * heads * dim], gpu), heads));
        let want = read(ops::attention(tensor(qkv, [n, 3 * heads * dim], &cpu), heads));
        assert_close(&format!("{dev} full attention, {n} rows, {heads} heads of {dim}"), &got, &want, 1e-4);
    }
}

#[test]
fn window_attention_matches_burn() {
    let Some((dev, gpu)) = gpu() else { return };
    let cpu = Device::flex();
    // MGM's 8x8 windows with an offset and spread per pixel (as HR features have), and a window
    // larger than a workgroup's 64 lanes.
    for (n, m, c) in [(5, 64, 96), (3, 81, 40), (2, 4, 130)] {
        let x: Vec<f32> = random(n * m * c, 4).iter().enumerate().map(|(i, v)| 4.0 * v + (i / c % 7) as f32 - 2.0).collect();
        let u: Vec<f32> = random(n * c, 5).iter().map(|v| 3.0 * v).collect();
        let run = |d: &Device| {
            let (mean, p) = ops::window_attention(tensor(x.clone(), [n, m, c], d), tensor(u.clone(), [n, c], d), 0.125, 1e-5);
            (read(mean), read(p))
        };
        let ((mg, pg), (mc, pc)) = (run(&gpu), run(&cpu));
        assert_close(&format!("{dev} mined average [{n}x{m}x{c}]"), &mg, &mc, 1e-4);
        assert_close(&format!("{dev} mining weights [{n}x{m}x{c}]"), &pg, &pc, 1e-4);
    }
}

#[test]
fn depthwise_convolution_matches_burn() {
    let Some((dev, gpu)) = gpu() else { return };
    let cpu = Device::flex();
    for (h, w, c) in [(9, 7, 12), (5, 6, 3), (6, 20, 8)] {
        let (x, k, b) = (random(h * w * c, 1), random(49 * c, 2), random(c, 3));
        let got = read(ops::depthwise_conv(tensor(x.clone(), [h, w, c], &gpu), &tensor(k.clone(), [7, 7, c], &gpu), &tensor(b.clone(), [c], &gpu)));
        let want = read(ops::depthwise_conv(tensor(x, [h, w, c], &cpu), &tensor(k, [7, 7, c], &cpu), &tensor(b, [c], &cpu)));
        assert_close(&format!("{dev} depthwise 7x7 [{h}x{w}x{c}]"), &got, &want, 1e-4);
    }
}

#[test]
fn bilinear_resize_matches_burn() {
    let Some((dev, gpu)) = gpu() else { return };
    let cpu = Device::flex();
    // Down by a non-integer factor (the LR view, 768 -> 336), up by integer ones (ConvNeXt's
    // stages), odd channel counts (scalar loads) and a single row.
    for ((h, w, c), size) in [((16, 16, 8), [7, 7]), ((3, 5, 12), [12, 20]), ((4, 4, 3), [8, 16]), ((1, 6, 4), [2, 9])] {
        let x = random(h * w * c, 4);
        let got = read(ops::resize_bilinear(tensor(x.clone(), [h, w, c], &gpu), size));
        let want = read(ops::resize_bilinear(tensor(x, [h, w, c], &cpu), size));
        assert_close(&format!("{dev} bilinear [{h}x{w}x{c}] -> {size:?}"), &got, &want, 1e-5);
    }
}
