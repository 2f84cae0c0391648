//! Progress is data: the library reports it, the CLI draws bars, the wasm layer forwards it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

pub type OnProgress<'a> = &'a mut dyn FnMut(Progress);
