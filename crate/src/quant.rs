//! Block quantization of weight rows: q8 (int8) and q4 (int4), blocks of 32 along a row, one f16
//! scale per block, symmetric (x ≈ scale * q). Host code only; no layer names here.
//!
//! Byte layout of `rows` rows of `cols` values (cols a multiple of 32):
//! - q8: `rows * cols` i8 values, then `rows * cols / 32` f16 scales (little-endian);
//! - q4: `rows * cols / 2` bytes, two values each (low nibble first) stored as q + 8 in 0..=15,
//!   then the f16 scales.

use half::f16;
use serde::{Deserialize, Serialize};

pub const BLOCK: usize = 32;

/// How a tensor is stored in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    F32,
    F16,
    Q8,
    Q4,
}

impl Storage {
    /// Largest |q|: symmetric ranges, so 0 is exact and signs are balanced.
    fn qmax(self) -> f32 {
        match self {
            Storage::Q8 => 127.0,
            Storage::Q4 => 7.0,
            _ => unreachable!("not a quantized storage"),
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, Storage::Q8 | Storage::Q4)
    }

    /// Bytes for `rows x cols` values.
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        let n = rows * cols;
        match self {
            Storage::F32 => 4 * n,
            Storage::F16 => 2 * n,
            Storage::Q8 => n + 2 * n / BLOCK,
            Storage::Q4 => n / 2 + 2 * n / BLOCK,
        }
    }
}

/// f32 values -> stored bytes (see the module docs for the layout).
pub fn encode(values: &[f32], storage: Storage) -> Vec<u8> {
    match storage {
        Storage::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Storage::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        Storage::Q8 | Storage::Q4 => {
            let (q, scales) = quantize(values, storage);
            let mut out = match storage {
                Storage::Q8 => q.iter().map(|&v| v as u8).collect::<Vec<u8>>(),
                _ => q.chunks_exact(2).map(|p| ((p[0] + 8) as u8) | (((p[1] + 8) as u8) << 4)).collect(),
            };
            out.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
            out
        }
    }
}

/// Per block: scale = max|x| / qmax (rounded to f16), q = round(x / scale) clamped.
pub fn quantize(values: &[f32], storage: Storage) -> (Vec<i8>, Vec<f16>) {
    let qmax = storage.qmax();
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / BLOCK);
    for block in values.chunks(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = f16::from_f32(amax / qmax);
        let s = scale.to_f32();
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        q.extend(block.iter().map(|v| (v * inv).round().clamp(-qmax, qmax) as i8));
        scales.push(scale);
    }
    (q, scales)
}

/// Stored bytes of `n` quantized values -> (value bytes, f16 scale bytes).
pub fn split_stored(bytes: &[u8], n: usize, storage: Storage) -> (&[u8], &[u8]) {
    bytes.split_at(if storage == Storage::Q8 { n } else { n / 2 })
}

/// Stored bytes of `n` values -> quantized values and f32 scales (`n / 32` of them).
pub fn split_quantized(bytes: &[u8], n: usize, storage: Storage) -> (Vec<i8>, Vec<f32>) {
    let (vals, scales) = split_stored(bytes, n, storage);
    let q = match storage {
        Storage::Q8 => vals.iter().map(|&b| b as i8).collect(),
        _ => vals.iter().flat_map(|&b| [(b & 0x0f) as i8 - 8, (b >> 4) as i8 - 8]).collect(),
    };
    let scales = scales.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
    (q, scales)
}

/// Stored bytes of `n` values -> f32 (what a float path or a reference computes).
pub fn decode(bytes: &[u8], n: usize, storage: Storage) -> Vec<f32> {
    match storage {
        Storage::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Storage::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Storage::Q8 | Storage::Q4 => {
            let (q, scales) = split_quantized(bytes, n, storage);
            q.iter().enumerate().map(|(i, &v)| v as f32 * scales[i / BLOCK]).collect()
        }
    }
}
