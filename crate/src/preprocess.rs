//! Image bytes -> the normalised HR tensor MGM feeds both towers (spec §3): decode to RGB the way
//! PIL's `convert('RGB')` does, pad to a square with the mean colour and resize with PIL's
//! antialiased bicubic (bit-exact: a ±1 error on a few pixels already moves features), rescale
//! and normalise with the OpenAI CLIP mean and std.

use image::DynamicImage;

use crate::bail;
use crate::error::{MgmError, Result};

pub const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
// OpenAI CLIP's digits, as the spec gives them (more than an f32 holds).
#[allow(clippy::excessive_precision)]
pub const STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// floor(255 * MEAN), MGM's `expand2square` background.
pub const PAD: [u8; 3] = [122, 116, 104];

/// The largest image accepted, on a side and in all (a 48 MP phone photo fits): past them an
/// image is an `input` error before it is decoded, in the CLI and in the browser.
pub const MAX_SIDE: usize = 16384;
pub const MAX_PIXELS: usize = 50_000_000;
/// The decoder's largest buffer: an 8-bit RGBA image at [`MAX_PIXELS`] fits, a 16-bit one does not.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        bail!(Input, "the image is empty (0 pixels)");
    }
    if width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS {
        bail!(Input, "the image is {width}x{height} pixels; at most {MAX_SIDE} on a side and {} megapixels are supported", MAX_PIXELS / 1_000_000);
    }
    Ok(())
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Decodes JPEG, PNG, WebP, GIF (first frame) or BMP bytes to RGB as PIL's `convert('RGB')`:
/// alpha is dropped (never blended), 16-bit grey is clipped to 255, 16-bit colour keeps the
/// high byte.
pub fn decode(bytes: &[u8]) -> Result<Rgb> {
    let format = image::guess_format(bytes)
        .map_err(|_| MgmError::Input("not an image: the bytes are not JPEG, PNG, WebP, GIF or BMP".into()))?;
    let reader = || {
        let mut r = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        r.limits(limits);
        r
    };
    let failed = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => MgmError::Input(format!("the {format:?} image needs more than {} MiB to decode", MAX_DECODE_BYTES >> 20)),
        e => MgmError::Input(format!("cannot decode the {format:?} image: {e}")),
    };
    let (w, h) = reader().into_dimensions().map_err(failed)?;
    check_size(w as usize, h as usize)?;
    let img = reader().decode().map_err(failed)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data: Vec<u8> = match img {
        DynamicImage::ImageLuma8(i) => i.into_raw().into_iter().flat_map(|v| [v; 3]).collect(),
        DynamicImage::ImageLumaA8(i) => i.into_raw().chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        DynamicImage::ImageRgb8(i) => i.into_raw(),
        DynamicImage::ImageRgba8(i) => drop_alpha(&i.into_raw()),
        // PIL opens 16-bit grey as I;16 and clips it; grey+alpha and colour keep the high byte.
        DynamicImage::ImageLuma16(i) => i.into_raw().into_iter().flat_map(|v| [v.min(255) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(i) => i.into_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect(),
        DynamicImage::ImageRgb16(i) => i.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(i) => i.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)).collect(),
        other => other.to_rgb8().into_raw(),
    };
    Ok(Rgb { width, height, data })
}

/// RGBA8 -> RGB8: PIL's `convert('RGB')` drops alpha, never blends it.
fn drop_alpha(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
}

/// PIL's bicubic kernel (a = -0.5), evaluated in the same order as Pillow so rounding agrees.
fn bicubic(x: f64) -> f64 {
    let t = x.abs();
    if t < 1.0 {
        ((1.5 * t - 2.5) * t) * t + 1.0
    } else if t < 2.0 {
        (((t - 5.0) * t + 8.0) * t - 4.0) * -0.5
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 22;

/// For each output index: the first input tap and the fixed-point weights (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`). The filter widens by the scale when
/// shrinking, which is the antialiasing.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax).map(|x| bicubic(((x as f64 - center) + 0.5) / filterscale)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            let one = (1u32 << PRECISION_BITS) as f64;
            let k = w.iter().map(|&v| if v < 0.0 { (v * one - 0.5) as i32 } else { (v * one + 0.5) as i32 }).collect();
            (xmin, k)
        })
        .collect()
}

/// One 8-bit pass along x (`horizontal`) or y, with Pillow's rounding and clipping. Each line of
/// `src` sits at `at` on a line of `len` pixels whose other pixels are `fill(line)`: a fill pixel
/// adds fill x its weight, and the integer sums are exact in any order, so the result equals
/// Pillow's on the materialised line.
fn pass(src: &Rgb, at: usize, len: usize, fill: &dyn Fn(usize) -> [u8; 3], out_len: usize, horizontal: bool) -> Rgb {
    let (n, lines) = if horizontal { (src.width, src.height) } else { (src.height, src.width) };
    // Per output pixel: the first tap on `src`, their weights, and the weight left to the fill.
    let coeffs = coefficients(len, out_len);
    let taps: Vec<(usize, &[i32], i32)> = coeffs
        .iter()
        .map(|(first, k)| {
            let (lo, hi) = ((*first).max(at), (first + k.len()).min(at + n));
            let inside: &[i32] = if lo < hi { &k[lo - first..hi - first] } else { &[] };
            (lo.saturating_sub(at), inside, k.iter().sum::<i32>() - inside.iter().sum::<i32>())
        })
        .collect();
    let (width, height) = if horizontal { (out_len, lines) } else { (lines, out_len) };
    let mut data = vec![0u8; width * height * 3];
    for l in 0..lines {
        let f = fill(l);
        for (i, (first, k, fill_weight)) in taps.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i32 = (1 << (PRECISION_BITS - 1)) + f[c] as i32 * fill_weight;
                for (j, w) in k.iter().enumerate() {
                    let (x, y) = if horizontal { (first + j, l) } else { (l, first + j) };
                    acc += src.data[(y * src.width + x) * 3 + c] as i32 * w;
                }
                let (x, y) = if horizontal { (i, l) } else { (l, i) };
                data[(y * width + x) * 3 + c] = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    Rgb { width, height, data }
}

/// MGM's `expand2square` (centred on a max(w, h) square of [`PAD`]) then PIL's
/// `resize((size, size), BICUBIC)`, bit-exact, without making the square: a 20000x1 image costs
/// its own pixels, not 400 million. Both axes change alike, so Pillow resamples x first.
pub fn pad_and_resize(img: &Rgb, size: usize) -> Rgb {
    let side = img.width.max(img.height);
    let (x0, y0) = ((side - img.width) / 2, (side - img.height) / 2);
    let rows = pass(img, x0, side, &|_| PAD, size, true);
    // The pad rows after the x pass: one row, the same for every pad row.
    let pad_row = pass(&Rgb { width: 0, height: 1, data: vec![] }, 0, side, &|_| PAD, size, true);
    let pad = |x: usize| [pad_row.data[x * 3], pad_row.data[x * 3 + 1], pad_row.data[x * 3 + 2]];
    pass(&rows, y0, side, &pad, size, false)
}

/// `[3, h, w]` planar f32: x * (1/255) in f64 then f32 (transformers' `rescale`), then
/// (x - mean) / std in f32 (its `normalize`).
pub fn normalize(img: &Rgb) -> Vec<f32> {
    let plane = img.width * img.height;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let x = (px[c] as f64 * (1.0 / 255.0)) as f32;
            out[c * plane + p] = (x - MEAN[c]) / STD[c];
        }
    }
    out
}

/// An RGB image -> normalised `[3, size, size]` pixels for the HR tower (`image_size_aux`).
pub fn preprocess(img: &Rgb, size: usize) -> Vec<f32> {
    normalize(&pad_and_resize(img, size))
}

/// An image as a caller has it: encoded file bytes, or pixels a browser already decoded.
#[derive(Debug, Clone)]
pub enum Image {
    Encoded(Vec<u8>),
    /// 8-bit RGBA rows (a canvas's `ImageData`); alpha is dropped as in [`decode`].
    Rgba { width: usize, height: usize, data: Vec<u8> },
}

impl Image {
    pub fn rgb(&self) -> Result<Rgb> {
        match self {
            Image::Encoded(bytes) => decode(bytes),
            Image::Rgba { width, height, data } => {
                check_size(*width, *height)?;
                if data.len() != width * height * 4 {
                    bail!(Input, "the image has {} RGBA bytes for {width}x{height} pixels", data.len());
                }
                Ok(Rgb { width: *width, height: *height, data: drop_alpha(data) })
            }
        }
    }
}
