//! Weight matrices as stored, and the products with them. On wgpu a matrix keeps its bundle
//! bytes (q4, q8, f16 or f32 words) and our matmul kernel decodes them in registers; on flex it is
//! a Burn tensor (f32, or Burn's quantized tensor), multiplied by Burn.

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::kernels::{self, matmul::Epilogue, Format, Packed};
use crate::quant::{self, Storage};

/// The activation after a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// CLIP's x * sigmoid(1.702 x).
    QuickGelu,
}

/// A weight matrix `[rows, cols]` (PyTorch's `[out, in]`), held as row parts: one, or several
/// when stacked (q, k and v; gate and up; an embedding's row blocks). On wgpu consecutive parts
/// are joined into one buffer up to WebGPU's guaranteed binding size, so a product is one launch.
#[derive(Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    parts: Parts,
}

#[derive(Clone)]
enum Parts {
    /// wgpu: the stored words.
    Packed(Vec<Packed>),
    /// flex (or wgpu under `kernels::BURN_ONLY`): f32 or Burn quantized tensors.
    Burn(Vec<Tensor<2>>, BurnOps),
}

/// Present where Burn's own ops may hold weights: natively. In wasm (wgpu only, always on our
/// kernels) the type is empty, so no `Parts::Burn` can exist there, the compiler drops every arm
/// that handles one, and the linker drops the Burn matmul those arms call.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Copy)]
struct BurnOps;
#[cfg(target_arch = "wasm32")]
#[derive(Clone, Copy)]
enum BurnOps {}

fn burn_ops() -> BurnOps {
    #[cfg(not(target_arch = "wasm32"))]
    return BurnOps;
    #[cfg(target_arch = "wasm32")]
    unreachable!("wasm runs every weight on the kernels")
}

/// The most a joined part may hold: WebGPU's minimum maxStorageBufferBindingSize (128 MiB).
const MAX_PART_BYTES: usize = 128 << 20;

// In wasm the `Parts::Burn` arms are dead (see `BurnOps`), and the compiler says so.
#[cfg_attr(target_arch = "wasm32", allow(unreachable_code, irrefutable_let_patterns))]
impl Matrix {
    /// From a bundle's stored bytes for `rows x cols` values (docs/bundle-format.md).
    pub fn from_stored(bytes: &[u8], rows: usize, cols: usize, storage: Storage, device: &Device) -> Matrix {
        let parts = if super::uses_kernels(device) {
            Parts::Packed(vec![packed(bytes, rows, cols, storage, device)])
        } else if storage.is_quantized() {
            Parts::Burn(vec![reference::burn_quantized(bytes, [rows, cols], storage, device)], burn_ops())
        } else {
            Parts::Burn(vec![Tensor::from_data(TensorData::new(quant::decode(bytes, rows * cols, storage), [rows, cols]), device)], burn_ops())
        };
        Matrix { rows, cols, parts }
    }

    /// From f32 values on the device.
    pub fn from_f32(t: Tensor<2>) -> Matrix {
        let [rows, cols] = t.dims();
        let parts = if super::uses_kernels(&t.device()) {
            Parts::Packed(vec![Packed::from_f32(pad_cols(t, cols.next_multiple_of(32)))])
        } else {
            Parts::Burn(vec![t], burn_ops())
        };
        Matrix { rows, cols, parts }
    }

    /// The matrices one above the other: `[Σ rows, cols]`.
    pub fn stack(matrices: Vec<Matrix>) -> Matrix {
        let (rows, cols) = (matrices.iter().map(|m| m.rows).sum(), matrices[0].cols);
        assert!(matrices.iter().all(|m| m.cols == cols), "stacked matrices need the same columns");
        let parts = match &matrices[0].parts {
            Parts::Packed(_) => {
                let mut joined: Vec<Packed> = Vec::new();
                for p in matrices.into_iter().flat_map(|m| if let Parts::Packed(p) = m.parts { p } else { unreachable!("mixed devices") }) {
                    match joined.last_mut() {
                        Some(last) if last.bytes() + p.bytes() <= MAX_PART_BYTES && last.format == p.format => *last = Packed::stack(&[last, &p]),
                        _ => joined.push(p),
                    }
                }
                Parts::Packed(joined)
            }
            &Parts::Burn(_, ops) => Parts::Burn(matrices.into_iter().flat_map(|m| if let Parts::Burn(b, _) = m.parts { b } else { unreachable!("mixed devices") }).collect(), ops),
        };
        Matrix { rows, cols, parts }
    }

    /// Rows `rows` of a matrix held in one part (bundles whose parts do not line up with the
    /// rows the model asks for).
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> Matrix {
        let parts = match &self.parts {
            Parts::Packed(p) if p.len() == 1 => Parts::Packed(vec![p[0].slice_rows(rows.clone())]),
            Parts::Burn(b, ops) if b.len() == 1 => Parts::Burn(vec![b[0].clone().slice_dim(0, rows.clone())], *ops),
            _ => panic!("slicing a stacked matrix"),
        };
        Matrix { rows: rows.len(), cols: self.cols, parts }
    }

    /// As a plain f32 tensor `[rows, cols]` (weights that other ops read: convolutions, the
    /// mining shortcut).
    pub fn to_f32(&self) -> Tensor<2> {
        let parts: Vec<Tensor<2>> = match &self.parts {
            Parts::Packed(p) => p.iter().map(|p| kernels::gather::all_rows(p).slice_dim(1, 0..self.cols)).collect(),
            Parts::Burn(b, _) => b.iter().map(|b| if matches!(b.dtype(), DType::QFloat(_)) { b.clone().dequantize() } else { b.clone() }).collect(),
        };
        Tensor::cat(parts, 0)
    }

    /// Rows `ids` as f32, times `scale`: `[ids.len(), cols]` (the embedding lookup).
    pub fn rows_f32(&self, ids: &[u32], scale: f32) -> Tensor<2> {
        let Parts::Packed(parts) = &self.parts else {
            let Parts::Burn(b, _) = &self.parts else { unreachable!() };
            return reference::rows(b, ids) * scale;
        };
        // Each part serves its own ids; one select restores the request order.
        let (mut out, mut order, mut start) = (Vec::new(), Vec::new(), 0);
        for p in parts {
            let (pos, local): (Vec<usize>, Vec<u32>) =
                ids.iter().enumerate().filter(|(_, id)| (start..start + p.rows).contains(&(**id as usize))).map(|(k, &id)| (k, id - start as u32)).unzip();
            if !local.is_empty() {
                order.extend(pos);
                out.push(kernels::gather::launch(p, &local, scale).slice_dim(1, 0..self.cols));
            }
            start += p.rows;
        }
        let rows = if out.len() == 1 { out.remove(0) } else { Tensor::cat(out, 0) };
        if order.iter().enumerate().all(|(k, pos)| k == *pos) {
            return rows;
        }
        // `order[k]` is the request position of gathered row k; invert it.
        let mut inverse = vec![0i64; ids.len()];
        for (k, pos) in order.into_iter().enumerate() {
            inverse[pos] = k as i64;
        }
        let device = rows.device();
        rows.select(0, Tensor::<1, Int>::from_data(TensorData::new(inverse, [ids.len()]), &device))
    }

    /// Bytes a product with it reads (values and scales as held on the device).
    pub fn bytes(&self) -> u64 {
        match &self.parts {
            Parts::Packed(p) => p.iter().map(|p| p.bytes() as u64).sum(),
            Parts::Burn(blocks, _) => blocks
                .iter()
                .map(|b| {
                    let n = b.shape().num_elements() as u64;
                    match b.dtype() {
                        // Burn's packed values and f32 block scales (as wgpu holds them).
                        DType::QFloat(q) => n * if matches!(q.value, QuantValue::Q4S | QuantValue::Q4F) { 4 } else { 8 } / 8 + n / 32 * 4,
                        d => n * d.size() as u64,
                    }
                })
                .sum(),
        }
    }

    /// Whether it is kept as q4/q8 blocks.
    pub fn is_quantized(&self) -> bool {
        match &self.parts {
            Parts::Packed(p) => p.iter().all(|p| matches!(p.format, Format::Q4 | Format::Q8)),
            Parts::Burn(blocks, _) => blocks.iter().all(|b| matches!(b.dtype(), DType::QFloat(_))),
        }
    }

    pub fn device(&self) -> Device {
        match &self.parts {
            Parts::Packed(p) => p[0].values.device(),
            Parts::Burn(b, _) => b[0].device(),
        }
    }
}

/// The stored bytes as device words: q4/q8 values as they are plus their f16 scales (each row's
/// scales starting at a word), float values padded to whole blocks of 32 columns.
fn packed(bytes: &[u8], rows: usize, cols: usize, storage: Storage, device: &Device) -> Packed {
    let words = |mut b: Vec<u8>| {
        b.resize(b.len().div_ceil(4) * 4, 0);
        let n = b.len() / 4;
        Tensor::<1, Int>::from_data(TensorData::from_bytes_vec(b, [n], DType::U32), (device, DType::U32))
    };
    let k = cols.next_multiple_of(32);
    let (format, width) = match storage {
        Storage::Q4 => (Format::Q4, 0),
        Storage::Q8 => (Format::Q8, 0),
        Storage::F16 => (Format::F16, 2),
        Storage::F32 => (Format::F32, 4),
    };
    if storage.is_quantized() {
        assert_eq!(cols % 32, 0, "quantized rows are whole blocks");
        let (values, scales) = quant::split_stored(bytes, rows * cols, storage);
        let blocks = cols / 32;
        let scales = if blocks.is_multiple_of(2) {
            scales.to_vec()
        } else {
            scales.chunks(2 * blocks).flat_map(|row| row.iter().copied().chain([0, 0])).collect()
        };
        return Packed { values: words(values.to_vec()), scales: Some(words(scales)), format, rows, k };
    }
    let values = if k == cols {
        bytes.to_vec()
    } else {
        bytes.chunks(cols * width).flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(0, (k - cols) * width))).collect()
    };
    Packed { values: words(values), scales: None, format, rows, k }
}

/// Burn's packed layout for block-quantized values (flex), from the bundle's stored bytes (values,
/// then f16 scales): u32 words along the row (q8: four values, q4: eight two's-complement nibbles,
/// lowest bits first), then f32 scales. Stored q8 bytes already are that; stored q4 nibbles are
/// q + 8, and flipping each nibble's top bit makes them two's complement. So this is one pass
/// over the bytes, with no unpacked copy (it runs on every shard the browser loads).
fn packed_data(stored: &[u8], dims: [usize; 2], storage: Storage) -> TensorData {
    let value = if storage == Storage::Q8 { QuantValue::Q8S } else { QuantValue::Q4S };
    let (values, scales) = quant::split_stored(stored, dims[0] * dims[1], storage);
    let mut bytes = Vec::with_capacity(values.len() + 2 * scales.len());
    match storage {
        Storage::Q4 => bytes.extend(values.iter().map(|b| b ^ 0x88)),
        _ => bytes.extend_from_slice(values),
    }
    bytes.extend(scales.chunks_exact(2).flat_map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32().to_le_bytes()));
    let scheme = QuantScheme::default().with_value(value).with_store(QuantStore::PackedU32(0)).per_block([quant::BLOCK as u8], ScaleDtype::F32);
    TensorData::from_bytes_vec(bytes, dims, DType::QFloat(scheme))
}

/// Zero columns up to `k`.
fn pad_cols(x: Tensor<2>, k: usize) -> Tensor<2> {
    let [m, cols] = x.dims();
    if cols == k {
        return x;
    }
    let device = x.device();
    Tensor::cat(vec![x, Tensor::zeros([m, k - cols], &device)], 1)
}

/// What follows a product: `act(x Wᵀ + b) [* up] [* γ] [+ residual]`.
#[derive(Clone, Default)]
pub struct After<'a> {
    pub bias: Option<&'a Tensor<1>>,
    pub act: Option<Act>,
    pub gamma: Option<&'a Tensor<1>>,
    pub residual: Option<Tensor<2>>,
    /// W is [gate; up]: act(x gateᵀ) ⊙ (x upᵀ).
    pub glu: bool,
}

fn product(x: Tensor<2>, w: &Matrix, after: After) -> Tensor<2> {
    assert_eq!(x.dims()[1], w.cols, "product: x has {} columns, the weight {}", x.dims()[1], w.cols);
    match &w.parts {
        // One part: one launch, the epilogue fused.
        Parts::Packed(p) if p.len() == 1 => {
            let x = pad_cols(x, p[0].k);
            kernels::matmul::launch(x, &p[0], after.bias, after.gamma, after.residual, after.act.unwrap_or(Act::None).into(), after.glu)
        }
        // Parts too large to join (f32 weights of a full-size model): each into its columns,
        // then the epilogue as Burn ops.
        Parts::Packed(p) => {
            let parts: Vec<&Packed> = p.iter().collect();
            reference::epilogue(kernels::matmul::launch_blocks(pad_cols(x, p[0].k), &parts), after)
        }
        Parts::Burn(blocks, _) => reference::product(x, blocks, after),
    }
}

/// x Wᵀ + b: `[m, cols]` -> `[m, rows]`.
pub fn linear(x: Tensor<2>, w: &Matrix, bias: Option<&Tensor<1>>) -> Tensor<2> {
    product(x, w, After { bias, ..Default::default() })
}

/// act(x Wᵀ + b).
pub fn linear_act(x: Tensor<2>, w: &Matrix, bias: Option<&Tensor<1>>, act: Act) -> Tensor<2> {
    product(x, w, After { bias, act: Some(act), ..Default::default() })
}

/// residual + x Wᵀ + b.
pub fn linear_add(x: Tensor<2>, w: &Matrix, bias: Option<&Tensor<1>>, residual: Tensor<2>) -> Tensor<2> {
    product(x, w, After { bias, residual: Some(residual), ..Default::default() })
}

/// residual + γ ⊙ (x Wᵀ + b) (ConvNeXt's layer scale).
pub fn linear_scale_add(x: Tensor<2>, w: &Matrix, bias: &Tensor<1>, gamma: &Tensor<1>, residual: Tensor<2>) -> Tensor<2> {
    product(x, w, After { bias: Some(bias), gamma: Some(gamma), residual: Some(residual), ..Default::default() })
}

/// act(x Gᵀ) ⊙ (x Uᵀ) for `gate_up` = [G; U] (Gemma's GeGLU): `[m, rows / 2]`.
pub fn glu(x: Tensor<2>, gate_up: &Matrix, act: Act) -> Tensor<2> {
    product(x, gate_up, After { act: Some(act), glu: true, ..Default::default() })
}

impl From<Act> for Epilogue {
    fn from(a: Act) -> Self {
        match a {
            Act::None => Epilogue::None,
            Act::Gelu => Epilogue::Gelu,
            Act::GeluTanh => Epilogue::GeluTanh,
            Act::QuickGelu => Epilogue::QuickGelu,
        }
    }
}

pub mod reference {
    /// Burn's own quantized tensor (QFloat, PackedU32, f32 block scales) from stored bytes: what
    /// flex multiplies, and Burn's matmul to compare our kernel with on wgpu.
    pub fn burn_quantized(stored: &[u8], dims: [usize; 2], storage: crate::quant::Storage, device: &burn::tensor::Device) -> Tensor<2> {
        Tensor::from_data(super::packed_data(stored, dims, storage), device)
    }

    use burn::tensor::activation::{gelu, gelu_approximate, sigmoid};
    use burn::tensor::{DType, Int, Tensor, TensorData};

    use super::{Act, After};

    pub fn act(y: Tensor<2>, a: Act) -> Tensor<2> {
        match a {
            Act::None => y,
            Act::Gelu => gelu(y),
            Act::GeluTanh => gelu_approximate(y),
            Act::QuickGelu => y.clone() * sigmoid(y * 1.702),
        }
    }

    /// The product with a weight held as Burn row blocks (stacked parts are multiplied one by
    /// one). A quantized block is read packed for one row of x (decode, bound by bytes read); for
    /// several rows it is dequantized into a temporary first: Burn's q4 kernel is slow there.
    pub fn product(x: Tensor<2>, blocks: &[Tensor<2>], after: After) -> Tensor<2> {
        let m = x.dims()[0];
        let parts: Vec<Tensor<2>> = blocks
            .iter()
            .map(|w| {
                let w = if m > 1 && matches!(w.dtype(), DType::QFloat(_)) { w.clone().dequantize() } else { w.clone() };
                x.clone().matmul(w.transpose())
            })
            .collect();
        epilogue(Tensor::cat(parts, 1), after)
    }

    /// `act(y + b) [⊙ up] [⊙ γ] [+ residual]` on a product `y` (with glu, y is [gate | up]).
    pub fn epilogue(mut y: Tensor<2>, after: After) -> Tensor<2> {
        if let Some(b) = after.bias {
            y = y + b.clone().unsqueeze::<2>();
        }
        if after.glu {
            let n = y.dims()[1] / 2;
            let (gate, up) = (y.clone().slice_dim(1, 0..n), y.slice_dim(1, n..2 * n));
            y = act(gate, after.act.unwrap_or(Act::None)) * up;
        } else if let Some(a) = after.act {
            y = act(y, a);
        }
        if let Some(g) = after.gamma {
            y = y * g.clone().unsqueeze::<2>();
        }
        if let Some(r) = after.residual {
            y = y + r;
        }
        y
    }

    /// Rows `ids` of row blocks stacked, as f32: Σ over blocks of one-hot(ids in the block) x
    /// block, exact since one term is non-zero. A quantized block is read packed by the matmul;
    /// `select` would dequantize the whole block into a temporary first.
    pub fn rows(blocks: &[Tensor<2>], ids: &[u32]) -> Tensor<2> {
        let device = blocks[0].device();
        let n = ids.len();
        if blocks.len() == 1 && !matches!(blocks[0].dtype(), DType::QFloat(_)) {
            let index = Tensor::<1, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [n]), &device);
            return blocks[0].clone().select(0, index);
        }
        let mut start = 0;
        let mut sum: Option<Tensor<2>> = None;
        for block in blocks {
            let rows = block.dims()[0];
            let hot: Vec<f32> = ids.iter().flat_map(|&i| (start..start + rows).map(move |r| if r == i as usize { 1.0 } else { 0.0 })).collect();
            let part = Tensor::<2>::from_data(TensorData::new(hot, [n, rows]), &device).matmul(block.clone());
            sum = Some(match sum {
                Some(s) => s + part,
                None => part,
            });
            start += rows;
        }
        sum.expect("at least one block")
    }
}
