//! The CI fuzz run, on stable: every target gets its seeds and then `MGM_FUZZ_RUNS` (default
//! 3000) inputs mutated from them by a seeded generator (bit flips, byte runs, cuts, splices,
//! numbers and special strings), with the same allocation cap as `cargo fuzz`. Not coverage
//! guided: scripts/fuzz.sh is the real fuzzer; this keeps its checks from regressing.

use mgm_fuzz::{MAX_ALLOC, TARGETS, seeds, take_largest_alloc};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: [&[u8]; 12] = [
    b"<start_of_turn>", b"<end_of_turn>", b"<image>", b"<h>", b"</h>", b"\x01", b"-1", b"4294967296",
    b"18446744073709551615", b"1e308", b"\"shape\":[65536,65536,65536]", b"\xff\xff\xff\x7f",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(d.len() + 1);
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            2 => {
                let end = (at + 1 + rng.below(64)).min(d.len());
                d.drain(at.min(end)..end);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let to = (from + rng.below(256)).min(other.len());
                d.splice(at..at, other[from..to].iter().copied());
            }
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, t.iter().copied());
            }
            _ => {
                // Rewrite a run of digits, where JSON keeps its sizes and offsets.
                if let Some(p) = d.iter().skip(at).position(u8::is_ascii_digit) {
                    let p = at + p;
                    let digits = [b"0".as_slice(), b"1", b"7", b"4096", b"99999999999999999999"][rng.below(5)];
                    d.splice(p..p + 1, digits.iter().copied());
                }
            }
        }
    }
    d
}

#[test]
fn fuzz_targets_survive_seeds_and_mutations() {
    let runs: usize = std::env::var("MGM_FUZZ_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        let t0 = std::time::Instant::now();
        take_largest_alloc();
        for s in &seeds {
            target(s);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for _ in 0..runs {
            target(&mutate(&mut rng, &seeds));
        }
        let largest = take_largest_alloc();
        assert!(largest <= MAX_ALLOC);
        println!("{name}: {} seeds + {runs} mutations in {:.1} s, largest allocation {:.1} MiB", seeds.len(), t0.elapsed().as_secs_f64(), largest as f64 / (1 << 20) as f64);
    }
}
