//! Our CubeCL kernels: compiled to WGSL for WebGPU (and natively for wgpu), launched on Burn's
//! device through its CubeCL primitives. Only `ops` calls them; each file has its kernels and
//! their launch functions.

pub mod attention;
pub mod conv;
pub mod format;
pub mod gather;
pub mod matmul;
pub mod norm;
pub mod resize;
pub mod window;

use burn::backend::wgpu::CubeTensor;
use burn::backend::{Cube, CubeDevice, DispatchDevice, RuntimeId};
use burn::tensor::{DType, Device, Int, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;

pub use format::Format;

/// Set to run every op as plain Burn ops on wgpu too: the implementation before these kernels,
/// kept as the same-run baseline of `mgm bench --baseline`. Models loaded while it is set hold
/// Burn tensors, so set it before loading.
pub static BURN_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The CubeCL device behind `device` when it is wgpu (WebGPU, Vulkan, Metal, DX12); None on flex.
pub fn cube_device(device: &Device) -> Option<CubeDevice> {
    if BURN_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    match device.as_dispatch() {
        DispatchDevice::Cube(d) if d.runtime() == RuntimeId::Wgpu => Some(d.clone()),
        _ => None,
    }
}

/// Lanes that share operands through subgroup broadcasts, 0 for none: the device's fixed
/// subgroup size where it divides 8 (lavapipe on AVX2: 8; Chromium's SwiftShader: 4). GPUs' 32
/// or 64 lanes could share through their first 8, untested without a GPU: not used.
pub fn plane() -> usize {
    match crate::device::subgroup_size() {
        p @ (2 | 4 | 8) => p,
        _ => 0,
    }
}

/// The contiguous f32 buffer behind a float tensor.
pub fn float<const D: usize>(t: Tensor<D>) -> CubeTensor {
    let t = t.try_into_primitive::<Cube>().expect("a float tensor on wgpu");
    #[cfg(feature = "fusion")]
    let t = t.client.clone().resolve_tensor_float::<burn_cubecl::CubeBackend>(t);
    let t = into_contiguous(t);
    assert_eq!(t.dtype, DType::F32, "kernels take f32 activations");
    t
}

/// The contiguous u32 buffer behind an int tensor (a weight's stored words).
pub fn words(t: &Tensor<1, Int>) -> CubeTensor {
    let t = t.clone().try_into_primitive::<Cube>().expect("a u32 tensor on wgpu");
    #[cfg(feature = "fusion")]
    let t = t.client.clone().resolve_tensor_int::<burn_cubecl::CubeBackend>(t);
    into_contiguous(t)
}

/// A new contiguous f32 buffer on `like`'s device.
pub(crate) fn empty(like: &CubeTensor, shape: impl Into<Shape>) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape.into(), DType::F32)
}

/// A kernel's output as a Burn tensor.
pub fn wrap<const D: usize>(t: CubeTensor) -> Tensor<D> {
    pace(&t);
    Tensor::from_primitive::<Cube>(handle(t))
}

/// Every `device::pace()` launches, waits for the device to finish what it was given.
fn pace(t: &CubeTensor) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LAUNCHES: AtomicUsize = AtomicUsize::new(0);
        let every = crate::device::pace();
        if every > 0 && LAUNCHES.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
            // A failed launch surfaces on the next read of the buffers it left unwritten.
            let _ = pollster::block_on(t.client.sync());
        }
    }
    #[cfg(target_arch = "wasm32")]
    let _ = t;
}

/// What Burn's tensors hold on wgpu: the buffer itself, or with `fusion` a handle to it.
#[cfg(not(feature = "fusion"))]
fn handle(t: CubeTensor) -> CubeTensor {
    t
}
#[cfg(feature = "fusion")]
use fused::register as handle;

/// With Burn's `fusion` (the crate feature, for A/B runs) tensors are handles in a fusion stream:
/// `float` and `words` run the stream up to a kernel's inputs and take their buffers; a kernel's
/// output goes back into the stream as an operation that has already run.
#[cfg(feature = "fusion")]
mod fused {
    use burn::backend::fusion::stream::{Operation, StreamId};
    use burn::backend::fusion::{get_client, FusionBackend, FusionRuntime, FusionTensor};
    use burn::backend::ir::{CustomOpIr, HandleContainer, OperationIr, TensorId, TensorIr};
    use burn::backend::wgpu::CubeTensor;
    use burn_cubecl::CubeBackend;

    type Runtime = <CubeBackend as FusionBackend>::FusionRuntime;

    #[derive(Debug)]
    struct Done {
        id: TensorId,
        out: CubeTensor,
    }

    impl Operation<Runtime> for Done {
        fn execute(&self, handles: &mut HandleContainer<<Runtime as FusionRuntime>::FusionHandle>) -> Result<(), burn::backend::ExecutionError> {
            handles.register_float_tensor::<CubeBackend>(&self.id, self.out.clone());
            Ok(())
        }
    }

    pub fn register(out: CubeTensor) -> FusionTensor<Runtime> {
        let client = get_client::<CubeBackend>(&out.device);
        let ir = TensorIr::uninit(client.create_empty_handle(), out.meta.shape.clone(), out.dtype);
        let id = ir.id;
        let op = OperationIr::Custom(CustomOpIr::new("mgm kernel", &[], &[ir]));
        client.register(StreamId::current(), op, Done { id, out }).remove(0)
    }
}

/// A grid of `cubes` workgroups within WebGPU's 65535 per dimension; kernels index by
/// ABSOLUTE_POS and check it against their size.
pub(crate) fn grid(cubes: usize) -> (u32, u32) {
    let x = cubes.clamp(1, 65535);
    (x as u32, cubes.div_ceil(x) as u32)
}

/// A weight matrix on a wgpu device as its stored words (see [`format`]): `rows` rows of `k`
/// values (the logical columns padded to whole blocks of 32).
#[derive(Clone)]
pub struct Packed {
    pub values: Tensor<1, Int>,
    /// f16 block scales (Q4, Q8).
    pub scales: Option<Tensor<1, Int>>,
    pub format: Format,
    pub rows: usize,
    pub k: usize,
}

impl Packed {
    /// An f32 matrix `[rows, k]` (k a multiple of 32) as F32 words: the same buffer, read as u32.
    pub fn from_f32(t: Tensor<2>) -> Packed {
        let [rows, k] = t.dims();
        let c = float(t);
        let words = CubeTensor::new_contiguous(c.client, c.device, Shape::new([rows * k]), c.handle, DType::U32);
        Packed { values: Tensor::from_primitive::<Cube>(handle(words)), scales: None, format: Format::F32, rows, k }
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        4 * (self.values.dims()[0] + self.scales.as_ref().map_or(0, |s| s.dims()[0]))
    }

    /// Rows `rows`: each row's values and scales are whole words.
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> Packed {
        let (vw, sw) = (self.k / (32 / self.format.bits()), (self.k / 32).div_ceil(2));
        Packed {
            values: self.values.clone().slice(rows.start * vw..rows.end * vw),
            scales: self.scales.clone().map(|s| s.slice(rows.start * sw..rows.end * sw)),
            rows: rows.len(),
            ..self.clone()
        }
    }

    /// Row stacks: values and scales joined (each row's scales start at a word, so they line up).
    pub fn stack(parts: &[&Packed]) -> Packed {
        let p0 = parts[0];
        assert!(parts.iter().all(|p| p.format == p0.format && p.k == p0.k), "stacked matrices share a format");
        Packed {
            values: Tensor::cat(parts.iter().map(|p| p.values.clone()).collect(), 0),
            scales: p0.scales.as_ref().map(|_| Tensor::cat(parts.iter().map(|p| p.scales.clone().unwrap()).collect(), 0)),
            format: p0.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            k: p0.k,
        }
    }
}
