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

/// Renders a conversation that ends with a user turn, opening the model's turn. Completed
/// model turns end with a literal `<eos>`, as in MGM's training data.
pub fn render(template: Template, turns: &[(Role, &str)]) -> String {
    match template {
        Template::None => turns.iter().map(|(_, t)| *t).collect::<Vec<_>>().concat(),
        Template::Gemma => {
            let mut s = String::new();
            for (role, text) in turns {
                match role {
                    Role::User => s += &format!("<start_of_turn>user\n{text}<end_of_turn>\n"),
                    Role::Model => s += &format!("<start_of_turn>model\n{text}<end_of_turn>\n<eos>"),
                }
            }
            s + "<start_of_turn>model\n"
        }
    }
}

pub const IMAGE_TOKEN: &str = "<image>";
/// Appended to the user's text to ask for an image-generation prompt (`--gen`).
pub const GEN_SUFFIX: &str = " <GEN>";

/// With two or more images, MGM's CLI labels each slot of the whole prompt "Image k:".
pub fn label_images(prompt: &str) -> String {
    let parts: Vec<&str> = prompt.split(IMAGE_TOKEN).collect();
    if parts.len() < 3 {
        return prompt.to_string();
    }
    let mut out = String::new();
    for (k, part) in parts.iter().enumerate() {
        out += part;
        if k + 1 < parts.len() {
            out += &format!("Image {}:{IMAGE_TOKEN}", k + 1);
        }
    }
    out
}

/// A prompt as MGM sees it: text ids with image slots between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u32>),
    Image,
}

/// MGM's `tokenizer_image_token`: each chunk between `<image>`s is tokenised on its own (with
/// its `<bos>` dropped) and `<bos>` starts the prompt once.
pub fn pieces(tok: &super::Tokenizer, prompt: &str) -> crate::Result<Vec<Piece>> {
    let mut out = vec![Piece::Text(vec![tok.bos])];
    for (k, chunk) in prompt.split(IMAGE_TOKEN).enumerate() {
        if k > 0 {
            out.push(Piece::Image);
        }
        let ids = tok.encode(chunk, false)?;
        if !ids.is_empty() {
            out.push(Piece::Text(ids));
        }
    }
    Ok(out)
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
