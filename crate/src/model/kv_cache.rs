//! Preallocated per-layer keys and values. The position of the next token is the fill level.

use burn::tensor::{Device, Tensor};

pub struct KvCache {
    keys: Vec<Tensor<4>>,
    values: Vec<Tensor<4>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// `[1, kv_heads, capacity, head_dim]` per layer, zero-filled.
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize, device: &Device) -> Self {
        let empty = || Tensor::<4>::zeros([1, kv_heads, capacity, head_dim], device);
        KvCache {
            keys: (0..layers).map(|_| empty()).collect(),
            values: (0..layers).map(|_| empty()).collect(),
            len: 0,
            capacity,
        }
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

    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Writes `k`, `v` (`[1, kv_heads, n, head_dim]`) for `layer` at the fill level and returns
    /// all keys and values so far. The caller checks capacity; `advance` moves the level once
    /// every layer has written.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [_, heads, n, dim] = k.dims();
        let (start, end) = (self.len, self.len + n);
        let write = |cache: &mut Tensor<4>, x: Tensor<4>| {
            cache.inplace(|c| c.slice_assign([0..1, 0..heads, start..end, 0..dim], x));
            cache.clone().slice([0..1, 0..heads, 0..end, 0..dim])
        };
        (write(&mut self.keys[layer], k), write(&mut self.values[layer], v))
    }

    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
