//! The Gemma chat template (MGM's `conv_gemma`, spec §4.1).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `<start_of_turn>user\n{msg}<end_of_turn>\n<start_of_turn>model\n`
    Gemma,
    /// The raw text (after `<bos>`).
    None,
}

/// A rendered prompt: the template's turn markers and image slots, and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A special token the template writes (`<start_of_turn>`, `<end_of_turn>`, `<eos>`).
    Marker(&'static str),
    Text(String),
    Image,
}

/// Renders a conversation that ends with a user turn, opening the model's turn: `images` slots
/// open the first user message (MGM's `<image>\n` each), `gen_prompt` appends [`GEN_SUFFIX`] to the
/// last. Completed model turns end with a literal `<eos>`, as in MGM's training data.
pub fn render(template: Template, turns: &[(Role, &str)], images: usize, gen_prompt: bool) -> Vec<Part> {
    let first_user = turns.iter().position(|t| t.0 == Role::User);
    let mut out = Vec::new();
    let text = |s: &str| Part::Text(s.to_string());
    let gemma = template == Template::Gemma;
    for (i, (role, msg)) in turns.iter().enumerate() {
        match (gemma, role) {
            (true, Role::User) => out.extend([Part::Marker("<start_of_turn>"), text("user\n")]),
            (true, Role::Model) => out.extend([Part::Marker("<start_of_turn>"), text("model\n")]),
            (false, _) => {}
        }
        if Some(i) == first_user {
            for _ in 0..images {
                out.extend([Part::Image, text("\n")]);
            }
        }
        out.push(text(msg));
        if gen_prompt && i + 1 == turns.len() {
            out.push(text(GEN_SUFFIX));
        }
        match (gemma, role) {
            (true, Role::User) => out.extend([Part::Marker("<end_of_turn>"), text("\n")]),
            (true, Role::Model) => out.extend([Part::Marker("<end_of_turn>"), text("\n"), Part::Marker("<eos>")]),
            (false, _) => {}
        }
    }
    if gemma {
        out.extend([Part::Marker("<start_of_turn>"), text("model\n")]);
    }
    out
}

pub const IMAGE_TOKEN: &str = "<image>";
/// Appended to the user's text to ask for an image-generation prompt (`--gen`).
pub const GEN_SUFFIX: &str = " <GEN>";

/// With two or more images, MGM's CLI labels each slot "Image k:".
fn label_images(parts: Vec<Part>) -> Vec<Part> {
    let n = parts.iter().filter(|p| **p == Part::Image).count();
    if n < 2 {
        return parts;
    }
    let mut k = 0;
    let mut out = Vec::new();
    for p in parts {
        if p == Part::Image {
            k += 1;
            out.push(Part::Text(format!("Image {k}:")));
        }
        out.push(p);
    }
    out
}

/// A prompt as MGM sees it: text ids with image slots between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u32>),
    Image,
}

/// Tokenises a rendered prompt after `<bos>`. Text is text: a special-token string or `<image>`
/// in a message is encoded as ordinary text, so only the template writes turn markers and
/// slots. With `raw`, MGM's own way instead (for parity checks): the prompt is one string,
/// special-token strings in it become tokens and every `<image>` a slot
/// (`tokenizer_image_token`). Both give the same ids when messages hold neither.
pub fn pieces(tok: &super::Tokenizer, parts: Vec<Part>, raw: bool) -> crate::Result<Vec<Piece>> {
    let parts = label_images(parts);
    let mut out = vec![Piece::Text(vec![tok.bos])];
    if raw {
        let prompt: String = parts.iter().map(|p| match p { Part::Marker(m) => *m, Part::Text(t) => t.as_str(), Part::Image => IMAGE_TOKEN }).collect();
        for (k, chunk) in prompt.split(IMAGE_TOKEN).enumerate() {
            if k > 0 {
                out.push(Piece::Image);
            }
            push_text(&mut out, tok.encode(chunk, false)?);
        }
    } else {
        // Runs of text between markers and slots are tokenised whole (BPE merges across the
        // template's text and the message's, as in MGM's single string).
        let mut run = String::new();
        for p in &parts {
            match p {
                Part::Text(t) => run += t,
                Part::Marker(m) => {
                    push_text(&mut out, tok.encode_text(&std::mem::take(&mut run))?);
                    push_text(&mut out, vec![tok.special(m)?]);
                }
                Part::Image => {
                    push_text(&mut out, tok.encode_text(&std::mem::take(&mut run))?);
                    out.push(Piece::Image);
                }
            }
        }
        push_text(&mut out, tok.encode_text(&run)?);
    }
    Ok(out)
}

/// Appends ids to the prompt, joining them to the text before (one embedding lookup per run of
/// text, not per marker).
fn push_text(out: &mut Vec<Piece>, ids: Vec<u32>) {
    match out.last_mut() {
        Some(Piece::Text(prev)) => prev.extend(ids),
        _ if !ids.is_empty() => out.push(Piece::Text(ids)),
        _ => {}
    }
}

/// Ids of a prompt with MGM's sentinel -200 in each image slot (for --json and tests).
pub fn sentinel_ids(pieces: &[Piece]) -> Vec<i64> {
    pieces
        .iter()
        .flat_map(|p| match p {
            Piece::Text(ids) => ids.iter().map(|&i| i as i64).collect(),
            Piece::Image => vec![-200],
        })
        .collect()
}

/// The text-to-image prompt the model wrote, extracted as MGM's CLI does: the text after the
/// last `<h>` inside the piece that ends at the last `</h>`.
pub fn image_prompt(answer: &str) -> Option<String> {
    if !(answer.contains("<h>") && answer.contains("</h>")) {
        return None;
    }
    let parts: Vec<&str> = answer.split("</h>").collect();
    parts[parts.len() - 2].rsplit("<h>").next().map(str::to_string)
}
