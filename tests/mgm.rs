//! The vision half and the full MGM forward against the fixture generator's references: CLIP
//! (transformers 4.38), ConvNeXt stages (timm), the HR map, mining (a transcription of MGM's
//! unified_resampler), projected embeddings, end-to-end logits and greedy ids; every backend.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{assert_close, devices, fixture, read, request, Reference};
use mgm::generate::chat::{chat, ChatRequest, Conversation};
use mgm::generate::prompt::Prompt;
use mgm::preprocess::Image;
use mgm::generate::{generate, GenerateOptions, Sampling};
use mgm::model::gemma::Logits;
use mgm::model::mining::{windows, PatchMining};
use mgm::text::template::{image_prompt, Role};
use mgm::load::dir as load_dir;
use serde_json::Value;

const TOL: f32 = 1e-4;

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("mgm_tiny/meta.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn vision_path_matches_the_reference_stage_by_stage() {
    for (dev, device) in devices() {
        let (mut model, _) = load_dir(&fixture("mgm_tiny"), &device, &mut |_| {}).unwrap();
        // Mine one row of windows at a time, as the full-size model does to stay within WebGPU
        // binding limits, so the band code is what is checked.
        model.vision.as_mut().unwrap().band_bytes = 1;
        let vision = model.vision.as_ref().unwrap();
        let r = Reference::open("mgm_tiny");
        for i in 0..2 {
            let key = |k: &str| format!("image{i}.{k}");
            let hr = Tensor::<1>::from_data(TensorData::new(r.f32(&key("pixels")), [3 * 128 * 128]), &device).reshape([1, 3, 128, 128]);
            let channels_last = hr.clone().squeeze_dim::<3>(0).permute([1, 2, 0]);
            for (s, stage) in vision.convnext.stages(channels_last).into_iter().enumerate() {
                assert_close(&format!("{dev} image{i} convnext stage {s}"), &read(stage.permute([2, 0, 1])), &r.f32(&key(&format!("stage{s}"))), TOL);
            }
            let f = vision.encode(hr.clone(), true);
            assert_close(&format!("{dev} image{i} clip"), &read(f.clip.clone()), &r.f32(&key("clip_features")), TOL);
            assert_close(&format!("{dev} image{i} HR map"), &read(f.aux.clone().unwrap()), &r.f32(&key("aux_features")), TOL);
            assert_close(&format!("{dev} image{i} mining attention"), &read(f.attention.clone()), &r.f32(&key("mining_attention")), TOL);
            assert_close(&format!("{dev} image{i} image embeds"), &read(f.embeds.clone()), &r.f32(&key("image_embeds")), TOL);

            // The fast mining form equals the direct one (spec §2.2).
            let direct = vision.encode_mining_with(hr, false, PatchMining::forward_direct);
            assert_close(&format!("{dev} image{i} fast vs direct mining"), &read(f.embeds), &read(direct.embeds), 1e-5);
            assert_close(&format!("{dev} image{i} fast vs direct attention"), &read(f.attention), &read(direct.attention), 1e-5);
        }
    }
}

#[test]
fn windows_follow_mgms_token_and_pixel_order() {
    // X_H[y, x, c] = 1000 y + x on a 4x4 map with 2x2 windows: token n = 2r + c owns rows 2r..2r+1
    // and columns 2c..2c+1, pixel m = 2 dy + dx (spec §2.1 step 6).
    let (_, device) = devices().remove(0);
    let v: Vec<f32> = (0..16).map(|i| (1000 * (i / 4) + i % 4) as f32).collect();
    let hr = Tensor::<1>::from_data(TensorData::new(v, [16]), &device).reshape([4, 4, 1]);
    let got = read(windows(hr, 2));
    assert_eq!(got, vec![0., 1., 1000., 1001., 2., 3., 1002., 1003., 2000., 2001., 3000., 3001., 2002., 2003., 3002., 3003.]);
}

#[test]
fn end_to_end_logits_and_greedy_ids_match() {
    let meta = meta();
    for (dev, device) in devices() {
        let (model, tok) = load_dir(&fixture("mgm_tiny"), &device, &mut |_| {}).unwrap();
        for (case, want) in meta["cases"].as_object().unwrap() {
            let images: Vec<Image> = want["images"].as_array().unwrap().iter()
                .map(|n| Image::Encoded(std::fs::read(fixture("images").join(n.as_str().unwrap())).unwrap())).collect();
            let gen_prompt = want["gen"].as_bool().unwrap();
            let turns: Vec<(Role, &str)> = want["turns"].as_array().unwrap().iter()
                .map(|t| (if t[0] == "user" { Role::User } else { Role::Model }, t[1].as_str().unwrap())).collect();
            let req = ChatRequest { gen_prompt, ..request(&turns, images) };
            let prompt = Prompt::chat(&model, &tok, &req, &mut Default::default()).unwrap();
            assert_eq!(prompt.ids(), ids(&want["prompt_ids"]), "{dev} {case} prompt ids");
            let embeds = prompt.embed(&model).unwrap();
            if case == "one_image" {
                let mut cache = model.gemma.new_cache(embeds.dims()[0]);
                let logits = model.gemma.forward(embeds.clone(), &mut cache, Logits::All);
                assert_close(&format!("{dev} one_image logits"), &read(logits), &Reference::open("mgm_tiny").f32("one_image.logits"), TOL);
            }
            let opts = GenerateOptions { max_new_tokens: 16, sampling: Sampling::default(), stop_ids: tok.stop_ids(), prompt_logits: false };
            let out = pollster::block_on(generate(&model.gemma, embeds, &opts, &mut |_| true)).unwrap();
            let got: Vec<i64> = out.ids.iter().map(|&i| i as i64).collect();
            assert_eq!(got, ids(&want["generated_ids"]), "{dev} {case} greedy ids");
        }
    }
}

#[test]
fn image_prompt_is_extracted_like_mgms_cli() {
    for case in meta()["image_prompt_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(image_prompt(text).as_deref(), case["image_prompt"].as_str(), "{text:?}");
    }
}

#[test]
fn prompts_that_do_not_fit_are_errors() {
    let (_, device) = devices().remove(0);
    let (model, tok) = load_dir(&fixture("mgm_tiny"), &device, &mut |_| {}).unwrap();
    let img = std::fs::read(fixture("images/portrait.png")).unwrap();
    // 16 image tokens + text over tokenizer_model_max_length (200): an error, never a silent cut.
    let long = "word ".repeat(300);
    let prompt = Prompt::chat(&model, &tok, &request(&[(Role::User, &long)], vec![Image::Encoded(img.clone())]), &mut Default::default()).unwrap();
    let err = prompt.embed(&model).unwrap_err();
    assert!(err.message().contains("at most 200"), "{err}");
    let err = Prompt::chat(&model, &tok, &request(&[(Role::User, "hi")], vec![Image::Encoded(b"not an image".to_vec())]), &mut Default::default()).err().unwrap();
    assert!(err.message().starts_with("image 1: not an image"), "{err}");
    let (gemma_only, tok) = load_dir(&fixture("gemma_mqa"), &device, &mut |_| {}).unwrap();
    let err = Prompt::chat(&gemma_only, &tok, &request(&[(Role::User, "hi")], vec![Image::Encoded(img)]), &mut Default::default()).err().unwrap();
    assert!(err.message().contains("no vision tower"), "{err}");
}

#[test]
fn follow_ups_reuse_the_cache_and_give_the_reference_ids() {
    let want = &meta()["cases"]["multi_turn"];
    let turns: Vec<(Role, String)> = want["turns"].as_array().unwrap().iter()
        .map(|t| (if t[0] == "user" { Role::User } else { Role::Model }, t[1].as_str().unwrap().to_string())).collect();
    let image = || Image::Encoded(std::fs::read(fixture("images").join(want["images"][0].as_str().unwrap())).unwrap());
    for (dev, device) in devices() {
        let (model, tok) = load_dir(&fixture("mgm_tiny"), &device, &mut |_| {}).unwrap();
        // As `common::request`, but stopping where the reference did.
        let options = GenerateOptions { max_new_tokens: 16, sampling: Sampling::default(), stop_ids: tok.stop_ids(), prompt_logits: false };
        let request = |turns: &[(Role, String)], images| ChatRequest::new(turns.to_vec(), images, options.clone());
        let mut conv = Conversation::default();
        let ask = |conv: &mut Conversation, req: &ChatRequest| pollster::block_on(chat(conv, &model, &tok, req, &mut |_, _| true)).unwrap();
        // The first question, then the follow-up: its prefix up to the model's turn is cached,
        // the image is not encoded again, and the ids are transformers' for the whole conversation.
        let first = ask(&mut conv, &request(&turns[..1], vec![image()]));
        assert_eq!(first.generation.timings.cached_tokens, 0, "{dev}: a new conversation has nothing cached");
        let follow = ask(&mut conv, &request(&turns, vec![image()]));
        let t = &follow.generation.timings;
        let got: Vec<i64> = follow.generation.ids.iter().map(|&i| i as i64).collect();
        assert_eq!(got, ids(&want["generated_ids"]), "{dev}: follow-up greedy ids");
        assert!(t.cached_tokens > 16, "{dev}: the image and first turn come from the cache ({} cached)", t.cached_tokens);
        assert_eq!(t.cached_tokens + t.prompt_tokens, ids(&want["prompt_ids"]).len() + 15, "{dev}: every position is cached or prefilled");
        assert_eq!(follow.image_ms, 0.0, "{dev}: the image is not encoded again");
        // Regenerate: the same request again prefills one position and answers the same.
        let again = ask(&mut conv, &request(&turns, vec![image()]));
        assert_eq!(again.generation.timings.prompt_tokens, 1, "{dev}: regenerate prefills only the last position");
        assert_eq!(again.generation.ids, follow.generation.ids, "{dev}: regenerated ids");
        // A new conversation (Clear) starts from nothing and still agrees.
        conv.clear();
        let fresh = ask(&mut conv, &request(&turns, vec![image()]));
        assert_eq!(fresh.generation.timings.cached_tokens, 0);
        assert_eq!(fresh.generation.ids, follow.generation.ids, "{dev}: fresh recompute");
    }
}
