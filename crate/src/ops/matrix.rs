//! Weight matrices as stored, and the products with them. On wgpu a matrix keeps its bundle
//! bytes (q4, q8, f16 or f32 words) and our matmul kernel decodes them in registers; on flex it is
//! a Burn tensor (f32, or Burn's quantized tensor), multiplied by Burn.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::kernels::{self, matmul::Epilogue, Format, Packed};
use crate::weights::quant::{self, Storage};

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

/// A weight matrix `[rows, cols]` (PyTorch's `[out, in]`), possibly several stacked along rows.
#[derive(Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// wgpu: the stored words.
    Packed(Packed),
    /// flex: row blocks (one, or the parts of a stack), each f32 or a Burn quantized tensor.
    Burn(Vec<Tensor<2>>),
}

impl Matrix {
    /// From a bundle's stored bytes for `rows x cols` values (docs/bundle-format.md).
    pub fn from_stored(bytes: &[u8], rows: usize, cols: usize, storage: Storage, device: &Device) -> Matrix {
        let repr = if kernels::cube_device(device).is_some() {
            Repr::Packed(packed(bytes, rows, cols, storage, device))
        } else if storage.is_quantized() {
            Repr::Burn(vec![Tensor::from_data(crate::weights::packed_data(bytes, [rows, cols], storage), device)])
        } else {
            Repr::Burn(vec![Tensor::from_data(TensorData::new(quant::decode(bytes, rows * cols, storage), [rows, cols]), device)])
        };
        Matrix { rows, cols, repr }
    }

    /// From f32 values on the device.
    pub fn from_f32(t: Tensor<2>) -> Matrix {
        let [rows, cols] = t.dims();
        let repr = if kernels::cube_device(&t.device()).is_some() {
            Repr::Packed(Packed::from_f32(pad_cols(t, cols.next_multiple_of(32))))
        } else {
            Repr::Burn(vec![t])
        };
        Matrix { rows, cols, repr }
    }

    /// The matrices one above the other: `[Σ rows, cols]` (q, k and v as one; gate and up).
    pub fn stack(parts: Vec<Matrix>) -> Matrix {
        let (rows, cols) = (parts.iter().map(|m| m.rows).sum(), parts[0].cols);
        assert!(parts.iter().all(|m| m.cols == cols), "stacked matrices need the same columns");
        if parts.len() == 1 {
            return parts.into_iter().next().unwrap();
        }
        let repr = match &parts[0].repr {
            Repr::Packed(_) => {
                let packed: Vec<&Packed> = parts.iter().map(|m| if let Repr::Packed(p) = &m.repr { p } else { unreachable!() }).collect();
                Repr::Packed(Packed::stack(&packed))
            }
            Repr::Burn(_) => Repr::Burn(parts.into_iter().flat_map(|m| if let Repr::Burn(b) = m.repr { b } else { unreachable!() }).collect()),
        };
        Matrix { rows, cols, repr }
    }

    /// Rows `rows` of an unstacked matrix (bundles whose parts do not line up with the rows the
    /// model asks for).
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> Matrix {
        let repr = match &self.repr {
            Repr::Packed(p) => Repr::Packed(p.slice_rows(rows.clone())),
            Repr::Burn(blocks) => {
                assert_eq!(blocks.len(), 1, "slicing a stacked matrix");
                Repr::Burn(vec![blocks[0].clone().slice_dim(0, rows.clone())])
            }
        };
        Matrix { rows: rows.len(), cols: self.cols, repr }
    }

    /// As a plain f32 tensor `[rows, cols]` (weights that other ops read: convolutions, the
    /// mining shortcut, vectors stored in a bundle).
    pub fn to_f32(&self) -> Tensor<2> {
        match &self.repr {
            Repr::Packed(p) => kernels::gather::all_rows(p).slice_dim(1, 0..self.cols),
            Repr::Burn(blocks) => Tensor::cat(blocks.iter().map(|b| if matches!(b.dtype(), DType::QFloat(_)) { b.clone().dequantize() } else { b.clone() }).collect(), 0),
        }
    }

    /// Rows `ids` as f32, times `scale`: `[ids.len(), cols]` (the embedding lookup).
    pub fn rows_f32(&self, ids: &[u32], scale: f32) -> Tensor<2> {
        match &self.repr {
            Repr::Packed(p) => kernels::gather::launch(p, ids, scale).slice_dim(1, 0..self.cols),
            Repr::Burn(blocks) => reference::rows(blocks, ids) * scale,
        }
    }

    /// Bytes a product with it reads (values and scales as held on the device).
    pub fn bytes(&self) -> u64 {
        match &self.repr {
            Repr::Packed(p) => (p.values.dims()[0] + p.scales.as_ref().map_or(0, |s| s.dims()[0])) as u64 * 4,
            Repr::Burn(blocks) => blocks
                .iter()
                .map(|b| match b.dtype() {
                    DType::QFloat(_) => b.shape().num_elements() as u64 * 9 / 8, // Burn's i8 values and scales on flex
                    d => (b.shape().num_elements() * d.size()) as u64,
                })
                .sum(),
        }
    }

    /// Whether it is kept as q4/q8 blocks.
    pub fn is_quantized(&self) -> bool {
        match &self.repr {
            Repr::Packed(p) => matches!(p.format, Format::Q4 | Format::Q8),
            Repr::Burn(blocks) => blocks.iter().all(|b| matches!(b.dtype(), DType::QFloat(_))),
        }
    }

    pub fn device(&self) -> Device {
        match &self.repr {
            Repr::Packed(p) => p.values.device(),
            Repr::Burn(b) => b[0].device(),
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
        let scales = if blocks % 2 == 0 {
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
    match &w.repr {
        Repr::Packed(p) => {
            let x = pad_cols(x, p.k);
            kernels::matmul::launch(x, p, after.bias, after.gamma, after.residual, after.act.unwrap_or(Act::None).into(), after.glu)
        }
        Repr::Burn(blocks) => reference::product(x, blocks, after),
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

/// x [B₀; B₁; …]ᵀ for row blocks too large to stack in one binding (the tied LM head over the
/// embedding's blocks): `[m, Σ rows]`.
pub fn linear_blocks(x: Tensor<2>, blocks: &[Matrix]) -> Tensor<2> {
    if let Repr::Packed(_) = blocks[0].repr {
        let packed: Vec<&Packed> = blocks.iter().map(|b| if let Repr::Packed(p) = &b.repr { p } else { unreachable!() }).collect();
        return kernels::matmul::launch_blocks(pad_cols(x, packed[0].k), &packed);
    }
    Tensor::cat(blocks.iter().map(|b| linear(x.clone(), b, None)).collect(), 1)
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
        let mut y = Tensor::cat(parts, 1);
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
