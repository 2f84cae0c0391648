//! The browser engine: wasm-bindgen bindings over the library the CLI uses. JS (pkg/) fetches,
//! caches and hands over each shard's bytes; this side verifies and uploads them, then runs
//! chats. Every failure reaches JS as an `Error` whose `code` is [`MgmError::code`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::{MgmError, Result};
use crate::generate::chat::{chat, warm_up, ChatRequest, Conversation};
use crate::generate::{GenerateOptions, Sampling};
use crate::model::Mgm;
use crate::preprocess::Image;
use crate::text::template::{Role, Template};
use crate::text::Tokenizer;
use crate::weights::bundle::{BundleStore, Manifest};

fn js_error(e: MgmError) -> JsValue {
    let err = js_sys::Error::new(e.message());
    let _ = Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

unsafe extern "C" {
    /// The static constructors (cubecl registers its IR names through `inventory`), synthesized
    /// by the linker.
    fn __wasm_call_ctors();
}

/// Runs once, when the module is instantiated. It runs the static constructors itself: without
/// that explicit call the linker treats the module as a one-call "command" and wraps every
/// export, each callback from the browser included, in a call to all of them (most of the time
/// the CPU spent per kernel launch in a browser). A panic is a bug: say so in the console (the
/// module cannot continue after one).
#[wasm_bindgen(start)]
pub fn start() {
    // SAFETY: called once, before any other export runs; inventory's constructors only link
    // statics into its registries.
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| gloo::console::error!(format!("mgm: internal error (please report): {info}"))));
}

/// Bytes of wasm linear memory; it never shrinks, so this is the peak so far.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}

/// Resolves with the reason once the WebGPU device is lost; a chat or load waiting on the GPU
/// then never finishes, so the host races it against this.
#[wasm_bindgen(js_name = deviceLost)]
pub fn device_lost() -> js_sys::Promise {
    js_sys::Promise::new(&mut |resolve, _| crate::device::when_lost(move |why| drop(resolve.call1(&JsValue::NULL, &why.into()))))
}

/// A bundle being loaded: shards arrive in any order, each verified and uploaded at once.
#[wasm_bindgen]
pub struct Loading {
    store: BundleStore,
    tokenizer: Tokenizer,
    device: String,
}

#[wasm_bindgen]
impl Loading {
    /// Checks `manifest.json` and `tokenizer.json` and opens WebGPU, before any shard is fetched.
    pub async fn open(manifest: Vec<u8>, tokenizer: Vec<u8>) -> std::result::Result<Loading, JsValue> {
        let manifest = Manifest::parse(&manifest).map_err(js_error)?;
        let (device, desc) = crate::device::webgpu().await.map_err(js_error)?;
        let (store, tokenizer) = BundleStore::open(manifest, &tokenizer, &device).map_err(js_error)?;
        Ok(Loading { store, tokenizer, device: desc })
    }

    /// Uploads part `part` of tensor `tensor` (indices into the manifest's `tensors` and their
    /// `parts`) from its bytes, cut from a shard the caller verified against the manifest's
    /// size and sha256 (core.js does, with WebCrypto); the bytes are not kept.
    #[wasm_bindgen(js_name = addPart)]
    pub fn add_part(&mut self, tensor: usize, part: usize, bytes: &[u8]) -> std::result::Result<(), JsValue> {
        self.store.add_part(tensor, part, bytes).map_err(js_error)
    }

    /// Builds the engine; every shard must be in.
    pub fn finish(self) -> std::result::Result<Engine, JsValue> {
        let gpu = self.store.device().clone();
        let model = crate::load::from_store(self.store, &mut |_| {}).map_err(js_error)?;
        Ok(Engine { inner: Rc::new(Inner { model, tok: self.tokenizer, device: self.device, gpu, busy: Cell::new(false), conv: RefCell::default() }) })
    }
}

struct Inner {
    model: Mgm,
    tok: Tokenizer,
    device: String,
    gpu: burn::tensor::Device,
    busy: Cell<bool>,
    /// The KV cache and images of the conversation so far (follow-ups prefill only what is new).
    conv: RefCell<Conversation>,
}

#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

/// What `chat` takes, as JSON (pkg/src/core.js builds it from OpenAI-style messages).
#[derive(Deserialize)]
struct Request {
    /// `[role, text]`, role "user" or "assistant"; the last is the user's.
    turns: Vec<(String, String)>,
    /// Ask for a text-to-image prompt too (appends ` <GEN>`).
    #[serde(default)]
    image_prompt: bool,
    temperature: f32,
    top_p: f32,
    top_k: usize,
    max_tokens: usize,
    seed: u64,
    /// Return each image's mining attention.
    #[serde(default)]
    attention: bool,
    /// Parse messages as MGM does (special-token strings, `<image>`) instead of as text.
    #[serde(default)]
    raw_prompt: bool,
}

#[wasm_bindgen]
impl Engine {
    /// The device and the model's sizes, as JSON.
    pub fn info(&self) -> String {
        let c = &self.inner.model.config;
        serde_json::json!({
            "device": self.inner.device,
            "vocab_size": c.gemma.vocab_size,
            "layers": c.gemma.num_hidden_layers,
            "context": c.max_length,
            "vision": c.vision.is_some(),
            "subgroups": crate::device::subgroup_size(),
        })
        .to_string()
    }

    /// GPU memory held by the engine's pool, as JSON `{"in_use", "reserved"}` in bytes (what a
    /// long session watches for leaks).
    pub fn memory(&self) -> String {
        let u = self.inner.gpu.memory_pool_usage();
        serde_json::json!({ "in_use": u.as_ref().map(|u| u.bytes_in_use), "reserved": u.map(|u| u.bytes_reserved) }).to_string()
    }

    /// A tiny request with an image down the whole path, so every shader a question needs is
    /// compiled during load (the `compile` phase), not in the first answer.
    pub fn warmup(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            warm_up(&inner.model, &inner.tok).await.map_err(js_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Forgets the conversation's KV cache and images (a new chat).
    pub fn reset(&self) -> std::result::Result<(), JsValue> {
        if self.inner.busy.get() {
            return Err(js_error(MgmError::Input("the engine is answering; abort it before starting a new chat".into())));
        }
        self.inner.conv.borrow_mut().clear();
        Ok(())
    }

    /// Runs one chat. `images`: each a `Uint8Array` of file bytes or `{width, height, data}` RGBA
    /// pixels. `on_token(text, id)` sees each token; returning `false` stops. Resolves to the
    /// reply (text, ids, finish_reason, usage, image_prompt, images with mining attention).
    pub fn chat(&self, request: String, images: Array, on_token: Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            if inner.busy.replace(true) {
                return Err(js_error(MgmError::Input("the engine is already answering; wait for it or abort it first".into())));
            }
            let out = run_chat(&inner, &request, &images, &on_token).await;
            inner.busy.set(false);
            out.map_err(js_error)
        })
    }
}

fn image_from_js(v: &JsValue, k: usize) -> Result<Image> {
    if let Some(bytes) = v.dyn_ref::<Uint8Array>() {
        return Ok(Image::Encoded(bytes.to_vec()));
    }
    let get = |key: &str| Reflect::get(v, &key.into()).ok();
    match (get("width").and_then(|w| w.as_f64()), get("height").and_then(|h| h.as_f64()), get("data")) {
        (Some(w), Some(h), Some(data)) if data.is_object() => {
            Ok(Image::Rgba { width: w as usize, height: h as usize, data: Uint8Array::new(&data).to_vec() })
        }
        _ => Err(MgmError::Input(format!("image {}: expected file bytes (Uint8Array) or RGBA pixels {{width, height, data}}", k + 1))),
    }
}

async fn run_chat(inner: &Inner, request: &str, images: &Array, on_token: &Function) -> Result<JsValue> {
    let req: Request = serde_json::from_str(request).map_err(|e| MgmError::Input(format!("chat request: {e}")))?;
    let turns = req
        .turns
        .into_iter()
        .map(|(role, text)| match role.as_str() {
            "user" => Ok((Role::User, text)),
            "assistant" | "model" => Ok((Role::Model, text)),
            other => Err(MgmError::Input(format!("unknown message role {other:?} (expected user or assistant)"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let images = images.iter().enumerate().map(|(k, v)| image_from_js(&v, k)).collect::<Result<Vec<_>>>()?;
    let request = ChatRequest {
        turns,
        images,
        template: Template::Gemma,
        gen_prompt: req.image_prompt,
        raw_prompt: req.raw_prompt,
        options: GenerateOptions {
            max_new_tokens: req.max_tokens,
            sampling: Sampling { temperature: req.temperature, top_p: req.top_p, top_k: req.top_k, seed: req.seed },
            stop_ids: inner.tok.stop_ids(),
            prompt_logits: false,
        },
        attention: req.attention,
        keep_aux: false,
    };
    let mut thrown = None;
    // `busy` keeps any other call away from the conversation while this one awaits.
    let mut conv = inner.conv.borrow_mut();
    let reply = chat(&mut conv, &inner.model, &inner.tok, &request, &mut |id, text| match on_token.call2(&JsValue::NULL, &text.into(), &id.into()) {
        Ok(go) => go.as_bool() != Some(false),
        Err(e) => {
            thrown = Some(e);
            false
        }
    })
    .await?;
    if let Some(e) = thrown {
        return Err(MgmError::Input(format!("the onToken callback threw: {}", e.as_string().unwrap_or_else(|| format!("{e:?}")))));
    }
    let json = reply.to_json(None);
    let out = js_sys::JSON::parse(&json.to_string()).map_err(|_| MgmError::Format("reply JSON".into()))?;
    let per_image = Array::new();
    for (k, image) in reply.prompt.images.iter().enumerate() {
        let [tokens, window2] = image.attention.dims();
        let entry = js_sys::Object::new();
        let _ = Reflect::set(&entry, &"tokens".into(), &(tokens as f64).into());
        let _ = Reflect::set(&entry, &"window".into(), &((window2 as f64).sqrt().round()).into());
        if let Some(a) = reply.attention.get(k) {
            let _ = Reflect::set(&entry, &"attention".into(), &Float32Array::from(a.as_slice()).into());
        }
        per_image.push(&entry);
    }
    let _ = Reflect::set(&out, &"images".into(), &per_image);
    Ok(out)
}
