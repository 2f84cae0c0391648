//! cubek 0.3.1's quantized decode GEMV (`cubek_matmul::tiled::quant_gemv`), which Burn 0.22.1
//! never calls, launched on our weights so `mgm bench --kernels` can time it next to ours.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::quant::scheme::{QuantValue, ScaleDtype};
use cubek_matmul::routine::BlueprintStrategy;
use cubek_matmul::tiled::quant_gemv::{launch_ref, QuantGemvBindings, QuantGemvElems, QuantGemvProblem};
use mgm::error::{MgmError, Result};
use mgm::ops::kernels::{float, words, wrap};
use mgm::quant::{self, Storage};

/// A `[n, k]` q4 or q8 matrix as cubek reads it: our words, except that q4 nibbles are two's
/// complement there (ours store q + 8, so each nibble's top bit flips), and f16 block scales.
pub struct CubekGemv {
    values: CubeTensor,
    scales: CubeTensor,
    problem: QuantGemvProblem,
}

impl CubekGemv {
    pub fn new(stored: &[u8], n: usize, k: usize, storage: Storage, device: &Device) -> CubekGemv {
        let (values, scales) = quant::split_stored(stored, n * k, storage);
        let values = match storage {
            Storage::Q4 => values.iter().map(|b| b ^ 0x88).collect(),
            _ => values.to_vec(),
        };
        let upload = |b: Vec<u8>| {
            let len = b.len() / 4;
            words(&Tensor::<1, Int>::from_data(TensorData::from_bytes_vec(b, [len], DType::U32), (device, DType::U32)))
        };
        let field = if storage == Storage::Q4 { QuantValue::Q4S } else { QuantValue::Q8S };
        let problem = QuantGemvProblem { d_out: n, d_in: k, rows: 1, field, block: 32, scales: ScaleDtype::F16 };
        CubekGemv { values: upload(values), scales: upload(scales.to_vec()), problem }
    }

    /// y `[1, n]` = x `[1, k]` Wᵀ.
    pub fn run(&self, x: &Tensor<2>) -> Result<Tensor<2>> {
        let QuantGemvProblem { d_out: n, d_in: k, .. } = self.problem;
        let x = float(x.clone());
        let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([n, 1]), DType::F32);
        // Bindings count values, not words: the same buffers with the logical shapes.
        let view = |t: &CubeTensor, shape: [usize; 2]| {
            CubeTensor::new_contiguous(t.client.clone(), t.device.clone(), Shape::new(shape), t.handle.clone(), t.dtype).binding()
        };
        let f32 = ElemType::Float(FloatKind::F32);
        let bindings = QuantGemvBindings {
            x: x.clone().binding(),
            weights: view(&self.values, [n, k]),
            scales: vec![view(&self.scales, [n, k / 32])],
            out: out.clone().binding(),
        };
        let elems = QuantGemvElems { served: f32, x: f32, tensor_scale: f32, out: f32 };
        launch_ref(&x.client, bindings, &self.problem, &BlueprintStrategy::default(), elems)
            .map_err(|e| MgmError::Device(format!("cubek quant_gemv refused [{n}x{k}]: {e:?}")))?;
        Ok(wrap::<2>(out).reshape([1, n]))
    }
}
