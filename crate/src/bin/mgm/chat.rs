//! `mgm chat`: a conversation on stdin, one user turn per line, answers on stdout. The KV cache
//! and the encoded images stay between turns, so a follow-up prefills only what is new.
//! `/clear` starts over; `/image FILE` adds an image (MGM puts every image in front of the first
//! question, so the next turn recomputes from there).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use mgm::device::{self, Backend};
use mgm::error::{MgmError, Result};
use mgm::generate::chat::{chat, ChatRequest, Conversation};
use mgm::preprocess::Image;
use mgm::text::template::Role;

#[derive(clap::Args)]
pub struct Args {
    /// A web bundle or an HF checkpoint directory, as for `generate`.
    #[arg(long)]
    model: PathBuf,
    /// An image for the conversation; repeat for several.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Parse the prompt as MGM's CLI does: special-token strings in it (`<end_of_turn>`) become
    /// those tokens and `<image>` an image slot. Without it a message is text.
    #[arg(long)]
    raw_prompt: bool,
    #[command(flatten)]
    sampling: crate::generate::SamplingArgs,
    /// One JSON object per answer (as `generate --json`) instead of streamed text.
    #[arg(long)]
    json: bool,
    /// Recompute every turn from scratch (for checking that the cache changes nothing).
    #[arg(long)]
    no_cache: bool,
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu"])]
    backend: String,
}

fn read_image(path: &str) -> Result<Image> {
    std::fs::read(path).map(Image::Encoded).map_err(|e| MgmError::Input(format!("{path}: {e}")))
}

pub fn run(a: Args) -> Result<()> {
    let mut images = a.image.iter().map(|p| read_image(&p.to_string_lossy())).collect::<Result<Vec<_>>>()?;
    let (device, _) = device::init(a.backend.parse::<Backend>()?)?;
    let t0 = device::now_ms();
    let (model, tok) = mgm::load::dir(&a.model, &device, &mut |p| crate::progress_bar(p))?;
    let load_ms = device::now_ms() - t0;
    let mut conv = Conversation::default();
    let mut turns: Vec<(Role, String)> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| MgmError::Io(format!("stdin: {e}")))?;
        let line = line.trim();
        match line.split_once(' ').map_or((line, ""), |(c, rest)| (c, rest.trim())) {
            ("", _) => continue,
            ("/clear", _) => {
                conv.clear();
                turns.clear();
                images.clear();
                continue;
            }
            ("/image", path) => {
                images.push(read_image(path)?);
                continue;
            }
            _ => {}
        }
        if a.no_cache {
            conv.clear();
        }
        turns.push((Role::User, line.to_string()));
        let options = a.sampling.options(tok.stop_ids(), false);
        let request = ChatRequest { raw_prompt: a.raw_prompt, ..ChatRequest::new(turns.clone(), images.clone(), options) };
        let reply = pollster::block_on(chat(&mut conv, &model, &tok, &request, &mut |_, text| {
            if !a.json {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
            true
        }));
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // The turn is dropped; the conversation goes on.
                turns.pop();
                eprintln!("error: {e}");
                continue;
            }
        };
        if a.json {
            println!("{}", reply.to_json(Some(load_ms)));
        } else {
            let t = &reply.generation.timings;
            println!();
            eprintln!(
                "[first token after {:.1} s: {} of {} prompt tokens from the cache; {:.1} tok/s]",
                (reply.image_ms + t.prefill_ms) / 1e3,
                t.cached_tokens,
                t.cached_tokens + t.prompt_tokens,
                t.decode_tok_s()
            );
        }
        turns.push((Role::Model, reply.text.clone()));
    }
    Ok(())
}
