//! How a weight matrix is stored on the device, and the one routine every matrix kernel reads it
//! through. The words are the bundle's stored bytes as they are (docs/bundle-format.md):
//! - `Q4`: 8 values per u32, lowest nibble first, each nibble q + 8; a f16 scale per 32 values;
//! - `Q8`: 4 values per u32, lowest byte first, two's complement; a f16 scale per 32 values;
//! - `F16`: 2 values per u32, low half first; `F32`: the f32 bits.
//!
//! Scales are f16 pairs in u32 words, row-major `[rows, cols / 32]`, low half first, each row
//! starting at a word (a row with an odd number of blocks ends in a padding half).

use cubecl::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    F32,
    F16,
    Q8,
    Q4,
}

impl Format {
    /// Bits per value.
    pub const fn bits(self) -> usize {
        match self {
            Format::F32 => 32,
            Format::F16 => 16,
            Format::Q8 => 8,
            Format::Q4 => 4,
        }
    }

    /// u32 words per 32-value block.
    pub const fn words_per_block(self) -> usize {
        match self {
            Format::F32 => 32,
            Format::F16 => 16,
            Format::Q8 => 8,
            Format::Q4 => 4,
        }
    }
}

/// IEEE half bits (low 16 bits of `h`) to f32, in integer arithmetic: WGSL has f16 only with the
/// `shader-f16` feature.
#[cube]
pub fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u32) << 16u32;
    let exp = (h >> 10u32) & 0x1fu32;
    let mant = h & 0x3ffu32;
    let normal = sign | ((exp + 112u32) << 23u32) | (mant << 13u32);
    let sub = sign | u32::reinterpret(f32::cast_from(mant) * 5.9604645e-8f32);
    let finite = select(exp == 0u32, sub, normal);
    let special = sign | 0x7f80_0000u32 | (mant << 13u32);
    f32::reinterpret(select(exp == 31u32, special, finite))
}

/// The f16 scale of block `b` (of `blocks` per row) of `row`. Each row's scales start at a word,
/// so stacked and joined parts stay aligned: a row with an odd number of blocks has a padding half.
#[cube]
pub fn scale(s: &[u32], row: usize, b: usize, blocks: usize) -> f32 {
    let i = row * (blocks + blocks % 2) + b;
    let word = s[i / 2];
    f16_to_f32(select(i % 2 == 1, word >> 16u32, word & 0xffffu32))
}

/// Value `i` (comptime) of a stored word, as f32 (before the block scale).
#[cube]
pub fn unpack(word: u32, #[comptime] fmt: Format, #[comptime] i: usize) -> f32 {
    match comptime![fmt] {
        Format::Q4 => f32::cast_from((word >> comptime![(4 * i) as u32]) & 0xfu32) - 8.0f32,
        // Shift the byte to the top, then an arithmetic shift back sign-extends it.
        Format::Q8 => f32::cast_from(i32::reinterpret(word << comptime![(24 - 8 * i) as u32]) >> 24i32),
        Format::F16 => f16_to_f32((word >> comptime![(16 * i) as u32]) & 0xffffu32),
        Format::F32 => f32::reinterpret(word),
    }
}

/// The scale of block `b` of `row` (1 for float formats).
#[cube]
pub fn block_scale(s: &[u32], #[comptime] fmt: Format, row: usize, b: usize, blocks: usize) -> f32 {
    let mut d = 1.0f32;
    if comptime![fmt == Format::Q4 || fmt == Format::Q8] {
        d = scale(s, row, b, blocks);
    }
    d
}

/// Values 8c .. 8c + 8 (c in 0..4) of the block whose words start at `w[base]`, unscaled: each
/// stored word is read once. `w` holds u32 words, or with `wide` u64 (q8 only: one load).
#[cube]
pub fn decode8<W: Int>(w: &[W], #[comptime] fmt: Format, base: usize, c: usize, #[comptime] wide: bool) -> (Vector<f32, Const<4>>, Vector<f32, Const<4>>) {
    let (mut lo, mut hi) = (Vector::<f32, Const<4>>::empty(), Vector::<f32, Const<4>>::empty());
    match comptime![(fmt, wide)] {
        (Format::Q8, true) => {
            let pair = u64::cast_from(w[base / 2 + c]);
            let (a, b) = (u32::cast_from(pair), u32::cast_from(pair >> 32u64));
            #[unroll]
            for t in 0..4usize {
                lo.insert(t, unpack(a, fmt, t));
                hi.insert(t, unpack(b, fmt, t));
            }
        }
        (Format::Q4, _) => {
            let word = u32::cast_from(w[base + c]);
            #[unroll]
            for t in 0..4usize {
                lo.insert(t, unpack(word, fmt, t));
                hi.insert(t, unpack(word, fmt, comptime![t + 4]));
            }
        }
        _ => {
            lo = decode4(w, fmt, base, 2 * c);
            hi = decode4(w, fmt, base, 2 * c + 1);
        }
    }
    (lo, hi)
}

/// Values 4c .. 4c + 4 (c in 0..8) of the block whose words start at `w[base]`, unscaled.
#[cube]
pub fn decode4<W: Int>(w: &[W], #[comptime] fmt: Format, base: usize, c: usize) -> Vector<f32, Const<4>> {
    let mut q = Vector::<f32, Const<4>>::empty();
    match comptime![fmt] {
        Format::Q4 => {
            // One word holds two groups: the low half the even one.
            let word = u32::cast_from(w[base + c / 2]) >> (u32::cast_from(c % 2) * 16u32);
            #[unroll]
            for t in 0..4usize {
                q.insert(t, f32::cast_from((word >> comptime![(4 * t) as u32]) & 0xfu32) - 8.0f32);
            }
        }
        Format::Q8 => {
            let word = u32::cast_from(w[base + c]);
            #[unroll]
            for t in 0..4usize {
                q.insert(t, unpack(word, fmt, t));
            }
        }
        Format::F16 => {
            let (lo, hi) = (u32::cast_from(w[base + 2 * c]), u32::cast_from(w[base + 2 * c + 1]));
            q.insert(0usize, f16_to_f32(lo & 0xffffu32));
            q.insert(1usize, f16_to_f32(lo >> 16u32));
            q.insert(2usize, f16_to_f32(hi & 0xffffu32));
            q.insert(3usize, f16_to_f32(hi >> 16u32));
        }
        Format::F32 => {
            #[unroll]
            for t in 0..4usize {
                q.insert(t, f32::reinterpret(u32::cast_from(w[base + 4 * c + t])));
            }
        }
    }
    q
}
