//! `CudaBackend`: flashvsr-tensor's op set on one GPU. The trait methods are thin: each op lives in
//! `ops/`, returns a `CudaResult<CudaBuffer>`, and is converted to the tensor crate's error here.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, LaunchConfig};
use flashvsr_tensor::{
    Backend, BackendRef, BinaryOp, BufferRef, CanvasWindow, Device, HostData, MemoryMeter, PadMode,
    PendingDownload, QkvBuffers, QueuePoint, Tensor, TensorError, UnaryOp,
};

use crate::buffer::{raw_ptr, CudaBuffer, DeviceBlock, Storage};
use crate::context::{driver_version, Gpu};
use crate::dnn::Dnn;
use crate::error::{catch, CudaError, CudaResult};
use crate::gemm::Gemm;
use crate::kernels::Kernels;
use crate::launch::{grid_1d, launch, KernelArgs};
use crate::nvrtc::{arch_for, nvrtc_version};
use crate::ops::weight_cache::WeightCache;
use crate::pinned::{DownloadedValues, PinnedPool};

/// Environment switch for [`CudaOptions::poison_outputs`].
pub const ENV_POISON: &str = "FLASHVSR_CUDA_POISON";

/// `FLASHVSR_CUDA_CUDNN=0` turns [`CudaOptions::conv_cudnn`] off.
pub const ENV_CUDNN: &str = "FLASHVSR_CUDA_CUDNN";

/// `FLASHVSR_CUDA_CHANNELS_LAST=0` turns [`CudaOptions::conv_channels_last`] off.
pub const ENV_CHANNELS_LAST: &str = "FLASHVSR_CUDA_CHANNELS_LAST";

/// `FLASHVSR_CUDA_FOLD_TIME=0` turns [`CudaOptions::conv_fold_time`] off.
pub const ENV_FOLD_TIME: &str = "FLASHVSR_CUDA_FOLD_TIME";

/// `FLASHVSR_CUDA_FOLD_CAUSAL=0` turns [`CudaOptions::conv_fold_causal`] off.
pub const ENV_FOLD_CAUSAL: &str = "FLASHVSR_CUDA_FOLD_CAUSAL";

/// `FLASHVSR_CUDA_SUBPIXEL=0` turns [`CudaOptions::conv_subpixel_upsample`] off.
pub const ENV_SUBPIXEL: &str = "FLASHVSR_CUDA_SUBPIXEL";

/// `FLASHVSR_CUDA_FOLD_MAX_CHANNELS=N` sets [`CudaOptions::conv_fold_max_channels`].
pub const ENV_FOLD_MAX_CHANNELS: &str = "FLASHVSR_CUDA_FOLD_MAX_CHANNELS";

/// Environment override for [`CudaOptions::attention`]: `fp32` or `bf16`.
pub const ENV_ATTENTION: &str = "FLASHVSR_CUDA_ATTENTION";

/// `0` turns the GEMM tuning of the fast mode off (see `CudaOptions::gemm_tune`).
pub const ENV_GEMM_TUNE: &str = "FLASHVSR_CUDA_GEMM_TUNE";

/// The TCDecoder's last conv in the fast mode (see [`CudaOptions::conv_direct_three`]): `0` keeps
/// cuDNN, `fma` takes the f32 FMA kernel, anything else (unset) the tensor-core kernel.
pub const ENV_DIRECT_CONV3: &str = "FLASHVSR_CUDA_DIRECT_CONV3";

/// (`conv_direct_three`, `conv_direct_three_mma`) for a value of [`ENV_DIRECT_CONV3`].
fn direct_conv3_choice(value: Option<&str>) -> (bool, bool) {
    match value {
        Some("0") => (false, false),
        Some("fma") => (true, false),
        _ => (true, true),
    }
}

/// How the attention ops compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionPrecision {
    /// Exact fp32 scalar kernels: the golden parity mode (≤ 1e-4 relative).
    Fp32,
    /// Tensor-core flash kernels for head_dim 128 (bf16 Q, K, V and P; fp32 accumulation and
    /// softmax; about 1e-2 relative L2). Other head dims, and GPUs older than sm_80, keep the fp32
    /// kernels.
    #[default]
    Bf16,
}

impl AttentionPrecision {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionPrecision::Fp32 => "fp32",
            AttentionPrecision::Bf16 => "bf16",
        }
    }

    /// The value of `FLASHVSR_CUDA_ATTENTION` if set: `Some(Ok(..))`, `Some(Err(text))` when it is
    /// not understood, `None` when unset.
    pub fn from_env() -> Option<Result<Self, String>> {
        std::env::var(ENV_ATTENTION).ok().map(|v| v.parse())
    }
}

impl std::fmt::Display for AttentionPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttentionPrecision {
    type Err = String;

    /// `fp32`/`f32` or `bf16` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(AttentionPrecision::Fp32),
            "bf16" => Ok(AttentionPrecision::Bf16),
            other => Err(format!(
                "{ENV_ATTENTION}={other:?} not understood (expected fp32 or bf16)"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CudaOptions {
    /// Fill every op output with NaN before its kernels run, so that an element a kernel forgot
    /// to write shows up in a comparison. Costs one extra pass per op; for tests.
    pub poison_outputs: bool,
    /// Largest im2col slab of conv3d, in f32 elements; larger output planes are done in chunks.
    pub im2col_budget: usize,
    /// GEMMs on TF32 tensor cores and convolutions on cuDNN in bf16 (fast mode; cuDNN is
    /// optional, im2col + TF32 GEMM without it); off is exact fp32 (parity mode).
    pub gemm_tf32: bool,
    /// In the fast mode, run convolutions on cuDNN where it loads (off: im2col + TF32 GEMM).
    pub conv_cudnn: bool,
    /// Largest bf16 staging (input plus output) of one cuDNN convolution, in bytes; longer clips
    /// are convolved in groups of frames.
    pub conv_stage_bytes: usize,
    /// Attention kernels: exact fp32 (parity) or bf16 tensor cores (default).
    pub attention: AttentionPrecision,
    /// Store the tensors the model marks as long-lived (`Tensor::compact`: weights, the KV cache)
    /// in bf16, and run GEMMs with bf16 weights on bf16 tensor cores (fast mode).
    pub compact_bf16: bool,
    /// Device memory the whole process may use, in bytes (`--max-vram`): what the context and
    /// libraries took at start-up is subtracted and the rest caps the pool every tensor comes
    /// from, so that going over it is an out-of-memory error instead of a bigger footprint.
    pub memory_limit: Option<u64>,
    /// Time every op with CUDA events (`FLASHVSR_CUDA_OP_PROFILE=1`, or `=alone` to start each op
    /// on an idle GPU); see `op_profile_report`.
    pub op_profile: bool,
    /// In the fast mode, cuDNN frame convolutions write bf16 channels-last outputs that the next
    /// convolution reads in place (ops/channels_last.rs); off (`FLASHVSR_CUDA_CHANNELS_LAST=0`)
    /// converts every conv's output back to f32 row-major.
    pub conv_channels_last: bool,
    /// In the fast mode, temporal cuDNN convolutions whose staging this at most doubles (the LQ
    /// projector's) run as 2-D convolutions over the kt source frames side by side in the
    /// channels (conv_stage.rs); off (`FLASHVSR_CUDA_FOLD_TIME=0`) keeps cuDNN's 3-D kernels.
    pub conv_fold_time: bool,
    /// Time is folded only where that makes at most this many input channels (None: always).
    /// cuDNN runs the LQ projector's second conv folded (8,192 channels) 11× slower at a 1920×1024
    /// canvas than at 1408×768 or 1920×1152 (BENCHMARKS.md, session 6): 4096 is then faster
    /// there (B 17.4 → 18.9 fps on H100) and slower elsewhere (A 42.3 → 40.5).
    pub conv_fold_max_channels: Option<usize>,
    /// Long-lived tensors (weights, the KV cache, queued uploads, converted conv weights) from a
    /// pool of their own, apart from each chunk's short-lived tensors (without a memory cap;
    /// `FLASHVSR_CUDA_KEPT_POOL=1`). Off by default: at config A the two pools' slack together
    /// peaked ~300 MiB above one pool's (BENCHMARKS.md, session 7) — the short-lived tensors alone
    /// still leave the default pool reserving ~1.9 GiB over its use.
    pub kept_pool: bool,
    /// Largest scores matrix (fp32 scores, plus bf16 probabilities in the bf16 mode) of one
    /// chunk of query rows in the GEMM attention of wide heads (ops/attention_gemm.rs), in bytes.
    pub attention_scores_bytes: usize,
    /// In the fast mode, fold the Wan VAE's causal 3-tap convs into 2-D convs over 3·C channels
    /// of stacked frames too (off: `FLASHVSR_CUDA_FOLD_CAUSAL=0`). The staging triples the input
    /// but cuDNN's 2-D kernels more than make up for it: full mode 20.18 → 20.99 fps on an H100
    /// (BENCHMARKS.md, session 7).
    pub conv_fold_causal: bool,
    /// In the fast mode, nearest 2× upsampling and the 3×3 conv after it (the Wan VAE's Resample)
    /// run as one 2×2 conv over the small frames with four output phases
    /// (ops/upsample_conv.rs); off (`FLASHVSR_CUDA_SUBPIXEL=0`) upsamples, then convolves.
    pub conv_subpixel_upsample: bool,
    /// In the fast mode, a 3×3 conv to 3 channels from a channels-last input (the TCDecoder's
    /// last conv) runs as a direct kernel (ops/conv_direct.rs) instead of cuDNN (outputs padded
    /// to 8, then unstaged): on an H100 at 1408×768, 0.195 ms a frame on tensor cores, 0.308 with
    /// f32 FMAs, 0.424 on cuDNN (PERF_NOTES.md, helper h20). On by default;
    /// `FLASHVSR_CUDA_DIRECT_CONV3=0` turns it off.
    pub conv_direct_three: bool,
    /// The direct conv on tensor cores (mma.m16n8k16, the weights rounded to bf16 as cuDNN's
    /// are; where the input channels come in chunks of 32) instead of f32 FMAs. On by default;
    /// `FLASHVSR_CUDA_DIRECT_CONV3=fma` takes the FMA kernel.
    pub conv_direct_three_mma: bool,
    /// In the fast mode, the first call of each large bf16 GEMM shape times cuBLASLt's candidate
    /// algorithms and keeps the fastest that gives the heuristic's own bits (gemm.rs), so no
    /// output changes. On by default (the 8448×1536×1536 shapes take 0.08–0.10 ms instead of
    /// 0.12; config A +1 % in same-call runs, BENCHMARKS.md session 9); `FLASHVSR_CUDA_GEMM_TUNE=0`
    /// turns it off.
    pub gemm_tune: bool,
    /// Short-lived allocations of at least this many bytes come from the paged allocator
    /// (paged.rs: physical pages remapped between blocks, so that freed memory never sits in
    /// holes); None: everything from the driver's stream-ordered pool. Not under a memory cap,
    /// whose pool holds everything. On by default for blocks of 4 MiB and more: config A's peak
    /// 13.1 → 11.4 GiB (NVML) with the stand-ins below, same fps (BENCHMARKS.md, session 8);
    /// `FLASHVSR_CUDA_PAGED=0` turns it off, `FLASHVSR_CUDA_PAGED_MIN_MIB=N` pages blocks of N MiB
    /// and more.
    pub paged_min_bytes: Option<usize>,
    /// In the fast mode, `Tensor::conv_weight_stand_in` gives a stand-in for a conv weight whose
    /// cuDNN copy is cached, so that the LQ projector frees its 0.57 GiB of source weights. On
    /// by default; `FLASHVSR_CUDA_CONV_STAND_IN=0` keeps the source weights.
    pub conv_weight_stand_in: bool,
    /// `download_later` copies on a stream of their own, so that the compute stream does not
    /// wait for them (its sources are kept until their copy completed). On by default;
    /// `FLASHVSR_CUDA_COPY_STREAM=0` queues them on the compute stream.
    pub copy_stream: bool,
    /// The top-k selection of the sparse masks by a cluster of CTAs per group on sm_90
    /// (mask.cu `mask_topk_select_cluster_f64`; the same masks): at 1920×1152 a steady chunk has
    /// only 24 selection groups, too few CTAs for one each. On by default;
    /// `FLASHVSR_CUDA_TOPK_CLUSTER=0` gives every group one CTA.
    pub topk_cluster: bool,
    /// The row norms' register forms where a row fits (norm.cu `layer_norm_warp_regs_f32` for
    /// layer norms and modulations of rows of at most 1536 values, `rms_norm_regs_f32` for RMS
    /// norms of at most 6 values a thread): each value is loaded before its first use and widened
    /// to double once, not two or three times. The same sums in the same order: the same bits.
    /// At 1080p on an H200 (PERF_NOTES.md, helper h26): rms_norm 0.141 → 0.093 ms a call,
    /// layer_norm 0.091 → 0.077, modulate 0.050 → 0.046. On by default;
    /// `FLASHVSR_CUDA_ROW_REGS=0` takes the forms before.
    pub row_norm_regs: bool,
}

impl CudaOptions {
    /// Defaults, with `poison_outputs` from `FLASHVSR_CUDA_POISON=1`, `conv_cudnn` off with
    /// `FLASHVSR_CUDA_CUDNN=0`, and `attention` from `FLASHVSR_CUDA_ATTENTION=fp32|bf16` (an
    /// unknown value warns on stderr and keeps the default).
    pub fn from_env() -> Self {
        let attention = match AttentionPrecision::from_env() {
            Some(Ok(p)) => p,
            Some(Err(msg)) => {
                eprintln!("warning: {msg}; using {}", AttentionPrecision::default());
                AttentionPrecision::default()
            }
            None => AttentionPrecision::default(),
        };
        let direct_conv3 = direct_conv3_choice(std::env::var(ENV_DIRECT_CONV3).ok().as_deref());
        CudaOptions {
            attention,
            poison_outputs: std::env::var(ENV_POISON).is_ok_and(|v| v == "1"),
            gemm_tf32: std::env::var("FLASHVSR_CUDA_TF32").is_ok_and(|v| v == "1"),
            compact_bf16: std::env::var("FLASHVSR_CUDA_BF16").is_ok_and(|v| v == "1"),
            op_profile: std::env::var("FLASHVSR_CUDA_OP_PROFILE")
                .is_ok_and(|v| v == "1" || v == "alone"),
            conv_cudnn: std::env::var(ENV_CUDNN).map_or(true, |v| v != "0"),
            conv_channels_last: std::env::var(ENV_CHANNELS_LAST).map_or(true, |v| v != "0"),
            conv_fold_time: std::env::var(ENV_FOLD_TIME).map_or(true, |v| v != "0"),
            conv_fold_causal: std::env::var(ENV_FOLD_CAUSAL).map_or(true, |v| v != "0"),
            conv_subpixel_upsample: std::env::var(ENV_SUBPIXEL).map_or(true, |v| v != "0"),
            conv_direct_three: direct_conv3.0,
            conv_direct_three_mma: direct_conv3.1,
            conv_fold_max_channels: std::env::var(ENV_FOLD_MAX_CHANNELS)
                .ok()
                .and_then(|v| v.parse().ok()),
            kept_pool: std::env::var("FLASHVSR_CUDA_KEPT_POOL").is_ok_and(|v| v == "1"),
            gemm_tune: !std::env::var(ENV_GEMM_TUNE).is_ok_and(|v| v == "0"),
            paged_min_bytes: match std::env::var("FLASHVSR_CUDA_PAGED_MIN_MIB")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            {
                Some(mib) => Some(mib << 20),
                None => (!std::env::var("FLASHVSR_CUDA_PAGED").is_ok_and(|v| v == "0"))
                    .then_some(PAGED_MIN_BYTES),
            },
            conv_weight_stand_in: !std::env::var("FLASHVSR_CUDA_CONV_STAND_IN")
                .is_ok_and(|v| v == "0"),
            copy_stream: !std::env::var("FLASHVSR_CUDA_COPY_STREAM").is_ok_and(|v| v == "0"),
            topk_cluster: !std::env::var("FLASHVSR_CUDA_TOPK_CLUSTER").is_ok_and(|v| v == "0"),
            row_norm_regs: !std::env::var("FLASHVSR_CUDA_ROW_REGS").is_ok_and(|v| v == "0"),
            ..Self::default()
        }
    }

    /// The same options in fast mode (TF32/bf16 GEMMs, bf16 attention, bf16 weights and KV
    /// cache) or in the exact fp32 parity mode.
    pub fn with_fast_mode(self, fast: bool) -> Self {
        CudaOptions {
            gemm_tf32: fast,
            compact_bf16: fast,
            attention: if fast {
                AttentionPrecision::Bf16
            } else {
                AttentionPrecision::Fp32
            },
            ..self
        }
    }

    /// The same options with the given attention precision.
    pub fn with_attention(self, attention: AttentionPrecision) -> Self {
        CudaOptions { attention, ..self }
    }
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            poison_outputs: false,
            im2col_budget: 64 << 20,
            gemm_tf32: false,
            conv_cudnn: true,
            conv_stage_bytes: 1 << 30,
            attention: AttentionPrecision::default(),
            compact_bf16: false,
            memory_limit: None,
            op_profile: false,
            conv_channels_last: true,
            conv_fold_time: true,
            conv_fold_max_channels: None,
            kept_pool: false,
            attention_scores_bytes: 256 << 20,
            conv_fold_causal: true,
            conv_subpixel_upsample: true,
            conv_direct_three: true,
            conv_direct_three_mma: true,
            gemm_tune: true,
            paged_min_bytes: Some(PAGED_MIN_BYTES),
            conv_weight_stand_in: true,
            copy_stream: true,
            topk_cluster: true,
            row_norm_regs: true,
        }
    }
}

/// Short-lived allocations from this size on come from the paged allocator: a block is rounded up
/// to whole 2 MiB pages, which costs little from here on.
const PAGED_MIN_BYTES: usize = 4 << 20;

/// The paged allocator creates pages, rather than remapping cached ones (about a millisecond per
/// block), while it holds at most this much over its live high water
/// (`FLASHVSR_CUDA_PAGED_SLACK_MIB`).
const PAGED_SLACK_MIB: u64 = 512;

/// For `--device auto`: the CUDA backend on device 0 when a driver, a device, NVRTC and cuBLASLt
/// are all usable; otherwise the reason, for a one-line fallback message.
pub fn auto_backend() -> Result<BackendRef, String> {
    let info = crate::probe::probe()?;
    CudaBackend::new(info.ordinal).map_err(|e| e.to_string())
}

pub struct CudaBackend {
    ordinal: usize,
    arch: String,
    options: CudaOptions,
    pub(crate) gpu: Gpu,
    pub(crate) kernels: Kernels,
    /// Which flash attention kernels can run here (sm_80+, shared-memory limits raised; the
    /// wgmma ones on sm_90).
    pub(crate) flash_ready: crate::ops::attention::FlashReady,
    /// Counting-sort bins the attention's work order may use (ops/mask.rs `prepare_mask_order`).
    pub(crate) order_bins: usize,
    gemm: Mutex<Gemm>,
    scratch: Mutex<Option<DeviceBlock<f32>>>,
    /// The capped allocation pool under a memory limit.
    pool: Option<crate::pool::CappedPool>,
    /// Where long-lived outputs (the KV cache) come from; none under a memory cap, whose pool
    /// holds everything.
    kept: Option<crate::pool::KeptPool>,
    pool_trace: Option<crate::pool::PoolTrace>,
    /// Large short-lived blocks (see [`CudaOptions::paged_min_bytes`]).
    paged: Option<Arc<crate::paged::PagedAllocator>>,
    /// Bytes of this backend's tensors (op temporaries included) and their peak.
    meter: Arc<MemoryMeter>,
    /// Device memory in use once the context, kernels and libraries were set up.
    used_at_start: u64,
    profiler: Option<crate::op_profile::OpProfiler>,
    /// cuDNN, in the fast mode where it loads; None keeps the im2col convolutions.
    pub(crate) dnn: Option<Mutex<Dnn>>,
    /// bf16 filters of the cuDNN convolutions, per weight buffer.
    pub(crate) conv_weights: Mutex<WeightCache<CudaSlice<u16>>>,
    /// Convolutions that ran on cuDNN (for tests and diagnostics).
    pub(crate) cudnn_convs: AtomicU64,
    /// conv3d calls that ran on a direct kernel instead (ops/conv_direct.rs).
    pub(crate) direct_convs: AtomicU64,
    /// Host buffers of `download_later`.
    downloads: Arc<PinnedPool>,
    /// Where `download_later` copies run, beside the compute stream (None: on it).
    copies: Option<Arc<CudaStream>>,
    /// Sources of downloads on `copies`, kept until their copy completed.
    copy_sources: Mutex<Vec<CopySource>>,
    /// Host staging of `upload_queued`.
    staging: Arc<PinnedPool>,
    /// A sibling's parent stream ([`CudaBackend::sibling`]), whose tensors its ops may read.
    reads_from: Option<Arc<CudaStream>>,
}

/// A CUDA event on a backend's stream.
struct EventPoint {
    event: CudaEvent,
    device: Device,
}

impl QueuePoint for EventPoint {
    fn wait(&self) -> TResult<()> {
        self.event
            .synchronize()
            .map_err(|e| CudaError::from(e).into_tensor(self.device))
    }
}

/// The device buffers a download on the copy stream reads, kept until `copied` completed: freed
/// earlier, the compute stream could reuse their memory while the copy still reads it.
struct CopySource {
    _kept: (BufferRef, Option<CudaBuffer>),
    copied: CudaEvent,
}

impl Drop for CopySource {
    fn drop(&mut self) {
        // Normally complete already; a backend dropped with copies in flight waits for them here
        // (nothing to report an error to).
        let _ = self.copied.synchronize();
    }
}

impl CudaBackend {
    /// Drops the sources of completed downloads.
    fn release_copy_sources(&self) {
        let done: Vec<CopySource> = {
            let mut sources = self.copy_sources.lock().unwrap_or_else(|e| e.into_inner());
            let (done, pending) = sources.drain(..).partition(|s| s.copied.is_complete());
            *sources = pending;
            done
        };
        // Freed outside the lock, on the compute stream.
        drop(done);
    }
}

/// Pinned buffers kept for downloads: a stream has two or three chunks in flight, each in pieces
/// of 4 frames (the tiny decoder's, one per latent frame; the first chunk has 6), a tiled one that
/// many per tile, and a piece's buffer stays lent until its frames are written (they are read in
/// place). A pool only grows to the copies in flight at once.
const DOWNLOAD_BUFFERS: usize = 24;
/// Pinned staging buffers kept for uploads: the LQ frames of two chunks pushed ahead of the device,
/// with the noise.
const STAGING_BUFFERS: usize = 20;
/// Larger uploads (weights) take the pageable path: pinning that much for one copy costs more
/// than it saves.
const STAGED_UPLOAD_MAX_VALUES: usize = 16 << 20;

/// Host copies into pinned staging larger than this are split across rayon's threads (idle
/// while a GPU engine runs): one core copies ~5 GB/s, so a frame's 13 MB kept the engine's thread
/// (and so the device) waiting about a millisecond per frame, and at 1920×1080 each of the first
/// chunk's 25 LQ frames (1.5 MB of levels) 0.3 ms, 7.5 ms of a pass with the device idle. (Split
/// over threads started per copy, the LQ frames gained nothing: starting them cost what the split
/// saved.)
/// `FLASHVSR_CUDA_PARALLEL_COPY_MIN=N` (values) for measurements.
const PARALLEL_COPY_MIN_VALUES: usize = 1 << 18;
const PARALLEL_COPY_PARTS: usize = 8;

fn parallel_copy_min() -> usize {
    static MIN: OnceLock<usize> = OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("FLASHVSR_CUDA_PARALLEL_COPY_MIN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PARALLEL_COPY_MIN_VALUES)
    })
}

fn copy_in_parallel(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    if src.len() < parallel_copy_min() {
        dst.copy_from_slice(src);
        return;
    }
    let part = src.len().div_ceil(PARALLEL_COPY_PARTS);
    dst.par_chunks_mut(part)
        .zip(src.par_chunks(part))
        .for_each(|(d, v)| d.copy_from_slice(v));
}

/// Converted conv weights kept on the device at most (a whole model's convs fit: about 0.7 GB).
const CONV_WEIGHT_CACHE_BYTES: usize = 2 << 30;

/// cuDNN for the fast mode's convolutions, or None (logged once per process) where the library
/// is missing or does not start, or the GPU has no bf16 tensor cores.
fn open_dnn(gpu: &Gpu, options: &CudaOptions) -> Option<Mutex<Dnn>> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !options.gemm_tf32 || !options.conv_cudnn || gpu.cc < (8, 0) {
        return None;
    }
    match catch(|| Dnn::open(&gpu.stream)) {
        Ok(dnn) => Some(Mutex::new(dnn)),
        Err(e) => {
            if !LOGGED.swap(true, Ordering::Relaxed) {
                eprintln!("flashvsr: cuDNN not used ({e}); convolutions run as im2col + GEMM");
            }
            None
        }
    }
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaBackend(cuda:{} {}, {})",
            self.ordinal, self.gpu.name, self.arch
        )
    }
}

impl CudaBackend {
    /// The backend for `cuda:<ordinal>` with [`CudaOptions::from_env`], ready to hand to the model.
    #[allow(clippy::new_ret_no_self)] // the model wants the trait object; `create` gives `Self`
    pub fn new(ordinal: usize) -> Result<BackendRef, CudaError> {
        Ok(Self::create(ordinal, CudaOptions::from_env())?)
    }

    /// Opens the device, compiles (or loads cached) kernels and sets up cuBLASLt.
    pub fn create(ordinal: usize, options: CudaOptions) -> Result<Arc<CudaBackend>, CudaError> {
        catch(|| {
            let gpu = Gpu::open(ordinal)?;
            if gpu.cc < (7, 5) {
                return Err(CudaError::Unsupported(format!(
                    "compute capability {}.{}; NVRTC 13 needs 7.5 or newer",
                    gpu.cc.0, gpu.cc.1
                )));
            }
            let (nvrtc_major, nvrtc_minor) = nvrtc_version()?;
            let driver = driver_version()?;
            if nvrtc_major > driver / 1000 {
                return Err(CudaError::Unsupported(format!(
                    "NVRTC {nvrtc_major}.{nvrtc_minor} is newer than the driver's CUDA {}.{}: \
                     its CUBINs would not load; install the NVRTC of the driver's major version",
                    driver / 1000,
                    driver % 1000 / 10
                )));
            }
            Self::build(gpu, ordinal, options, None)
        })
    }

    /// A second backend on this one's device and CUDA context, with a stream, allocators and
    /// library handles of its own, whose ops may also read this backend's tensors: the models'
    /// weights, loaded once, serve both. The engine runs its decoder here while the DiT runs on
    /// this backend (pipeline.rs `Engine::with_decoder_stream`). Reads only: a tensor of this
    /// backend that its own stream may still write or free must reach the sibling as a copy
    /// (`Tensor::to_backend`). Not under a memory cap (one capped pool per device).
    pub fn sibling(&self) -> Result<Arc<CudaBackend>, CudaError> {
        catch(|| {
            if self.options.memory_limit.is_some() {
                return Err(CudaError::Unsupported(
                    "a second stream under a memory cap".into(),
                ));
            }
            let gpu = self.gpu.with_new_stream()?;
            // Both streams allocate from the device's pool: the driver must not make one wait
            // for the other to reuse memory (`FLASHVSR_CUDA_POOL_CROSS_WAITS=1` lets it).
            let waits = std::env::var("FLASHVSR_CUDA_POOL_CROSS_WAITS").is_ok_and(|v| v == "1");
            let _ = crate::pool::set_current_pool_cross_stream_waits(&gpu, waits);
            Self::build(
                gpu,
                self.ordinal,
                self.options.clone(),
                Some(self.gpu.stream.clone()),
            )
        })
    }

    /// Everything past the device checks: kernels, libraries, allocators.
    fn build(
        gpu: Gpu,
        ordinal: usize,
        options: CudaOptions,
        reads_from: Option<Arc<CudaStream>>,
    ) -> CudaResult<Arc<CudaBackend>> {
        let arch = arch_for(gpu.cc);
        let kernels = Kernels::load(&gpu.ctx, &arch)?;
        let flash_ready = crate::ops::attention::prepare_flash(&gpu.ctx, gpu.cc, &kernels);
        let order_bins = crate::ops::mask::prepare_mask_order(&gpu.ctx, &kernels);
        let tune_with = (options.gemm_tf32 && options.gemm_tune)
            .then(|| kernels.get("digest_u32").ok().cloned())
            .flatten();
        let gemm = Gemm::new(&gpu.stream, options.gemm_tf32, tune_with)?;
        let dnn = open_dnn(&gpu, &options);
        let profiler = options
            .op_profile
            .then(|| crate::op_profile::OpProfiler::new(&gpu.ctx));
        let used_at_start = {
            let (free, total) = cudarc::driver::result::mem_get_info()?;
            (total - free) as u64
        };
        let pool = match options.memory_limit {
            Some(limit) => Some(crate::pool::CappedPool::install(&gpu, limit)?),
            None => None,
        };
        // The default pool keeps its free memory across synchronisations: with the driver's
        // threshold of 0, every pass (the bench's, or a clip's after a flush) started by mapping
        // its first chunk's memory again, and the GPU waited ~30 ms at 1920×1080 for the host.
        // The peak is set inside a pass, so keeping costs none (NVML peak unchanged at A and
        // 1080p); an allocation that fails still trims the pool and retries
        // (`release_free_memory`). `FLASHVSR_CUDA_POOL_KEEP_MIB=N` (experiments) keeps N MiB.
        if pool.is_none() {
            let keep = std::env::var("FLASHVSR_CUDA_POOL_KEEP_MIB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(u64::MAX, |mib| mib << 20);
            // A driver without stream-ordered pools allocates otherwise: nothing to keep.
            let _ = crate::pool::set_current_pool_release_threshold(&gpu, keep);
        }
        let kept = match (&pool, options.kept_pool) {
            (None, true) => Some(crate::pool::KeptPool::create(&gpu)?),
            _ => None,
        };
        let paged = match (&pool, options.paged_min_bytes) {
            (None, Some(min_bytes)) => {
                let (_, total) = cudarc::driver::result::mem_get_info()?;
                let slack_mib = std::env::var("FLASHVSR_CUDA_PAGED_SLACK_MIB")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(PAGED_SLACK_MIB);
                // A device or driver without the virtual memory API keeps the pool.
                match crate::paged::PagedAllocator::new(
                    &gpu.stream,
                    min_bytes,
                    total as u64,
                    slack_mib << 20,
                ) {
                    Ok(paged) => Some(Arc::new(paged)),
                    Err(e) => {
                        eprintln!(
                            "flashvsr: cuda:{ordinal}: no paged allocator ({e}); large \
                                 blocks come from the driver's pool"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let copies = match options.copy_stream {
            true => Some(gpu.stream.fork()?),
            false => None,
        };
        Ok(Arc::new(CudaBackend {
            paged,
            ordinal,
            arch,
            options,
            kernels,
            flash_ready,
            order_bins,
            gemm: Mutex::new(gemm),
            scratch: Mutex::new(None),
            pool,
            kept,
            pool_trace: crate::pool::PoolTrace::from_env(&gpu),
            meter: Arc::new(MemoryMeter::default()),
            used_at_start,
            profiler,
            dnn,
            conv_weights: Mutex::new(WeightCache::new(CONV_WEIGHT_CACHE_BYTES)),
            cudnn_convs: AtomicU64::new(0),
            direct_convs: AtomicU64::new(0),
            downloads: PinnedPool::for_downloads(&gpu.ctx, DOWNLOAD_BUFFERS),
            copies,
            copy_sources: Mutex::new(Vec::new()),
            staging: PinnedPool::for_uploads(&gpu.ctx, STAGING_BUFFERS),
            reads_from,
            gpu,
        }))
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// The NVRTC target the kernels were built for, e.g. `sm_90a`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn options(&self) -> &CudaOptions {
        &self.options
    }

    /// The device's memory in bytes.
    pub fn device_memory(&self) -> Result<u64, CudaError> {
        catch(|| {
            self.gpu.ctx.bind_to_thread()?;
            Ok(cudarc::driver::result::mem_get_info()?.1 as u64)
        })
    }

    /// The cap on tensor memory under a memory limit (the limit less what the context and
    /// libraries took at start-up).
    pub fn tensor_memory_cap(&self) -> Option<u64> {
        self.pool.as_ref().map(|p| p.max_bytes())
    }

    /// Whether convolutions go to cuDNN (the fast mode, with cuDNN 9 loaded on an sm_80+ GPU).
    pub fn uses_cudnn(&self) -> bool {
        self.dnn.is_some()
    }

    /// How many conv3d calls ran on cuDNN so far.
    pub fn cudnn_conv_count(&self) -> u64 {
        self.cudnn_convs.load(Ordering::Relaxed)
    }

    /// How many conv3d calls ran on a direct kernel (ops/conv_direct.rs) so far.
    pub fn direct_conv_count(&self) -> u64 {
        self.direct_convs.load(Ordering::Relaxed)
    }

    /// The attention precision this backend was created with.
    pub fn attention_precision(&self) -> AttentionPrecision {
        self.options.attention
    }

    /// Waits for all queued work; surfaces asynchronous kernel errors.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.gpu.stream.synchronize()?;
        if let Some(copies) = &self.copies {
            copies.synchronize()?;
        }
        self.release_copy_sources();
        self.gpu.ctx.check_err()?;
        Ok(())
    }

    /// GPU milliseconds of the work that `f` enqueues on this backend's stream: CUDA events
    /// recorded before and after it, then waited for. For benchmarks (the host's own time in
    /// `f` counts only where the GPU waited for it).
    #[doc(hidden)]
    pub fn gpu_time_ms<T>(&self, f: impl FnOnce() -> T) -> Result<(T, f64), CudaError> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.gpu.ctx.new_event(flags)?;
        let end = self.gpu.ctx.new_event(flags)?;
        start.record(&self.gpu.stream)?;
        let out = f();
        end.record(&self.gpu.stream)?;
        end.synchronize()?;
        self.gpu.ctx.check_err()?;
        Ok((out, f64::from(start.elapsed_ms(&end)?)))
    }

    /// An output buffer as every op gets it, written by no kernel: all NaN when poisoning is on.
    /// Lets tests check that the poison mechanism itself works.
    #[doc(hidden)]
    pub fn unwritten_output(&self, len: usize) -> Result<BufferRef, CudaError> {
        Ok(Arc::new(self.output(len)?))
    }

    pub(crate) fn input<'a>(&self, x: &'a Tensor) -> CudaResult<&'a CudaBuffer> {
        let buf = x
            .buffer()
            .as_any()
            .downcast_ref::<CudaBuffer>()
            .ok_or_else(|| {
                CudaError::Input(format!(
                    "tensor on {} given to cuda:{}",
                    x.device(),
                    self.ordinal
                ))
            })?;
        if buf.is_stand_in() {
            return Err(CudaError::Input(
                "a conv weight given up for its converted copy (a stand-in) read by an op other \
                 than a cuDNN convolution"
                    .into(),
            ));
        }
        // One stream per backend orders every use and free; a buffer of another stream would not
        // be, except a sibling's reads of its parent's (weights: never written while it runs).
        let stream = buf.slice().stream();
        let readable = Arc::ptr_eq(stream, &self.gpu.stream)
            || self
                .reads_from
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(stream, p));
        if !readable {
            return Err(CudaError::Input(
                "tensor belongs to another CUDA backend instance".into(),
            ));
        }
        Ok(buf)
    }

    /// The f32 row-major data of `x`. A bf16-stored tensor is widened (and a channels-last one
    /// put in row-major order) into a temporary that lives until the current op has enqueued its
    /// kernels: ops without a bf16 or channels-last path still accept them.
    pub(crate) fn ptr(&self, x: &Tensor) -> CudaResult<u64> {
        let buf = self.input(x)?;
        if let Some(g) = buf.channels_last() {
            return Ok(self.keep_for_op(self.channels_last_to_f32(buf, g)?));
        }
        match buf.storage() {
            Storage::F32 => Ok(buf.ptr()),
            Storage::Bf16 => Ok(self.keep_for_op(self.widen(buf)?)),
        }
    }

    /// Keeps an op's temporary buffer alive until the op has enqueued its kernels; its pointer.
    pub(crate) fn keep_for_op(&self, buf: CudaBuffer) -> u64 {
        let ptr = buf.ptr();
        OP_TEMPORARIES.with(|t| t.borrow_mut().push(buf));
        ptr
    }

    /// The device pointer and storage of `x`'s row-major data, for ops that read bf16 storage
    /// directly. A channels-last tensor comes as an f32 row-major temporary (see `ptr`).
    pub(crate) fn raw(&self, x: &Tensor) -> CudaResult<(u64, Storage)> {
        let buf = self.input(x)?;
        if buf.channels_last().is_some() {
            return Ok((self.ptr(x)?, Storage::F32));
        }
        Ok((buf.ptr(), buf.storage()))
    }

    /// The data of `x` rounded to bf16, for a bf16 GEMM: its own storage when it is kept in bf16,
    /// else the copy its producer wrote or an earlier GEMM made, else a new copy kept with `x`.
    pub(crate) fn bf16_input(&self, x: &Tensor) -> CudaResult<u64> {
        let buf = self.input(x)?;
        if buf.channels_last().is_some() {
            // bf16 already, but not in row-major order.
            return Ok(self.keep_for_op(self.narrow_to_bf16(x)?));
        }
        if buf.storage() == Storage::Bf16 {
            return Ok(buf.ptr());
        }
        if let Some(copy) = buf.bf16_copy() {
            return Ok(copy.ptr());
        }
        Ok(buf.remember_bf16_copy(self.narrow_to_bf16(x)?).ptr())
    }

    /// A bf16 buffer for the bf16 copy of an f32 output of `len` elements, when the fast mode's
    /// GEMMs read bf16 (see `CudaBuffer::bf16_copy`); None otherwise.
    pub(crate) fn bf16_copy_output(&self, len: usize) -> CudaResult<Option<CudaBuffer>> {
        if !self.options.compact_bf16 {
            return Ok(None);
        }
        self.output_as(len, Storage::Bf16).map(Some)
    }

    /// The storage `compact` gives a tensor stored in f32.
    pub(crate) fn compact_storage(&self) -> Storage {
        if self.options.compact_bf16 {
            Storage::Bf16
        } else {
            Storage::F32
        }
    }

    /// `buf`'s values as an f32 row-major buffer: `buf` itself, or a converted copy kept in
    /// `converted`.
    fn row_major_f32<'a>(
        &self,
        buf: &'a CudaBuffer,
        converted: &'a mut Option<CudaBuffer>,
    ) -> CudaResult<&'a CudaBuffer> {
        let copy = match (buf.channels_last(), buf.storage()) {
            (Some(g), _) => self.channels_last_to_f32(buf, g)?,
            (None, Storage::Bf16) => self.widen(buf)?,
            (None, Storage::F32) => return Ok(buf),
        };
        Ok(converted.insert(copy))
    }

    /// An f32 row-major buffer's values in host memory, once the device got there.
    fn copy_to_host_now(&self, buf: &CudaBuffer) -> CudaResult<Vec<f32>> {
        let mut host = self.gpu.stream.clone_dtoh(buf.slice())?;
        self.synchronize()?;
        host.truncate(buf_len(buf));
        Ok(host)
    }

    /// A bf16 buffer's values as a new f32 buffer.
    fn widen(&self, buf: &CudaBuffer) -> CudaResult<CudaBuffer> {
        let len = flashvsr_tensor::Buffer::len(buf);
        let out = self.output(len)?;
        let args = KernelArgs::new()
            .push(buf.ptr())
            .push(out.ptr())
            .push(len as u64);
        self.launch("bf16_to_f32", self.grid(len as u64), args)?;
        Ok(out)
    }

    /// `x` stored as bf16 (round to nearest even).
    pub(crate) fn narrow_to_bf16(&self, x: &Tensor) -> CudaResult<CudaBuffer> {
        let out = self.output_as(x.elem_count(), Storage::Bf16)?;
        self.write_bf16(x, out)
    }

    /// `x` rounded to bf16 in the kept pool (see [`Self::kept_output`]).
    fn compacted(&self, x: &Tensor) -> CudaResult<CudaBuffer> {
        let out = self.kept_output(x.elem_count(), Storage::Bf16)?;
        self.write_bf16(x, out)
    }

    fn write_bf16(&self, x: &Tensor, out: CudaBuffer) -> CudaResult<CudaBuffer> {
        let len = x.elem_count();
        let args = KernelArgs::new()
            .push(self.ptr(x)?)
            .push(out.ptr())
            .push(len as u64);
        self.launch("f32_to_bf16", self.grid(len as u64), args)?;
        Ok(out)
    }

    pub(crate) fn opt_ptr(&self, x: Option<&Tensor>) -> CudaResult<u64> {
        x.map_or(Ok(0), |x| self.ptr(x))
    }

    /// Every op allocates its output here (poisoned when asked).
    pub(crate) fn output(&self, len: usize) -> CudaResult<CudaBuffer> {
        self.output_as(len, Storage::F32)
    }

    /// An output that lives for many chunks (a KV-cache group): from the kept pool where there is
    /// one, so that the chunk's short-lived tensors are not laid out around it.
    pub(crate) fn kept_output(&self, len: usize, storage: Storage) -> CudaResult<CudaBuffer> {
        let Some(kept) = &self.kept else {
            // Long-lived: from the driver's pool, where weights and the KV cache's groups are not
            // rounded up to whole pages.
            let slice = self.alloc_pooled::<f32>(storage.words(len))?;
            return self.prepared_output(slice.into(), len, storage);
        };
        let words = storage.words(len);
        let slice = kept.alloc(&self.gpu.stream, words)?;
        self.prepared_output(slice.into(), len, storage)
    }

    /// Room for `len` values that outlive a chunk's temporaries (queued uploads, converted
    /// weights): from the kept pool where there is one.
    ///
    /// # Safety
    /// Uninitialised memory: the caller writes it before it is read.
    pub(crate) unsafe fn alloc_kept<T: cudarc::driver::DeviceRepr>(
        &self,
        len: usize,
    ) -> CudaResult<CudaSlice<T>> {
        match &self.kept {
            Some(kept) => kept.alloc(&self.gpu.stream, len),
            None => self.alloc_pooled::<T>(len),
        }
    }

    pub(crate) fn output_as(&self, len: usize, storage: Storage) -> CudaResult<CudaBuffer> {
        // SAFETY: uninitialised device memory; every op writes all `len` elements (the poison
        // mode and the GPU test check exactly that).
        let slice = unsafe { self.alloc_block::<f32>(storage.words(len)) }?;
        self.prepared_output(slice, len, storage)
    }

    /// Room for `len` values of `T` that live for a short while (op outputs, staging, uploads):
    /// from the paged allocator when that large, else from the driver's pool.
    ///
    /// # Safety
    /// Uninitialised memory: the caller writes it before it is read.
    pub(crate) unsafe fn alloc_block<T: cudarc::driver::DeviceRepr>(
        &self,
        len: usize,
    ) -> CudaResult<DeviceBlock<T>> {
        let len = len.max(1);
        let bytes = len * std::mem::size_of::<T>();
        if let Some(paged) = self.paged.as_ref().filter(|p| bytes >= p.min_bytes) {
            let ptr = match flashvsr_tensor::host_stalls::timed("paged alloc", || {
                paged.alloc(bytes as u64)
            }) {
                Ok(ptr) => ptr,
                // The driver's pool may hold the memory this block needs: hand its free
                // memory back, then try once more.
                Err(e) if e.is_out_of_memory() => {
                    self.release_free_memory()?;
                    paged.alloc(bytes as u64)?
                }
                Err(e) => return Err(e),
            };
            // SAFETY: a live block of at least `bytes`; its drop hands it back to `paged`.
            let slice = unsafe { self.gpu.stream.upgrade_device_ptr::<T>(ptr, len) };
            return Ok(DeviceBlock::paged(slice, paged.clone()));
        }
        Ok(self.alloc_pooled::<T>(len)?.into())
    }

    /// Room for `len` values of `T` from the driver's pool (uninitialised).
    fn alloc_pooled<T: cudarc::driver::DeviceRepr>(&self, len: usize) -> CudaResult<CudaSlice<T>> {
        let len = len.max(1);
        // SAFETY: the callers write the memory before it is read.
        match flashvsr_tensor::host_stalls::timed("pool alloc", || unsafe {
            self.gpu.stream.alloc::<T>(len)
        }) {
            Ok(s) => Ok(s),
            // Under a cap, free blocks of the pool may be too fragmented for this request:
            // hand them back to the driver and try once more.
            // Under a cap, free blocks of the pool may be too fragmented for this request; the
            // paged allocator's cached pages may hold the memory: hand both back to the driver
            // and try once more.
            Err(e)
                if (self.pool.is_some() || self.paged.is_some())
                    && CudaError::from(e).is_out_of_memory() =>
            {
                self.release_free_memory()?;
                Ok(unsafe { self.gpu.stream.alloc::<T>(len) }?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits for the stream, then returns the paged allocator's cached pages and the pool's free
    /// memory to the driver.
    fn release_free_memory(&self) -> CudaResult<()> {
        self.gpu.stream.synchronize()?;
        if let Some(paged) = &self.paged {
            paged.trim()?;
        }
        match &self.pool {
            Some(pool) => pool.trim(),
            None => crate::pool::trim_current_pool(&self.gpu),
        }
    }

    fn prepared_output(
        &self,
        slice: DeviceBlock<f32>,
        len: usize,
        storage: Storage,
    ) -> CudaResult<CudaBuffer> {
        let words = storage.words(len);
        if let Some(trace) = &self.pool_trace {
            CURRENT_OP.with(|op| trace.after_alloc(op.get(), words * 4));
        }
        let buf = CudaBuffer::with_storage(slice, len, storage).metered(&self.meter);
        if self.options.poison_outputs {
            // NaN in either format: f32 NaN words are also pairs of bf16 NaNs (0x7fc0_0000 → 0x7fc0, 0).
            self.fill(buf.ptr(), words, f32::from_bits(0x7fc0_7fc0))?;
        }
        Ok(buf)
    }

    pub(crate) fn grid(&self, n: u64) -> LaunchConfig {
        grid_1d(n, self.gpu.sm_count.max(1) * 16)
    }

    pub(crate) fn launch(&self, name: &str, cfg: LaunchConfig, args: KernelArgs) -> CudaResult<()> {
        launch(&self.gpu.stream, self.kernels.get(name)?, cfg, args)
    }

    pub(crate) fn fill(&self, ptr: u64, n: usize, value: f32) -> CudaResult<()> {
        let args = KernelArgs::new().push(ptr).push(n as u64).push(value);
        self.launch("fill_f32", self.grid(n as u64), args)
    }

    pub(crate) fn gemm(&self) -> MutexGuard<'_, Gemm> {
        self.gemm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The im2col slab, grown to at least `len` elements. Holding the guard while enqueueing keeps
    /// concurrent callers from interleaving their uses of it (the stream orders the rest).
    pub(crate) fn scratch(
        &self,
        len: usize,
    ) -> CudaResult<(MutexGuard<'_, Option<DeviceBlock<f32>>>, u64)> {
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|s| s.len() < len) {
            *guard = None;
            // SAFETY: scratch is fully written by im2col before each GEMM reads it.
            *guard = Some(unsafe { self.alloc_block::<f32>(len.max(1)) }?);
        }
        let buf = guard.as_ref().expect("allocated above");
        let ptr = raw_ptr(buf);
        Ok((guard, ptr))
    }

    /// Whether ops are timed (`FLASHVSR_CUDA_OP_PROFILE`): op names then carry shapes.
    pub(crate) fn op_profile_on(&self) -> bool {
        self.profiler.is_some()
    }

    fn device_of(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn finish(
        &self,
        name: &'static str,
        op: impl FnOnce() -> CudaResult<CudaBuffer>,
    ) -> flashvsr_tensor::Result<BufferRef> {
        let buf = self.finish_with(name, op)?;
        Ok(Arc::new(buf))
    }

    /// [`Self::finish`] for an op of any output (several buffers).
    pub(crate) fn finish_with<T>(
        &self,
        name: &'static str,
        op: impl FnOnce() -> CudaResult<T>,
    ) -> flashvsr_tensor::Result<T> {
        CURRENT_OP.with(|op| op.set(name));
        let result = match &self.profiler {
            None => catch(op),
            Some(p) => catch(|| {
                if p.alone() {
                    self.gpu.stream.synchronize()?;
                }
                let start = p.mark(&self.gpu.stream)?;
                let host = std::time::Instant::now();
                let out = op()?;
                let host_ms = host.elapsed().as_secs_f64() * 1e3;
                p.add(name, (start, p.mark(&self.gpu.stream)?), host, host_ms)?;
                Ok(out)
            }),
        };
        // The op's kernels are enqueued: freeing its temporaries now is ordered after them.
        OP_TEMPORARIES.with(|t| t.borrow_mut().clear());
        result.map_err(|e| e.into_tensor(self.device_of()))
    }

    fn err(&self, e: CudaError) -> TensorError {
        e.into_tensor(self.device_of())
    }
}

/// The op's name, and when profiling its shape too (`conv3d 128→128 k3 2×384×704`): the
/// convolutions of a network differ by orders of magnitude in cost. Each distinct name is kept
/// for the process's life (a network has a few dozen shapes).
fn conv_name(op: &'static str, x: &Tensor, w: &Tensor, profiling: bool) -> &'static str {
    if !profiling {
        return op;
    }
    interned(format!(
        "{op} {}→{} k{} {}×{}×{}",
        w.dim(1),
        w.dim(0),
        w.shape().last().copied().unwrap_or(1),
        x.shape().get(1).copied().unwrap_or(1),
        x.shape().get(2).copied().unwrap_or(1),
        x.shape().get(3).copied().unwrap_or(1),
    ))
}

impl CudaBackend {
    /// The op's name, followed when profiling by `detail()` (its shapes): glue ops such as `cat`
    /// are called from many places, and the shapes say which.
    fn described(&self, op: &'static str, detail: impl FnOnce() -> String) -> &'static str {
        if self.profiler.is_none() {
            return op;
        }
        interned(format!("{op} {}", detail()))
    }
}

/// The op's name, with its weight's shape when profiling (`linear 4608←1536`).
pub(crate) fn shaped_name(op: &'static str, w: &Tensor, profiling: bool) -> &'static str {
    if !profiling {
        return op;
    }
    interned(format!("{op} {}←{}", w.dim(0), w.dim(1)))
}

fn interned(name: String) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

thread_local! {
    /// The op running on this thread, for the pool trace.
    static CURRENT_OP: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
    /// f32 copies of bf16-stored inputs made by the op running on this thread (see `ptr`).
    static OP_TEMPORARIES: std::cell::RefCell<Vec<CudaBuffer>> = const { std::cell::RefCell::new(Vec::new()) };
}

type TResult<T> = flashvsr_tensor::Result<T>;

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        self.device_of()
    }

    fn synchronize(&self) -> TResult<()> {
        CudaBackend::synchronize(self).map_err(|e| self.err(e))
    }

    fn device_memory(&self) -> Option<u64> {
        CudaBackend::device_memory(self).ok()
    }

    fn queue_point(&self) -> TResult<Option<Box<dyn QueuePoint>>> {
        let event = catch(|| Ok(self.gpu.stream.record_event(None)?)).map_err(|e| self.err(e))?;
        Ok(Some(Box::new(EventPoint {
            event,
            device: self.device_of(),
        })))
    }

    fn sibling(&self) -> Option<TResult<BackendRef>> {
        Some(
            CudaBackend::sibling(self)
                .map(|b| b as BackendRef)
                .map_err(|e| self.err(e)),
        )
    }

    /// Device-wide memory in use (total − free), which is this process's footprint on an
    /// otherwise idle GPU: context, pools and library workspaces included.
    fn memory_in_use(&self) -> Option<u64> {
        catch(|| {
            self.gpu.ctx.bind_to_thread()?;
            let (free, total) = cudarc::driver::result::mem_get_info()?;
            Ok((total - free) as u64)
        })
        .ok()
    }

    fn release_cached_memory(&self) -> TResult<()> {
        catch(|| self.release_free_memory()).map_err(|e| self.err(e))
    }

    fn tensor_memory(&self) -> Option<&MemoryMeter> {
        Some(&self.meter)
    }

    fn op_profile_reset(&self) {
        if let Some(p) = &self.profiler {
            p.reset();
        }
    }

    fn op_profile_report(&self) -> Option<String> {
        let p = self.profiler.as_ref()?;
        let mut report = p.report().unwrap_or_else(|e| format!("op profile: {e}"));
        // Where the process's device memory went: the context and libraries (taken before any
        // tensor), the pool's high-water marks, and the tensors' own peak.
        let pool = crate::pool::current_pool_high_water(&self.gpu);
        if let Ok((reserved, used)) = pool {
            report.push_str(&format!(
                "device memory: {} MiB taken at start-up (context, kernels, libraries); pool \
                 high water {} MiB reserved, {} MiB used; tensors' peak {} MiB, now {} MiB; converted \
                 conv weights {} MiB\n",
                self.used_at_start >> 20,
                reserved >> 20,
                used >> 20,
                self.meter.peak() >> 20,
                self.meter.in_use() >> 20,
                self.conv_weights.lock().map(|c| c.bytes()).unwrap_or(0) >> 20,
            ));
        }
        if let Some(paged) = &self.paged {
            let st = paged.stats();
            let mib = |pages: usize| (pages as u64 * paged.page_bytes()) >> 20;
            report.push_str(&format!(
                "paged blocks (>= {} MiB): high water {} MiB held, {} MiB live; now {} MiB held; \
                 {} requests from the cache, {} mapped ({} ms creating and mapping), {} cached \
                 spans remapped\n",
                paged.min_bytes >> 20,
                mib(st.pages_high),
                mib(st.live_pages_high),
                mib(st.pages),
                st.cache_hits,
                st.mapped,
                st.driver_us / 1000,
                st.taken,
            ));
        }
        if let Some(Ok((reserved, used))) = self.kept.as_ref().map(|k| k.high_water()) {
            report.push_str(&format!(
                "kept pool (KV cache) high water: {} MiB reserved, {} MiB used\n",
                reserved >> 20,
                used >> 20
            ));
        }
        Some(report)
    }

    fn upload(&self, data: &[f32]) -> TResult<BufferRef> {
        self.finish("upload", || {
            // SAFETY: fully written by the copy below (a zero-length buffer is never read).
            let mut slice = unsafe { self.alloc_block::<f32>(data.len().max(1)) }?;
            if !data.is_empty() {
                self.gpu.stream.memcpy_htod(data, &mut *slice)?;
            }
            Ok(CudaBuffer::new(slice, data.len()).metered(&self.meter))
        })
    }

    fn download(&self, x: &Tensor) -> TResult<Vec<f32>> {
        let result = catch(|| {
            let mut converted = None;
            self.copy_to_host_now(self.row_major_f32(self.input(x)?, &mut converted)?)
        });
        result.map_err(|e| self.err(e))
    }

    fn download_later(&self, x: &Tensor) -> TResult<PendingDownload> {
        let result = catch(|| {
            let mut converted = None;
            let buf = self.row_major_f32(self.input(x)?, &mut converted)?;
            let len = buf_len(buf);
            if len == 0 {
                return Ok(PendingDownload::ready(Vec::new()));
            }
            let Some(mut host) = self.downloads.try_take(len) else {
                return Ok(PendingDownload::ready(self.copy_to_host_now(buf)?));
            };
            match &self.copies {
                Some(copies) => {
                    self.release_copy_sources();
                    copies.wait(&self.gpu.stream.record_event(None)?)?;
                    // SAFETY: `buf` holds `len` f32 values; it (the tensor's buffer or
                    // `converted`) is kept below until the copy completed.
                    unsafe { host.copy_from_device(copies, buf.ptr(), len) }?;
                    let copied = copies.record_event(None)?;
                    let source = CopySource {
                        _kept: (x.buffer().clone(), converted.take()),
                        copied,
                    };
                    self.copy_sources
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(source);
                }
                // SAFETY: `buf` holds `len` f32 values. It and `converted` may be dropped once
                // this returns: their memory is freed on this stream (stream-ordered), after
                // the copy.
                None => unsafe { host.copy_from_device(&self.gpu.stream, buf.ptr(), len) }?,
            }
            let device = self.device_of();
            Ok(PendingDownload::waiting_shared(move || {
                let values = catch(|| DownloadedValues::wait(host, len));
                match values {
                    Ok(v) => Ok(Arc::new(v) as flashvsr_tensor::HostValues),
                    Err(e) => Err(e.into_tensor(device)),
                }
            }))
        });
        result.map_err(|e| self.err(e))
    }

    /// Stages `data` in pinned memory, so that the copy is only queued: a copy from pageable
    /// memory waits for the stream to reach it.
    fn upload_queued(&self, data: &[f32]) -> TResult<BufferRef> {
        if data.is_empty() || data.len() > STAGED_UPLOAD_MAX_VALUES {
            return self.upload(data);
        }
        let staging = flashvsr_tensor::host_stalls::timed("staging take", || {
            self.staging.try_take(data.len())
        });
        let Some(mut staging) = staging else {
            return self.upload(data);
        };
        self.finish("upload_queued", || {
            let values = staging.values(data.len())?;
            flashvsr_tensor::host_stalls::timed("staging copy", || copy_in_parallel(values, data));
            // SAFETY: fully written by the copy below.
            let slice = flashvsr_tensor::host_stalls::timed("upload alloc", || unsafe {
                self.alloc_kept::<f32>(data.len())
            })?;
            // SAFETY: `slice` has room for the values; it is freed on this stream, after the
            // copy. The staging buffer is written again only after this copy completed.
            unsafe { staging.copy_to_device(&self.gpu.stream, raw_ptr(&slice), data.len()) }?;
            Ok(CudaBuffer::new(slice, data.len()).metered(&self.meter))
        })
    }

    fn download_stored(&self, x: &Tensor) -> TResult<HostData> {
        let result = catch(|| {
            let buf = self.input(x)?;
            if let Some(g) = buf.channels_last() {
                // bf16 values in row-major order: the f32 copy's high halves, exactly.
                let ordered = self.channels_last_to_f32(buf, g)?;
                let words = self.gpu.stream.clone_dtoh(ordered.slice())?;
                self.synchronize()?;
                let bits = words[..g.elems()]
                    .iter()
                    .map(|v| (v.to_bits() >> 16) as u16);
                return Ok(HostData::Bf16(bits.collect()));
            }
            let words = self.gpu.stream.clone_dtoh(buf.slice())?;
            self.synchronize()?;
            let len = buf_len(buf);
            Ok(match buf.storage() {
                Storage::F32 => HostData::F32(words[..len].to_vec()),
                // Little-endian words: element 2i in the low half, 2i + 1 in the high half.
                Storage::Bf16 => HostData::Bf16(
                    words
                        .iter()
                        .flat_map(|w| {
                            let b = w.to_bits();
                            [b as u16, (b >> 16) as u16]
                        })
                        .take(len)
                        .collect(),
                ),
            })
        });
        result.map_err(|e| self.err(e))
    }

    fn upload_stored(&self, data: &HostData) -> TResult<BufferRef> {
        match data {
            HostData::F32(v) => self.upload(v),
            HostData::Bf16(v) => self.finish("upload_stored", || {
                let words: Vec<f32> = v
                    .chunks(2)
                    .map(|p| {
                        let hi = p.get(1).copied().unwrap_or(0) as u32;
                        f32::from_bits(p[0] as u32 | (hi << 16))
                    })
                    .collect();
                let storage = Storage::Bf16;
                // SAFETY: fully written by the copy below.
                let mut slice = unsafe { self.gpu.stream.alloc::<f32>(storage.words(v.len())) }?;
                if !words.is_empty() {
                    self.gpu.stream.memcpy_htod(&words, &mut slice)?;
                }
                Ok(CudaBuffer::with_storage(slice, v.len(), storage).metered(&self.meter))
            }),
        }
    }

    /// A tensor of another CUDA backend (another GPU of the host) copied over NVLink or PCIe by
    /// the driver, without a trip through host memory. The source backend must have been
    /// synchronized since it wrote `x` (a split stream's stage ends so): waiting on its stream
    /// here would also wait for the work it queued since, which runs beside this copy.
    fn copy_from_other(&self, x: &Tensor) -> Option<TResult<BufferRef>> {
        let src = x.buffer().as_any().downcast_ref::<CudaBuffer>()?;
        Some(self.finish("copy_from_other", || {
            let src_stream = src.slice().stream();
            let words = src.slice().len();
            // A block of the paged allocator is mapped for its own device only (no peer access
            // set on it): copied first, on its device, into the driver's pool that peer copies
            // read from.
            // A sibling on the same context reads the block as it is.
            let same_context = Arc::ptr_eq(src_stream.context(), &self.gpu.ctx);
            let pooled_source = if src.is_paged() && !same_context {
                src_stream.context().bind_to_thread()?;
                // SAFETY: fully written by the copy below, which is waited for before the peer
                // copy reads it; freed on its stream after this function's synchronize.
                let mut copy = unsafe { src_stream.alloc::<f32>(words) }?;
                src_stream.memcpy_dtod(src.slice(), &mut copy)?;
                src_stream.synchronize()?;
                Some(copy)
            } else {
                None
            };
            let source_ptr = match &pooled_source {
                Some(copy) => crate::buffer::raw_ptr(copy),
                None => crate::buffer::raw_ptr(src.slice()),
            };
            // SAFETY: fully written by the copy below.
            let dst = unsafe { self.gpu.stream.alloc::<f32>(words) }?;
            self.gpu.ctx.bind_to_thread()?;
            // SAFETY: both allocations hold `words` f32 words and are alive: the copy is waited
            // for below, before `src` can be freed.
            unsafe {
                cudarc::driver::result::memcpy_peer_async(
                    self.gpu.ctx.cu_ctx(),
                    crate::buffer::raw_ptr(&dst),
                    src_stream.context().cu_ctx(),
                    source_ptr,
                    words * 4,
                    self.gpu.stream.cu_stream(),
                )?;
            }
            self.gpu.stream.synchronize()?;
            drop(pooled_source);
            let copy = CudaBuffer::with_storage(dst, buf_len(src), src.storage());
            let copy = match src.channels_last() {
                Some(geometry) => copy.into_channels_last(geometry),
                None => copy,
            };
            Ok(copy.metered(&self.meter))
        }))
    }

    fn random_normal(&self, base: u64, std: f32, len: usize) -> Option<TResult<BufferRef>> {
        Some(self.finish("random_normal", || {
            let out = self.output(len)?;
            let pairs = (len as u64).div_ceil(2);
            let args = KernelArgs::new()
                .push(out.ptr())
                .push(len as u64)
                .push(base)
                .push(std);
            self.launch("random_normal_f32", self.grid(pairs), args)?;
            Ok(out)
        }))
    }

    fn zeros(&self, len: usize) -> TResult<BufferRef> {
        self.finish("zeros", || {
            let slice = self.gpu.stream.alloc_zeros::<f32>(len.max(1))?;
            Ok(CudaBuffer::new(slice, len).metered(&self.meter))
        })
    }

    fn permute(&self, x: &Tensor, dims: &[usize]) -> TResult<BufferRef> {
        let name = self.described("permute", || format!("{:?} by {dims:?}", x.shape()));
        self.finish(name, || self.op_permute(x, dims))
    }

    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> TResult<BufferRef> {
        let name = self.described("narrow", || format!("{:?} dim {dim} to {len}", x.shape()));
        self.finish(name, || self.op_narrow(x, dim, start, len))
    }

    fn cat(&self, xs: &[&Tensor], dim: usize) -> TResult<BufferRef> {
        let name = self.described("cat", || {
            let first = xs.first().map(|x| x.shape().to_vec()).unwrap_or_default();
            format!("{} × {first:?} dim {dim}", xs.len())
        });
        self.finish(name, || self.op_cat(xs, dim))
    }

    fn unary(&self, x: &Tensor, op: UnaryOp) -> TResult<BufferRef> {
        let name = self.described("unary", || format!("{op:?} {:?}", x.shape()));
        self.finish(name, || self.op_unary(x, op))
    }

    fn binary(&self, a: &Tensor, b: &Tensor, op: BinaryOp) -> TResult<BufferRef> {
        let name = self.described("binary", || {
            format!("{op:?} {:?} {:?}", a.shape(), b.shape())
        });
        self.finish(name, || self.op_binary(a, b, op))
    }

    fn adain(&self, x: &Tensor, reference: &Tensor) -> TResult<BufferRef> {
        self.finish("adain", || self.op_adain(x, reference))
    }

    fn add_gated(&self, x: &Tensor, y: &Tensor, gate: &Tensor) -> TResult<BufferRef> {
        self.finish("add_gated", || self.op_add_gated(x, y, gate))
    }

    fn channel_affine(&self, x: &Tensor, mul: &Tensor, add: &Tensor) -> TResult<BufferRef> {
        self.finish("channel_affine", || self.op_channel_affine(x, mul, add))
    }

    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> TResult<BufferRef> {
        let name = shaped_name("linear", w, self.profiler.is_some());
        self.finish(name, || self.op_linear(x, w, b, (false, false), None))
    }

    fn linear_compact(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> TResult<BufferRef> {
        let name = shaped_name("linear", w, self.profiler.is_some());
        self.finish(name, || self.op_linear(x, w, b, (false, true), None))
    }

    fn linear_gelu(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> TResult<BufferRef> {
        let name = shaped_name("linear_gelu", w, self.profiler.is_some());
        self.finish(name, || self.op_linear(x, w, b, (true, false), None))
    }

    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        residual: &Tensor,
    ) -> TResult<BufferRef> {
        if x.dim(1) == 0 || x.dim(0) * w.dim(0) == 0 {
            return flashvsr_tensor::linear_then_add(self, x, w, b, residual);
        }
        let name = shaped_name("linear_add", w, self.profiler.is_some());
        self.finish(name, || {
            self.op_linear(x, w, b, (false, false), Some(residual))
        })
    }

    fn modulated_ffn(
        &self,
        x: &Tensor,
        ffn: &flashvsr_tensor::ModulatedFfn,
        pass_rows: usize,
    ) -> TResult<BufferRef> {
        if !self.modulated_ffn_runs_in_place(x, ffn.up.0.dim(0), pass_rows) {
            return flashvsr_tensor::modulated_ffn_composed(x, ffn, pass_rows);
        }
        self.ffn_rows_in_place(x, ffn, pass_rows)
    }

    fn conv_weight_stand_in(&self, w: &Tensor) -> TResult<Option<BufferRef>> {
        // Off: keep the weights. (With a stand-in, a conv that cuDNN cannot run for a later
        // shape fails where it would fall back to im2col, which reads the weight.)
        if !self.options.conv_weight_stand_in {
            return Ok(None);
        }
        let owner = w.buffer().clone();
        let mut cache = self.conv_weights.lock().unwrap_or_else(|e| e.into_inner());
        if cache.get(&owner, w.shape()).is_none() {
            return Ok(None);
        }
        let stand_in = catch(|| {
            // One word: every buffer has a valid device pointer.
            let slice = self.alloc_pooled::<f32>(1)?;
            Ok(CudaBuffer::stand_in(slice, w.elem_count()))
        })
        .map_err(|e| self.err(e))?;
        let stand_in: BufferRef = Arc::new(stand_in);
        cache.rekey(&owner, w.shape(), &stand_in);
        Ok(Some(stand_in))
    }

    fn compact(&self, x: &Tensor) -> TResult<Option<BufferRef>> {
        if !self.options.compact_bf16 {
            return Ok(None);
        }
        // Channels-last tensors are bf16 already.
        let storage = catch(|| Ok(self.input(x)?.storage())).map_err(|e| self.err(e))?;
        if storage == Storage::Bf16 {
            return Ok(None);
        }
        // Compact tensors are the long-lived ones (weights, cached keys): kept apart.
        self.finish("compact", || self.compacted(x)).map(Some)
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> TResult<BufferRef> {
        self.finish("layer_norm", || {
            self.op_layer_norm(x, weight, bias, None, eps)
        })
    }

    fn modulate(&self, x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f32) -> TResult<BufferRef> {
        self.finish("modulate", || {
            self.op_layer_norm(x, None, None, Some((shift, scale)), eps)
        })
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> TResult<BufferRef> {
        self.finish("rms_norm", || self.op_rms_norm(x, weight, eps))
    }

    fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor) -> TResult<BufferRef> {
        let name = self.described("channel_rms_norm", || format!("{:?}", x.shape()));
        self.finish(name, || self.op_channel_rms_norm(x, gamma))
    }

    fn channel_rms_norm_silu(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        prefix: Option<&Tensor>,
    ) -> TResult<BufferRef> {
        let name = self.described("channel_rms_norm_silu", || format!("{:?}", x.shape()));
        self.finish(name, || {
            self.op_channel_rms_norm_silu(x, gamma, prefix, true)
        })
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> TResult<BufferRef> {
        self.finish("rope", || self.op_rope(x, cos, sin, heads))
    }

    fn qkv_split_norm_rope(
        &self,
        x: &Tensor,
        norm_q: &Tensor,
        norm_k: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        heads: usize,
        eps: f32,
        groups: usize,
    ) -> TResult<QkvBuffers> {
        let (q, k, v) = self.finish_with("qkv_split_norm_rope", || {
            self.op_qkv_split_norm_rope(x, (norm_q, norm_k), (cos, sin), heads, eps, groups)
        })?;
        let shared = |b: Vec<CudaBuffer>| -> Vec<BufferRef> {
            b.into_iter().map(|b| Arc::new(b) as BufferRef).collect()
        };
        Ok((Arc::new(q), shared(k), shared(v)))
    }

    fn group_mean(&self, x: &Tensor) -> TResult<BufferRef> {
        self.finish("group_mean", || self.op_group_mean(x))
    }

    fn head_scores(&self, q: &Tensor, k: &Tensor, heads: usize) -> TResult<BufferRef> {
        self.finish("head_scores", || self.op_head_scores(q, k, heads))
    }

    fn conv3d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> TResult<BufferRef> {
        self.finish(conv_name("conv3d", x, w, self.profiler.is_some()), || {
            self.op_conv3d(x, w, b, (stride_t, pad, mode), false)
        })
    }

    fn conv3d_relu(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
    ) -> TResult<BufferRef> {
        self.finish(
            conv_name("conv3d_relu", x, w, self.profiler.is_some()),
            || self.op_conv3d(x, w, b, (stride_t, pad, mode), true),
        )
    }

    fn conv3d_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride_t: usize,
        pad: usize,
        mode: PadMode,
        residual: &Tensor,
        relu: bool,
    ) -> TResult<BufferRef> {
        let name = if relu {
            "conv3d_add_relu"
        } else {
            "conv3d_add"
        };
        self.finish(conv_name(name, x, w, self.profiler.is_some()), || {
            self.op_conv3d_add(x, w, b, (stride_t, pad, mode), residual, relu)
        })
    }

    fn upsample_nearest2x(&self, x: &Tensor) -> TResult<BufferRef> {
        self.finish("upsample_nearest2x", || self.op_upsample_nearest2x(x))
    }

    fn upsample_nearest2x_conv(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> TResult<BufferRef> {
        let name = conv_name("upsample_nearest2x_conv", x, w, self.profiler.is_some());
        let fused = self.finish_with(name, || self.try_upsample_conv(x, w, b, false))?;
        match fused {
            Some(out) => Ok(Arc::new(out)),
            None => {
                let up = x.upsample_nearest2x()?;
                Ok(up.conv3d(w, b, 1, 1, PadMode::Zero)?.buffer().clone())
            }
        }
    }

    fn upsample_nearest2x_conv_relu(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> TResult<BufferRef> {
        let name = conv_name(
            "upsample_nearest2x_conv_relu",
            x,
            w,
            self.profiler.is_some(),
        );
        let fused = self.finish_with(name, || self.try_upsample_conv(x, w, b, true))?;
        match fused {
            Some(out) => Ok(Arc::new(out)),
            None => {
                let up = x.upsample_nearest2x()?;
                Ok(up.conv3d_relu(w, b, 1, 1, PadMode::Zero)?.buffer().clone())
            }
        }
    }

    fn dilated_blur(&self, x: &Tensor, dilation: usize) -> TResult<BufferRef> {
        self.finish("dilated_blur", || self.op_dilated_blur(x, dilation))
    }

    fn resample_levels(
        &self,
        levels: &Tensor,
        taps_x: &Tensor,
        taps_y: &Tensor,
        window: CanvasWindow,
        bits: u32,
    ) -> TResult<BufferRef> {
        self.finish("resample_levels", || {
            self.op_resample_levels(levels, taps_x, taps_y, window, bits)
        })
    }

    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> TResult<BufferRef> {
        let name = self.described("attention", || format!("q{} k{}", q.dim(0), k.dim(0)));
        self.finish(name, || self.op_attention(q, k, v, heads))
    }

    fn block_sparse_attention(
        &self,
        q: &Tensor,
        k: &[&Tensor],
        v: &[&Tensor],
        mask: &Tensor,
        query_block: usize,
        key_block: usize,
    ) -> TResult<BufferRef> {
        // The first chunk's calls are ~3× a steady chunk's: the shapes tell them apart.
        let name = self.described("block_sparse_attention", || {
            let keys: usize = k.iter().map(|k| k.dim(0)).sum();
            format!("q{} k{keys}", q.dim(0))
        });
        self.finish(name, || {
            self.op_block_sparse_attention(q, k, v, mask, query_block, key_block)
        })
    }

    fn sparse_topk_mask(
        &self,
        scores: &Tensor,
        allowed: &Tensor,
        topk: i64,
        scale: f64,
    ) -> TResult<BufferRef> {
        self.finish("sparse_topk_mask", || {
            self.op_sparse_topk_mask(scores, allowed, topk, scale)
        })
    }
}

fn buf_len(b: &CudaBuffer) -> usize {
    flashvsr_tensor::Buffer::len(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conv3_is_on_tensor_cores_unless_told_otherwise() {
        assert_eq!(direct_conv3_choice(None), (true, true));
        assert_eq!(direct_conv3_choice(Some("1")), (true, true));
        assert_eq!(direct_conv3_choice(Some("mma")), (true, true));
        assert_eq!(direct_conv3_choice(Some("fma")), (true, false));
        assert_eq!(direct_conv3_choice(Some("0")), (false, false));
        let d = CudaOptions::default();
        assert!(d.conv_direct_three && d.conv_direct_three_mma);
    }
}
