//! Preprocessing against PIL (decode, pad, antialiased bicubic resize: pixels identical) and
//! transformers' CLIPImageProcessor 4.38 (normalised tensors), on committed images of odd sizes
//! and modes. Fixtures from tests/fixtures/generate.py.

mod common;

use common::fixture;
use mgm::preprocess::{decode, normalize, pad_and_resize, preprocess, Image, Rgb};
use safetensors::SafeTensors;

const IMAGES: [&str; 12] = [
    "alpha.png", "anim.gif", "grey.png", "grey16.png", "landscape.png", "lossless.webp", "one_pixel.png",
    "palette.png", "photo.jpg", "portrait.png", "square.bmp", "big.png",
];

struct Ref(Vec<u8>);

impl Ref {
    fn open() -> Self {
        Ref(std::fs::read(fixture("images/reference.safetensors")).unwrap())
    }
    fn rgb(&self, key: &str) -> Option<Rgb> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(key).ok()?;
        Some(Rgb { width: t.shape()[1], height: t.shape()[0], data: t.data().to_vec() })
    }
    fn f32(&self, key: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        st.tensor(key).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture("images").join(name)).unwrap()
}

/// Largest per-channel difference and the share of values that differ.
fn diff(a: &Rgb, b: &Rgb) -> (u8, f64) {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let n = a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
    let max = a.data.iter().zip(&b.data).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
    (max, n as f64 / a.data.len() as f64)
}

#[test]
fn decoding_matches_pil_convert_rgb() {
    let r = Ref::open();
    for name in IMAGES {
        let got = decode(&bytes(name)).unwrap();
        let want = r.rgb(&format!("{name}.rgb")).unwrap();
        let (max, share) = diff(&got, &want);
        println!("{name}: decode max |diff| {max}, {:.2}% of values differ", share * 100.0);
        if name.ends_with(".jpg") {
            // JPEG decoders differ from libjpeg-turbo by a few levels (README: "Image decoding");
            // this noisy synthetic image is the worst case measured.
            assert!(max <= 4 && share < 0.35, "{name}: {max} {share}");
        } else {
            assert_eq!(max, 0, "{name}");
        }
    }
}

#[test]
fn pad_and_bicubic_resize_match_pil_exactly() {
    let r = Ref::open();
    for name in IMAGES {
        // Start from PIL's own decoded pixels, so this checks pad + resize alone.
        let src = r.rgb(&format!("{name}.rgb")).unwrap();
        let want = r.rgb(&format!("{name}.resized")).unwrap();
        assert_eq!(want.width, want.height);
        let got = pad_and_resize(&src, want.width);
        let (max, share) = diff(&got, &want);
        assert_eq!(max, 0, "{name}: {:.3}% of values differ", share * 100.0);
    }
    // MGM-2B's real size: 900x700 padded and shrunk to 768.
    let want = r.rgb("big.png.resized768").unwrap();
    let got = pad_and_resize(&r.rgb("big.png.rgb").unwrap(), 768);
    assert_eq!(diff(&got, &want).0, 0, "big.png at 768");
}

#[test]
fn normalised_pixels_match_clip_image_processor() {
    let r = Ref::open();
    for name in ["portrait.png", "landscape.png"] {
        let want = r.f32(&format!("{name}.pixels"));
        let got = preprocess(&decode(&bytes(name)).unwrap(), 128);
        common::assert_close(&format!("{name} pixels"), &got, &want, 0.0);
        let resized = r.rgb(&format!("{name}.resized")).unwrap();
        common::assert_close(&format!("{name} normalize"), &normalize(&resized), &want, 0.0);
    }
}

#[test]
fn bad_image_bytes_are_clear_errors() {
    let err = decode(b"hello, I am text").unwrap_err();
    assert_eq!(err.code(), "input");
    assert!(err.message().contains("not an image"), "{err}");
    let png = bytes("portrait.png");
    let err = decode(&png[..png.len() / 2]).unwrap_err();
    assert_eq!(err.code(), "input");
    assert!(err.message().contains("cannot decode the Png image"), "{err}");
    assert!(decode(&[]).is_err());
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 90])).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn images_past_the_size_limit_are_input_errors_and_thin_ones_stay_small() {
    // A few hundred bytes of PNG declaring 20000x1: refused from its header, before decoding.
    for (w, h) in [(20000, 1), (1, 30000), (8000, 7000)] {
        let err = decode(&png(w, h)).unwrap_err();
        assert_eq!(err.code(), "input");
        assert!(err.message().contains(&format!("{w}x{h} pixels; at most 16384 on a side")), "{err}");
    }
    let err = Image::Rgba { width: 20000, height: 1, data: vec![0; 80000] }.rgb().unwrap_err();
    assert!(err.message().contains("at most 16384"), "{err}");
    // At the limit, a 16384x1 strip: padded in place, never as a 16384² square (800 MB).
    let img = decode(&png(16384, 1)).unwrap();
    let out = pad_and_resize(&img, 768);
    assert_eq!((out.width, out.height, out.data.len()), (768, 768, 768 * 768 * 3));
    // The strip is far thinner than an output row, so the middle row is mostly pad, pulled
    // towards the strip's colour; the top row is pad alone.
    assert_eq!(&out.data[..3], &mgm::preprocess::PAD);
    let mid = &out.data[384 * 768 * 3..384 * 768 * 3 + 3];
    assert!(mid != mgm::preprocess::PAD && mid[0] > mgm::preprocess::PAD[0], "{mid:?}");
}
