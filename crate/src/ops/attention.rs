//! Attention: Gemma's causal self-attention with rotary embeddings and the KV cache, and CLIP's
//! full attention. On wgpu three launches (rotate and append, scores, softmax-weighted sum); on
//! flex the textbook form in Burn ops.

use burn::tensor::{Device, Tensor, TensorData};

use super::kernels::{self, attention::Sources};

/// Head counts and size: query heads, key/value heads (query head h reads kv head h / (heads /
/// kv_heads)) and the size of each.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
}

/// Rotate-half (NeoX) rotary embedding tables, `[max_positions, head_dim / 2]`.
#[derive(Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, max_positions: usize, device: &Device) -> Self {
        // f32 like transformers: inv_freq[i] = theta^(-2i/d), angle = pos * inv_freq.
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let angles = || (0..max_positions).flat_map(|pos| inv.iter().map(move |f| pos as f32 * f));
        let table = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [max_positions, half]), device);
        Rope { cos: table(angles().map(f32::cos).collect()), sin: table(angles().map(f32::sin).collect()) }
    }
}

/// Preallocated per-layer keys and values, `[kv_heads, capacity, head_dim]`; the position of the
/// next token is the fill level. It grows when a request needs more room.
pub struct KvCache {
    keys: Vec<Tensor<3>>,
    values: Vec<Tensor<3>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize, device: &Device) -> Self {
        let empty = || Tensor::<3>::zeros([kv_heads, capacity, head_dim], device);
        KvCache { keys: (0..layers).map(|_| empty()).collect(), values: (0..layers).map(|_| empty()).collect(), len: 0, capacity }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Room for `total` positions, keeping what is cached.
    pub fn reserve(&mut self, total: usize) {
        if total <= self.capacity {
            return;
        }
        let grow = |t: &mut Tensor<3>| {
            let [kv, _, d] = t.dims();
            let bigger = Tensor::<3>::zeros([kv, total, d], &t.device());
            *t = bigger.slice_assign([0..kv, 0..self.capacity, 0..d], t.clone());
        };
        self.keys.iter_mut().for_each(grow);
        self.values.iter_mut().for_each(grow);
        self.capacity = total;
    }

    /// Called once every layer has appended `n` positions.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// Causal self-attention of `n` new rows after the cache's `len` positions: `qkv` `[n, (heads +
/// 2 kv_heads) * dim]` (q, k, v side by side); q and k are rotated for positions `len..len+n`,
/// k and v appended to `cache` for `layer`. Returns `[n, heads * dim]`. The caller reserves room
/// and advances the cache after the last layer.
pub fn causal_self_attention(qkv: Tensor<2>, h: Heads, rope: &Rope, cache: &mut KvCache, layer: usize) -> Tensor<2> {
    let n = qkv.dims()[0];
    let start = cache.len;
    assert!(start + n <= cache.capacity, "KV cache: {} + {n} positions exceed its capacity {}", start, cache.capacity);
    if !super::uses_kernels(&qkv.device()) {
        return reference::causal_self_attention(qkv, h, rope, cache, layer);
    }
    let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
    let q = kernels::attention::launch_rope_append(qkv, &rope.cos, &rope.sin, keys, values, h.heads, start);
    let cap = cache.capacity;
    let src = Sources {
        q: (q, [0, h.heads * h.dim, h.dim]),
        k: (keys.clone(), [0, h.dim, cap * h.dim]),
        v: (values.clone(), [0, h.dim, cap * h.dim]),
    };
    kernels::attention::launch_attention(src, n, start + n, h.heads, h.kv_heads, h.dim, true)
}

/// Full (bidirectional) attention over `qkv` `[n, 3 * heads * dim]`: `[n, heads * dim]`.
pub fn attention(qkv: Tensor<2>, heads: usize) -> Tensor<2> {
    let [n, width] = qkv.dims();
    let dim = width / (3 * heads);
    if !super::uses_kernels(&qkv.device()) {
        return reference::attention(qkv, heads);
    }
    let row = 3 * heads * dim;
    let as3 = |t: Tensor<2>| t.reshape([1, n, width]);
    let src = Sources {
        q: (qkv.clone(), [0, row, dim]),
        k: (as3(qkv.clone()), [heads * dim, row, dim]),
        v: (as3(qkv), [2 * heads * dim, row, dim]),
    };
    kernels::attention::launch_attention(src, n, n, heads, heads, dim, false)
}

/// Patch info mining's attention (spec §2.2): each token attends to the pixels of its own window,
/// LayerNorm-normalised (no affine), with the key projection folded into `u`: p = softmax(scale ·
/// LN(x_ti) · u_t) over `windows` `[n, m, c]`. Returns (Σ_i p_i LN(x_ti) `[n, c]`, p `[n, m]`).
pub fn window_attention(windows: Tensor<3>, u: Tensor<2>, scale: f64, eps: f64) -> (Tensor<2>, Tensor<2>) {
    if super::uses_kernels(&windows.device()) {
        return kernels::window::launch(windows, u, scale, eps);
    }
    reference::window_attention(windows, u, scale, eps)
}

pub mod reference {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Bool, Device, Tensor, TensorData};

    use super::{Heads, KvCache, Rope};

    /// x `[1, heads, n, d]` at positions `start..start+n`.
    fn rotate(rope: &Rope, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [_, _, n, d] = x.dims();
        let table = |t: &Tensor<2>| {
            let t = t.clone().slice([start..start + n, 0..d / 2]);
            Tensor::cat(vec![t.clone(), t], 1).unsqueeze::<4>()
        };
        let (cos, sin) = (table(&rope.cos), table(&rope.sin));
        let first = x.clone().slice_dim(3, 0..d / 2);
        let second = x.clone().slice_dim(3, d / 2..d);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * cos + rotated * sin
    }

    /// softmax(q kᵀ / sqrt(d) + mask) v over `[1, heads, n, d]`; `mask` is true where a query
    /// must not look.
    fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<4> {
        let d = q.dims()[3];
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
        let scores = match mask {
            Some(m) => scores.mask_fill(m, f32::NEG_INFINITY),
            None => scores,
        };
        softmax(scores, 3).matmul(v)
    }

    /// True where query i (at position start+i) must not see key j: j > start + i.
    fn causal_mask(n: usize, start: usize, device: &Device) -> Tensor<4, Bool> {
        let total = start + n;
        let mask: Vec<bool> = (0..n).flat_map(|i| (0..total).map(move |j| j > start + i)).collect();
        Tensor::<2, Bool>::from_data(TensorData::new(mask, [n, total]), device).unsqueeze::<4>()
    }

    /// `[n, heads * dim]` -> `[1, heads, n, dim]`.
    fn split(t: Tensor<2>, heads: usize) -> Tensor<4> {
        let [n, w] = t.dims();
        t.reshape([1, n, heads, w / heads]).swap_dims(1, 2)
    }

    fn merge(t: Tensor<4>) -> Tensor<2> {
        let [_, heads, n, d] = t.dims();
        t.swap_dims(1, 2).reshape([n, heads * d])
    }

    pub fn causal_self_attention(qkv: Tensor<2>, h: Heads, rope: &Rope, cache: &mut KvCache, layer: usize) -> Tensor<2> {
        let n = qkv.dims()[0];
        let device = qkv.device();
        let (qw, kw) = (h.heads * h.dim, h.kv_heads * h.dim);
        let start = cache.len;
        let q = rotate(rope, split(qkv.clone().slice_dim(1, 0..qw), h.heads), start);
        let k = rotate(rope, split(qkv.clone().slice_dim(1, qw..qw + kw), h.kv_heads), start);
        let v = split(qkv.slice_dim(1, qw + kw..qw + 2 * kw), h.kv_heads);
        let total = start + n;
        let write = |cache: &mut Tensor<3>, x: Tensor<4>| {
            let x = x.squeeze_dim::<3>(0);
            cache.inplace(|c| c.slice_assign([0..h.kv_heads, start..total, 0..h.dim], x));
            cache.clone().slice([0..h.kv_heads, 0..total, 0..h.dim]).unsqueeze::<4>()
        };
        let k = write(&mut cache.keys[layer], k);
        let v = write(&mut cache.values[layer], v);
        // Grouped-query: query head i reads kv head i / (heads / kv_heads).
        let group = h.heads / h.kv_heads;
        let expand = |t: Tensor<4>| {
            if group == 1 {
                return t;
            }
            t.unsqueeze_dim::<5>(2).expand([1, h.kv_heads, group, total, h.dim]).reshape([1, h.heads, total, h.dim])
        };
        let mask = (n > 1).then(|| causal_mask(n, start, &device));
        merge(attend(q, expand(k), expand(v), mask))
    }

    pub fn window_attention(windows: Tensor<3>, u: Tensor<2>, scale: f64, eps: f64) -> (Tensor<2>, Tensor<2>) {
        let [n, m, c] = windows.dims();
        let ones = Tensor::<1>::ones([c], &windows.device());
        let normed = burn::tensor::module::layer_norm(windows.reshape([n * m, c]), ones, None, eps).reshape([n, m, c]);
        let p = softmax(normed.clone().matmul(u.unsqueeze_dim::<3>(2)).reshape([n, 1, m]) * scale, 2);
        (p.clone().matmul(normed).reshape([n, c]), p.reshape([n, m]))
    }

    pub fn attention(qkv: Tensor<2>, heads: usize) -> Tensor<2> {
        let w = qkv.dims()[1] / 3;
        let part = |i: usize| split(qkv.clone().slice_dim(1, i * w..(i + 1) * w), heads);
        merge(attend(part(0), part(1), part(2), None))
    }
}
