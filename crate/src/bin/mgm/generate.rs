//! `mgm generate`: prompt in, streamed text (or one JSON object) out.

use std::io::Write;
use std::path::PathBuf;

use mgm::device::{self, Backend};
use mgm::error::{MgmError, Result};
use mgm::generate::chat::{chat, ChatRequest};
use mgm::generate::prompt::Prompt;
use mgm::generate::{GenerateOptions, Sampling};
use mgm::model::mgm::ImageFeatures;
use mgm::preprocess::Image;
use mgm::text::template::{Role, Template};

#[derive(clap::Args)]
pub struct Args {
    /// A web bundle (manifest.json) or an HF checkpoint directory (config.json, safetensors,
    /// tokenizer.json), Gemma or MGM.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    /// An image for the prompt (JPEG, PNG, WebP, GIF, BMP); repeat for several.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Ask for a text-to-image prompt too (appends " <GEN>"); it is returned as image_prompt.
    #[arg(long = "gen")]
    gen_prompt: bool,
    /// Parse the prompt as MGM's CLI does: special-token strings in it (`<end_of_turn>`) become
    /// those tokens and `<image>` an image slot. Without it a message is text.
    #[arg(long)]
    raw_prompt: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// gemma wraps the prompt in the chat template; none encodes <bos> + the raw text.
    #[arg(long, default_value = "gemma", value_parser = ["gemma", "none"])]
    template: String,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Write the prompt's logits [prompt_len, vocab] (f32) to this safetensors file.
    #[arg(long)]
    dump: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu"])]
    backend: String,
}

/// How to pick tokens, shared by `generate` and `chat`.
#[derive(clap::Args)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 keeps every token.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    pub fn options(&self, stop_ids: Vec<u32>, prompt_logits: bool) -> GenerateOptions {
        let s = Sampling { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k, seed: self.seed };
        GenerateOptions { max_new_tokens: self.max_new_tokens, sampling: s, stop_ids, prompt_logits }
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.prompt.is_empty() {
        return Err(MgmError::Input("the prompt is empty".into()));
    }
    let images = a.image.iter().map(|p| std::fs::read(p).map_err(|e| MgmError::Input(format!("{}: {e}", p.display())))).collect::<Result<Vec<_>>>()?;
    let t0 = device::now_ms();
    let (device, _) = device::init(a.backend.parse::<Backend>()?)?;
    let (model, tok) = mgm::load::dir(&a.model, &device, &mut |p| {
        if !a.json {
            crate::progress_bar(p)
        }
    })?;
    let load_ms = device::now_ms() - t0;

    let request = ChatRequest {
        turns: vec![(Role::User, a.prompt.clone())],
        images: images.into_iter().map(Image::Encoded).collect(),
        template: if a.template == "none" { Template::None } else { Template::Gemma },
        gen_prompt: a.gen_prompt,
        raw_prompt: a.raw_prompt,
        options: a.sampling.options(tok.stop_ids(), a.dump.is_some()),
        attention: false,
        keep_aux: a.dump.is_some(),
    };
    let reply = pollster::block_on(chat(&mut Default::default(), &model, &tok, &request, &mut |_, text| {
        if !a.json {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        true
    }))?;
    let (prompt, out, image_ms) = (&reply.prompt, &reply.generation, reply.image_ms);
    if let Some(path) = &a.dump {
        dump(path, prompt, out.prompt_logits.as_deref().unwrap_or_default())?;
    }
    let t = &out.timings;
    if a.json {
        println!("{}", reply.to_json(Some(load_ms)));
    } else {
        println!();
        if let Some(p) = &reply.image_prompt {
            println!("image prompt: {p}");
        }
        eprintln!(
            "{} prompt tokens ({:.1} tok/s), {} generated ({:.1} tok/s){}",
            t.prompt_tokens,
            t.prefill_tok_s(),
            out.ids.len(),
            t.decode_tok_s(),
            if prompt.images.is_empty() { String::new() } else { format!(", images encoded in {image_ms:.0} ms") }
        );
    }
    Ok(())
}

fn read_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>> {
    pollster::block_on(mgm::generate::session::read_f32(t))
}

/// `--dump`: the image path's tensors (stacked over images) and the prompt's logits.
fn dump(path: &std::path::Path, prompt: &Prompt, logits: &[f32]) -> Result<()> {
    let n = prompt.ids().len() + prompt.images.iter().map(|i| i.embeds.dims()[0]).sum::<usize>() - prompt.images.len();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![("logits".into(), vec![n, logits.len() / n.max(1)], logits.to_vec())];
    if !prompt.images.is_empty() {
        let stack = |name: &str, get: &dyn Fn(&ImageFeatures) -> burn::tensor::Tensor<3>| -> Result<(String, Vec<usize>, Vec<f32>)> {
            let all = burn::tensor::Tensor::cat(prompt.images.iter().map(get).collect(), 0);
            Ok((name.to_string(), all.dims().to_vec(), read_f32(all)?))
        };
        tensors.push(stack("clip_features", &|f| f.clip.clone().unsqueeze())?);
        tensors.push(stack("image_embeds", &|f| f.embeds.clone().unsqueeze())?);
        let aux: Vec<_> = prompt.images.iter().filter_map(|f| f.aux.clone()).collect();
        if !aux.is_empty() {
            let mut shape = vec![aux.len()];
            shape.extend(aux[0].dims());
            tensors.push(("aux_features".into(), shape, read_f32(burn::tensor::Tensor::stack::<4>(aux, 0))?));
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.into_iter().map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views = bytes
        .iter()
        .map(|(name, shape, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| MgmError::Io(format!("{}: {e}", path.display())))?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| MgmError::Io(format!("{}: {e}", path.display())))
}
