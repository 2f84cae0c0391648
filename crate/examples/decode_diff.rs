//! Dev tool: how far our image decoder is from PIL's on a file. `RAW` holds PIL's
//! `np.asarray(Image.open(FILE).convert('RGB')).tobytes()`.
//!
//! cargo run -p mgm --example decode_diff -- FILE RAW

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, raw] = args.as_slice() else { return Err("usage: decode_diff FILE RAW".into()) };
    let ours = mgm::preprocess::decode(&std::fs::read(file)?)?;
    let pil = std::fs::read(raw)?;
    if ours.data.len() != pil.len() {
        return Err(format!("size differs: {}x{} vs {} bytes", ours.width, ours.height, pil.len()).into());
    }
    let diffs: Vec<u8> = ours.data.iter().zip(&pil).map(|(a, b)| a.abs_diff(*b)).collect();
    let differ = diffs.iter().filter(|d| **d > 0).count();
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    println!(
        "{file}: {}x{}, max |diff| {}, mean |diff| {mean:.3}, {:.1}% of values differ",
        ours.width,
        ours.height,
        diffs.iter().max().unwrap_or(&0),
        100.0 * differ as f64 / diffs.len() as f64
    );
    Ok(())
}
