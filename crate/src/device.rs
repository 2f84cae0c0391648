//! Device choice and a clock: the only place that knows which platform it runs on.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use cubecl::wgpu::wgpu;

use crate::error::{MgmError, Result};

/// Where the model runs. `Cpu` is Burn's pure-Rust flex backend (native only); `Wgpu` is
/// WebGPU in browsers and Vulkan/Metal/DX12 natively, with WGSL kernels everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Wgpu,
}

impl FromStr for Backend {
    type Err = MgmError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "wgpu" => Ok(Backend::Wgpu),
            other => Err(MgmError::Input(format!("unknown backend {other:?} (expected cpu or wgpu)"))),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::OnceLock;
    use std::time::Instant;

    use burn::tensor::Device;

    use super::Backend;
    use crate::error::{MgmError, Result};

    /// The wgpu runtime can be set up once per process; later calls share it.
    static WGPU: OnceLock<std::result::Result<(Device, String), String>> = OnceLock::new();

    /// The device and a one-line description of it (adapter name and API for wgpu).
    pub fn init(backend: Backend) -> Result<(Device, String)> {
        match backend {
            Backend::Cpu => Ok((Device::flex(), "cpu (flex)".into())),
            Backend::Wgpu => WGPU
                .get_or_init(|| {
                    let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| format!("{e:?}"))?;
                    let info = setup.adapter.get_info();
                    super::note_subgroups(setup.device.features().contains(super::wgpu::Features::SUBGROUP), &info);
                    super::INT64.store(setup.device.features().contains(super::wgpu::Features::SHADER_INT64), super::Ordering::Relaxed);
                    super::PACE.store(if info.device_type == super::wgpu::DeviceType::Cpu { 16 } else { 0 }, super::Ordering::Relaxed);
                    Ok((device, format!("wgpu ({}, {:?})", info.name, info.backend)))
                })
                .clone()
                .map_err(|e| MgmError::Device(format!("no usable GPU adapter: {e}"))),
        }
    }

    pub fn now_ms() -> f64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{init, now_ms};

/// Launches between waits for the device natively, 0 for never (see [`pace`]).
static PACE: AtomicUsize = AtomicUsize::new(0);

/// How many kernel launches the host may issue before it waits for the device, 0 for no limit.
/// 16 on adapters that run on the host's own cores (lavapipe): there lavapipe's queue submit
/// blocks until the device catches up, and a host that ran further ahead waits inside cubecl's
/// queue by spinning and sleeping in 75 µs steps, taking cores from the device's threads.
/// Waiting for the device instead parks the host (README "Pacing the host": the image encode
/// 1.02–1.05x faster, prefill and decode within noise; waiting after every launch suits the
/// encode better but slowed decode).
/// Never on wasm, where the browser's queue does not block the page.
pub fn pace() -> usize {
    match PACE_SET.load(Ordering::Relaxed) {
        usize::MAX => PACE.load(Ordering::Relaxed),
        set => set,
    }
}

static PACE_SET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// For benchmarks: `Some(n)` makes [`pace`] `n`, `None` restores the adapter's.
pub fn set_pace(every: Option<usize>) {
    PACE_SET.store(every.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// Whether the native device has 64-bit integers in shaders (WebGPU has none).
static INT64: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
std::thread_local! {
    static INT64_OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Kernels may read 64-bit words: the device has them, and this thread has not turned them off.
pub fn int64() -> bool {
    INT64.load(Ordering::Relaxed) && !INT64_OFF.get()
}

/// Kernels launched from this thread read only 32-bit words when `off` (as in browsers), for
/// tests of that form on a device with 64-bit integers.
pub fn without_int64(off: bool) {
    INT64_OFF.set(off);
}

static SUBGROUP_SIZE: AtomicUsize = AtomicUsize::new(0);
std::thread_local! {
    // Per thread, so tests of the different forms can run side by side.
    static SUBGROUP_CAP: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Kernels may share values through subgroups when the device has subgroup operations with one
/// fixed size (lavapipe: 8 lanes; Chromium's SwiftShader: 4, once the host asked for them).
fn note_subgroups(has_subgroups: bool, info: &wgpu::AdapterInfo) {
    let fixed = info.subgroup_min_size == info.subgroup_max_size;
    let size = if has_subgroups && fixed { info.subgroup_min_size as usize } else { 0 };
    SUBGROUP_SIZE.store(size, Ordering::Relaxed);
}

/// The subgroup size kernels may rely on, or 0 when they must not use subgroup operations. Under
/// a cap the first `cap` lanes of each subgroup act as one (broadcasts read from them), so a
/// device with 8 lanes runs the kernels as one with 4 would.
pub fn subgroup_size() -> usize {
    SUBGROUP_SIZE.load(Ordering::Relaxed).min(SUBGROUP_CAP.get())
}

/// Kernels launched from this thread use subgroups of at most `lanes` (0: none), for tests and
/// benchmarks of the forms other devices run; `usize::MAX` restores the device's own.
pub fn cap_subgroups(lanes: usize) {
    SUBGROUP_CAP.set(lanes);
}

/// The browser's WebGPU device (created once per page or worker) and a one-line description:
/// adapter and the limits Burn requested (the adapter's own maxima, not WebGPU's defaults).
/// `init_async` is the only way there: a synchronous init panics in browsers.
#[cfg(target_arch = "wasm32")]
pub async fn webgpu() -> Result<(burn::tensor::Device, String)> {
    thread_local! {
        static DEVICE: std::cell::RefCell<Option<(burn::tensor::Device, String)>> = const { std::cell::RefCell::new(None) };
    }
    if let Some(d) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let (device, setup) = burn::tensor::Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| MgmError::Device(format!("WebGPU is not available: {e:?}")))?;
    // wgpu 30 never requests WebGPU's `subgroups` (its feature table lacks it) nor reports it:
    // the host (pkg/src/core.js) asks for it, and the device itself says whether it has it.
    let has_subgroups = setup.device.as_webgpu().is_some_and(|d| d.features().has("subgroups"));
    note_subgroups(has_subgroups, &setup.adapter.get_info());
    // Browsers hide the adapter's name from wgpu; the page gets it from `requestAdapter().info`.
    let limits = setup.device.limits();
    let desc = format!(
        "WebGPU (maxBufferSize {} MiB, maxStorageBufferBindingSize {} MiB)",
        limits.max_buffer_size >> 20,
        limits.max_storage_buffer_binding_size >> 20
    );
    // A lost device (GPU reset, driver update, the browser reclaiming it) fails every later
    // call, some by never answering: whoever waits in `when_lost` hears of it.
    setup.device.set_device_lost_callback(|reason, message| {
        let why = format!("the GPU device was lost ({reason:?}{}{message})", if message.is_empty() { "" } else { ": " });
        let waiting = LOST.with(|l| {
            let mut l = l.borrow_mut();
            l.0 = Some(why.clone());
            std::mem::take(&mut l.1)
        });
        waiting.into_iter().for_each(|f| f(&why));
    });
    DEVICE.with(|d| *d.borrow_mut() = Some((device.clone(), desc.clone())));
    Ok((device, desc))
}

#[cfg(target_arch = "wasm32")]
type LostWaiter = Box<dyn FnOnce(&str)>;

#[cfg(target_arch = "wasm32")]
thread_local! {
    /// Why the WebGPU device was lost, once it is, and the callers waiting to hear it.
    static LOST: std::cell::RefCell<(Option<String>, Vec<LostWaiter>)> = std::cell::RefCell::default();
}

/// Calls `f` with the reason once the WebGPU device is lost (at once if it already is).
#[cfg(target_arch = "wasm32")]
pub fn when_lost(f: impl FnOnce(&str) + 'static) {
    match LOST.with(|l| l.borrow().0.clone()) {
        Some(why) => f(&why),
        None => LOST.with(|l| l.borrow_mut().1.push(Box::new(f))),
    }
}

#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

