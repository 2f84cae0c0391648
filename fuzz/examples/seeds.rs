//! Writes each fuzz target's seeds into DIR/<target>/ (the starting corpus for scripts/fuzz.sh).
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: seeds DIR"));
    for (name, _) in mgm_fuzz::TARGETS {
        let out = dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        for (k, seed) in mgm_fuzz::seeds(name).iter().enumerate() {
            std::fs::write(out.join(format!("seed-{k}")), seed).unwrap();
        }
    }
}
