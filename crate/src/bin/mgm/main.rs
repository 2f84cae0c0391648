//! `mgm`: the native command line. Thin: it parses arguments, calls the library and prints.

mod bench;
mod chat;
mod cubek_gemv;
mod convert;
mod generate;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mgm", version, about = "Mini-Gemini (MGM-2B) on Burn: generate, convert, benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (and images).
    Generate(generate::Args),
    /// A conversation on stdin (one question per line); follow-ups reuse the KV cache.
    Chat(chat::Args),
    /// Convert an HF checkpoint into a web bundle.
    Convert(convert::Args),
    /// Print prefill and decode speed for a tiny and a Gemma-2B-shaped model.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    // A panic is a bug, but the user still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<String>().cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let _ = writeln!(std::io::stderr(), "error: internal error: {}", msg.lines().next().unwrap_or(""));
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if BAR_OPEN.load(Ordering::Relaxed) {
                eprintln!();
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

static BAR_OPEN: AtomicBool = AtomicBool::new(false);

/// A one-line progress bar on stderr, redrawn in place; only on a terminal, so pipes and logs
/// get just the result and one-line errors.
pub fn progress_bar(p: mgm::events::Progress) {
    if p.total == 0 || !std::io::stderr().is_terminal() {
        return;
    }
    BAR_OPEN.store(p.done < p.total, Ordering::Relaxed);
    let pct = p.done * 100 / p.total;
    let filled = (pct / 4) as usize;
    eprint!("\r{:<8} [{:<25}] {:>3}%", p.phase, "#".repeat(filled), pct);
    if p.done >= p.total {
        eprintln!();
    }
}

/// Linux: writing 5 to clear_refs resets VmHWM, so each measured step has its own peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset, GiB (NaN where /proc is absent).
pub fn peak_rss_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
    kib.map_or(f64::NAN, |k| k / (1024.0 * 1024.0))
}
