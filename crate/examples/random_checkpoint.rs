//! Writes a full-size MGM-2B-shaped checkpoint with random bf16 weights: the released layout
//! (spec section 6: 912 tensors, two shards and model.safetensors.index.json, lm_head stored as a
//! copy of the embedding), for converter and loader measurements. Not committed: ~7 GB.
//!
//! cargo run -p mgm --example random_checkpoint -- OUT_DIR TOKENIZER_JSON

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use mgm::rng::Rng;

fn names() -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("lm_head.weight".into(), vec![256000, 2048]),
        ("model.embed_tokens.weight".into(), vec![256000, 2048]),
        ("model.norm.weight".into(), vec![2048]),
    ];
    for l in 0..18 {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![2048]),
            ("post_attention_layernorm.weight", vec![2048]),
            ("self_attn.q_proj.weight", vec![2048, 2048]),
            ("self_attn.k_proj.weight", vec![256, 2048]),
            ("self_attn.v_proj.weight", vec![256, 2048]),
            ("self_attn.o_proj.weight", vec![2048, 2048]),
            ("mlp.gate_proj.weight", vec![16384, 2048]),
            ("mlp.up_proj.weight", vec![16384, 2048]),
            ("mlp.down_proj.weight", vec![2048, 16384]),
        ] {
            v.push((format!("{p}.{n}"), s));
        }
    }
    let p = "model.vision_tower.vision_tower.vision_model";
    v.push((format!("{p}.embeddings.class_embedding"), vec![1024]));
    v.push((format!("{p}.embeddings.patch_embedding.weight"), vec![1024, 3, 14, 14]));
    v.push((format!("{p}.embeddings.position_embedding.weight"), vec![577, 1024]));
    for n in ["pre_layrnorm", "post_layernorm"] {
        v.push((format!("{p}.{n}.weight"), vec![1024]));
        v.push((format!("{p}.{n}.bias"), vec![1024]));
    }
    for j in 0..24 {
        let q = format!("{p}.encoder.layers.{j}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            v.push((format!("{q}.self_attn.{n}.weight"), vec![1024, 1024]));
            v.push((format!("{q}.self_attn.{n}.bias"), vec![1024]));
        }
        for n in ["layer_norm1", "layer_norm2"] {
            v.push((format!("{q}.{n}.weight"), vec![1024]));
            v.push((format!("{q}.{n}.bias"), vec![1024]));
        }
        v.push((format!("{q}.mlp.fc1.weight"), vec![4096, 1024]));
        v.push((format!("{q}.mlp.fc1.bias"), vec![4096]));
        v.push((format!("{q}.mlp.fc2.weight"), vec![1024, 4096]));
        v.push((format!("{q}.mlp.fc2.bias"), vec![1024]));
    }
    let a = "model.vision_tower_aux";
    let dims = [192, 384, 768, 1536];
    v.push((format!("{a}.vision_stem.0.weight"), vec![192, 3, 4, 4]));
    v.push((format!("{a}.vision_stem.0.bias"), vec![192]));
    v.push((format!("{a}.vision_stem.1.weight"), vec![192]));
    v.push((format!("{a}.vision_stem.1.bias"), vec![192]));
    for (s, (&c, depth)) in dims.iter().zip([3, 3, 27, 3]).enumerate() {
        let q = format!("{a}.vision_stages.{s}");
        if s > 0 {
            v.push((format!("{q}.downsample.0.weight"), vec![dims[s - 1]]));
            v.push((format!("{q}.downsample.0.bias"), vec![dims[s - 1]]));
            v.push((format!("{q}.downsample.1.weight"), vec![c, dims[s - 1], 2, 2]));
            v.push((format!("{q}.downsample.1.bias"), vec![c]));
        }
        for b in 0..depth {
            let r = format!("{q}.blocks.{b}");
            v.push((format!("{r}.conv_dw.weight"), vec![c, 1, 7, 7]));
            v.push((format!("{r}.conv_dw.bias"), vec![c]));
            v.push((format!("{r}.norm.weight"), vec![c]));
            v.push((format!("{r}.norm.bias"), vec![c]));
            v.push((format!("{r}.mlp.fc1.weight"), vec![4 * c, c]));
            v.push((format!("{r}.mlp.fc1.bias"), vec![4 * c]));
            v.push((format!("{r}.mlp.fc2.weight"), vec![c, 4 * c]));
            v.push((format!("{r}.mlp.fc2.bias"), vec![c]));
            v.push((format!("{r}.gamma"), vec![c]));
        }
    }
    v.push(("model.mm_projector.0.weight".into(), vec![2048, 1024]));
    v.push(("model.mm_projector.0.bias".into(), vec![2048]));
    v.push(("model.mm_projector.2.weight".into(), vec![2048, 2048]));
    v.push(("model.mm_projector.2.bias".into(), vec![2048]));
    for (n, d_in) in [("vlm_uni_query_projector", 1024), ("vlm_uni_aux_projector", 2880), ("vlm_uni_val_projector", 2880)] {
        v.push((format!("model.{n}.0.weight"), vec![d_in]));
        v.push((format!("model.{n}.0.bias"), vec![d_in]));
        v.push((format!("model.{n}.1.weight"), vec![1024, d_in]));
        v.push((format!("model.{n}.1.bias"), vec![1024]));
    }
    v
}

/// One safetensors file, streamed: header from the shapes, then the values tensor by tensor.
fn write_shard(path: &Path, tensors: &[(String, Vec<usize>)], rng: &mut Rng) -> std::io::Result<u64> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        header.insert(name.clone(), serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}));
        offset += 2 * n;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut h = serde_json::to_vec(&header)?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut w = BufWriter::with_capacity(1 << 24, File::create(path)?);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    let mut embedding: Option<Vec<u8>> = None;
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        // lm_head is a copy of the embedding, as in the released checkpoint.
        if (name == "lm_head.weight" || name == "model.embed_tokens.weight") && let Some(e) = &embedding {
            w.write_all(e)?;
            continue;
        }
        let a = if shape.len() > 1 { (3.0 / shape[1..].iter().product::<usize>() as f32).sqrt() } else { 0.1 };
        let bytes: Vec<u8> = (0..n).flat_map(|_| half::bf16::from_f32(a * (2.0 * rng.uniform() - 1.0)).to_le_bytes()).collect();
        w.write_all(&bytes)?;
        if name == "lm_head.weight" || name == "model.embed_tokens.weight" {
            embedding = Some(bytes);
        }
    }
    w.flush()?;
    Ok(offset as u64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, tokenizer] = args.as_slice() else { return Err("usage: random_checkpoint OUT_DIR TOKENIZER_JSON".into()) };
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    let all = names();
    assert_eq!(all.len(), 912, "the released checkpoint has 912 tensors");
    // Two shards like the release: the embedding, its lm_head copy and the first layers, then the rest.
    let split = all.iter().position(|(n, _)| n.starts_with("model.layers.9.")).unwrap_or(all.len() / 2);
    let mut rng = Rng::new(2024);
    let mut map = serde_json::Map::new();
    let mut total = 0;
    for (i, part) in [&all[..split], &all[split..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        total += write_shard(&out.join(&file), part, &mut rng)?;
        for (n, _) in part.iter() {
            map.insert(n.clone(), file.clone().into());
        }
        eprintln!("wrote {file}");
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    std::fs::write(out.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&index)?)?;
    let config = serde_json::json!({
        "architectures": ["MGMGemmaForCausalLM"], "model_type": "mgm_gemma", "vocab_size": 256000,
        "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18, "num_attention_heads": 8,
        "num_key_value_heads": 1, "head_dim": 256, "hidden_act": "gelu", "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
        "torch_dtype": "bfloat16", "mm_hidden_size": 1024, "mm_hidden_size_aux": 2880, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_use_im_start_end": false,
        "mm_use_im_patch_token": false, "image_aspect_ratio": "pad", "image_size_aux": 768, "image_grid": 1,
        "image_global": false, "tokenizer_model_max_length": 2048,
        "mm_vision_tower": "model_zoo/OpenAI/clip-vit-large-patch14-336",
        "mm_vision_tower_aux": "model_zoo/OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup"
    });
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    std::fs::copy(tokenizer, out.join("tokenizer.json"))?;
    eprintln!("{}: 912 tensors, {:.2} GB of bf16", out.display(), total as f64 / 1e9);
    Ok(())
}
