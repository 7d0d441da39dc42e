//! Attention launchers. Two kernels: the exact fp32 one (attention.cu, one warp per query row; the
//! parity mode and every head_dim), and the tensor-core flash kernel (flash.cu: head_dim 128, bf16
//! operands, fp32 softmax and accumulation) used when the backend's attention precision is bf16.
//! Dense attention over wider heads runs as GEMMs instead (attention_gemm.rs).
//! On sm_90 the flash kernel has a Hopper form (flash_wgmma.cu: wgmma, a producer warpgroup),
//! the default there in its 128-keys-per-iteration form with the consumer warpgroups' pingpong
//! and K/V copied by TMA (`wgmma_k128pp_tma`; `flash bench` on an H100: mma.sync 1.31 ms per
//! call, wgmma with 64-key iterations 1.12 ms and the same bits, wgmma_k128 1.09, wgmma_k128pp
//! 1.05, wgmma_k128pp_tma 0.89 with wgmma_k128pp's bits; the k128 forms within the bf16
//! tolerances of the others); `FLASHVSR_CUDA_FLASH=wgmma_k128pp` selects the pingpong form with
//! cp.async copies, `wgmma_k128` the k128 form without pingpong, `wgmma` the 64-key form,
//! `w4s2m2` the mma.sync kernel. Dense calls that the TMA form would take (the DiT's
//! cross-attention: 512 keys in one segment) take its persistent form instead (one CTA per SM
//! looping over the query blocks, the next one's Q and K/V copied while the current one computes;
//! the same bits; `FLASHVSR_CUDA_DENSE_PERSISTENT=0` for the one-CTA-per-item form).

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, DeviceRepr, LaunchConfig};
use flashvsr_tensor::Tensor;

use crate::backend::{AttentionPrecision, CudaBackend};
use crate::buffer::{CudaBuffer, Storage};
use crate::error::{CudaError, CudaResult};
use crate::kernels::{
    flash_kernel_name, flash_sage8_form_kernel_name, flash_sage8_kernel_name,
    flash_wgmma_k128_kernel_name, flash_wgmma_kernel_name, Kernels, ATTENTION_WIDTHS,
    FLASH_SAGE8_FORMS, FLASH_SAGE8_UNFOLDED,
};
use crate::launch::KernelArgs;
use crate::ops::mask::WorkOrder;

/// The flash kernels' shape (FA_* in flash.cu): head_dim, query rows per work item (the mask's
/// query block), keys per tile.
pub(crate) const FLASH_HD: usize = 128;
const FLASH_ROWS: usize = 128;
const FLASH_KEYS: usize = 64;
/// FA_MAX_SEGMENTS in flash.cu.
const FLASH_MAX_SEGMENTS: usize = 16;

/// `FaSegments` of flash.cu: K and V as segments of rows, read in place.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FlashSegments {
    k: [u64; FLASH_MAX_SEGMENTS],
    v: [u64; FLASH_MAX_SEGMENTS],
    first_key: [i32; FLASH_MAX_SEGMENTS],
    count: i32,
}

// SAFETY: plain data mirroring the kernel's parameter struct.
unsafe impl DeviceRepr for FlashSegments {}

/// FW_TMA_MAX_SEGMENTS in flash_wgmma.cu: the segments the TMA form takes.
const FLASH_TMA_MAX_SEGMENTS: usize = 8;

/// `FwTensorMaps` of flash_wgmma.cu: each segment's K and V tensor map (`CUtensorMap`'s 128
/// opaque bytes), unused ones zero. (Its 128-byte alignment is the kernel parameter's; the
/// driver copies the bytes from wherever they are.)
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FlashTensorMaps {
    k: [[u64; 16]; FLASH_TMA_MAX_SEGMENTS],
    v: [[u64; 16]; FLASH_TMA_MAX_SEGMENTS],
}

// SAFETY: plain data mirroring the kernel's parameter struct.
unsafe impl DeviceRepr for FlashTensorMaps {}

/// The TMA view of one K or V segment of `rows` rows (row `r`, head `h` at `r · row_stride + h ·
/// head_stride` elements of bf16): 3-D, innermost first, (64 dims of a half head, 2 · heads
/// halves, rows), so that a box of (64, 1, 64) is one 64-dim half of a 64-key unit, 64 rows of
/// 128 bytes: the layout of one half of an operand in flash_wgmma.cu (`fw_swz`) when copied with
/// the 128-byte swizzle into a 1024-byte-aligned destination. A head's two halves are adjacent
/// and heads 128 elements apart only in the row layout (`head_stride` = 128); TMA needs a
/// 16-byte-aligned base and row stride, rows within i32 coordinates.
#[derive(Debug, PartialEq, Eq)]
struct KvTensorMapGeometry {
    dims: [u64; 3],
    /// Bytes between consecutive indices of dims 1 and 2.
    strides: [u64; 2],
    box_dims: [u32; 3],
}

fn kv_tensor_map_geometry(
    ptr: u64,
    rows: usize,
    heads: usize,
    row_stride: u64,
    head_stride: u64,
) -> Option<KvTensorMapGeometry> {
    let row_bytes = row_stride * 2;
    let ok = head_stride == FLASH_HD as u64
        && row_stride >= (heads * FLASH_HD) as u64
        && heads > 0
        && rows > 0
        && rows <= i32::MAX as usize
        && ptr.is_multiple_of(16)
        && row_bytes.is_multiple_of(16)
        && row_bytes < 1 << 40;
    ok.then_some(KvTensorMapGeometry {
        dims: [64, 2 * heads as u64, rows as u64],
        strides: [128, row_bytes],
        box_dims: [64, 1, FLASH_KEYS as u32],
    })
}

/// A tiled tensor map (128-byte swizzle, L2 promotion 256 B, rows past the end read as zeros) of
/// `dims` (innermost first) with the byte `strides` of dims 1.. and `box_dims`; None where the
/// driver refuses it. (Drivers have the entry point from CUDA 12.0; the backend runs on none
/// older than its NVRTC, 13.)
fn encode_tensor_map(
    ptr: u64,
    data_type: sys::CUtensorMapDataType,
    dims: &[u64],
    strides: &[u64],
    box_dims: &[u32],
) -> Option<[u64; 16]> {
    let rank = dims.len();
    if !(1..=5).contains(&rank) || strides.len() + 1 != rank || box_dims.len() != rank {
        return None;
    }
    let element_strides = [1u32; 5];
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    // SAFETY: dims, box and element strides have `rank` entries and strides `rank - 1`, as
    // checked above; the driver writes the map and reads nothing at `ptr`.
    let result = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            data_type,
            rank as u32,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            box_dims.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    // SAFETY: written by the driver on success (and zeroed before in any case).
    (result == sys::CUresult::CUDA_SUCCESS).then(|| unsafe { map.assume_init() }.opaque)
}

/// The bf16 K or V map of `geometry` at `ptr`.
fn encode_kv_tensor_map(ptr: u64, geometry: &KvTensorMapGeometry) -> Option<[u64; 16]> {
    encode_tensor_map(
        ptr,
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        &geometry.dims,
        &geometry.strides,
        &geometry.box_dims,
    )
}

/// The TMA view of the int8 K that the sage pre-pass writes (`sage_quantize_k`): `rows` rows of
/// `row_bytes` bytes (all heads' 128 dims), 2-D, innermost first; a box is one head's 128 bytes
/// of 64 keys (one 64-key unit, 8 KB), each key one 128-byte swizzle row, as flash_sage8_body
/// reads it. None where the driver refuses it.
fn encode_sage8_k_tensor_map(ptr: u64, rows: usize, row_bytes: usize) -> Option<[u64; 16]> {
    if !ptr.is_multiple_of(16) || !row_bytes.is_multiple_of(128) || rows > i32::MAX as usize {
        return None;
    }
    encode_tensor_map(
        ptr,
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
        &[row_bytes as u64, rows as u64],
        &[row_bytes as u64],
        &[128, FLASH_KEYS as u32],
    )
}

/// Every segment's K and V tensor maps (`rows` per segment, pointers and strides as the kernel
/// gets them); None where a segment cannot have one (then the call takes the form without TMA).
fn flash_tensor_maps(
    segments: &FlashSegments,
    rows: &[usize],
    heads: usize,
    (row_stride, head_stride): (u64, u64),
) -> Option<FlashTensorMaps> {
    if rows.len() > FLASH_TMA_MAX_SEGMENTS {
        return None;
    }
    let mut maps = FlashTensorMaps::default();
    for (i, &n) in rows.iter().enumerate() {
        for (ptr, map) in [
            (segments.k[i], &mut maps.k[i]),
            (segments.v[i], &mut maps.v[i]),
        ] {
            let geometry = kv_tensor_map_geometry(ptr, n, heads, row_stride, head_stride)?;
            *map = encode_kv_tensor_map(ptr, &geometry)?;
        }
    }
    Some(maps)
}

/// One flash kernel instance and its launch: warps per CTA, cp.async stages, m16 tiles of query
/// rows per warp (1: 16 rows, 4 warps = half a query block per CTA, two CTAs per SM; 2: 32 rows,
/// each K/V fragment read from shared memory feeds twice the MMAs, Q staged in shared memory), and
/// whether K/V are converted to a head-major bf16 layout (each 64-key tile one contiguous 16 KB
/// run) or keep the row layout. `wgmma`: the Hopper kernel of flash_wgmma.cu instead (sm_90a
/// only; two consumer warpgroups of 64 query rows and a producer warpgroup per CTA, `stages` K/V
/// stages; `m_tiles` unused), and its keys per iteration `key_tile`: 64 (FW_KT), or 128 for
/// the k128 form (`flash_wgmma_k128_body`: two 64-key units per iteration). The mma.sync
/// kernel's is 64. `pingpong` (k128 only): the consumer warpgroups take turns to issue their
/// wgmmas. `tma` (k128 with pingpong only): K/V copied by TMA from each segment's tensor maps
/// (row layout only, at most FLASH_TMA_MAX_SEGMENTS segments; other calls take the same form
/// without TMA), with separate K and V barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlashConfig {
    warps: usize,
    stages: usize,
    m_tiles: usize,
    head_major: bool,
    wgmma: bool,
    key_tile: usize,
    pingpong: bool,
    tma: bool,
}

/// The instances flash.cu defines as (warps, stages, m-tiles): `FLASH_INSTANCE(W, S)` with one
/// m-tile, `FLASH_INSTANCE_M(W, S, M, ..)` with more.
const FLASH_INSTANCES: [(usize, usize, usize); 5] =
    [(4, 3, 1), (4, 2, 1), (8, 3, 1), (4, 2, 2), (4, 3, 2)];

/// The K/V stages of the instances flash_wgmma.cu defines (`FLASH_WGMMA_INSTANCE(S)`), the first
/// the one `FLASHVSR_CUDA_FLASH=wgmma` selects.
const FLASH_WGMMA_STAGES: [usize; 2] = [4, 5];

/// The K/V stages of flash_wgmma.cu's k128 instances (`FLASH_WGMMA_K128_INSTANCE(S)`), the first
/// the one `FLASHVSR_CUDA_FLASH=wgmma_k128` selects: 3 stages of 64 KB are as many as fit.
const FLASH_WGMMA_K128_STAGES: [usize; 1] = [3];
/// Keys per iteration of the k128 instances (FW_K128_KT).
const FLASH_WGMMA_K128_KEYS: usize = 128;

impl FlashConfig {
    /// 4 warps of 32 query rows (each K/V fragment read from shared memory feeds both of a
    /// warp's 16-row tiles), 2 stages: two CTAs per SM. On an H100 (BENCHMARKS.md, session 6) the
    /// sage attention of config A took 1.56 ms per call against 1.91 ms with 16 rows per warp
    /// (w4s3, the default before); w4s3m2 (one CTA per SM) measured slower. It fits the 99 KiB
    /// of shared memory of sm_86/sm_89.
    const DEFAULT: FlashConfig = FlashConfig {
        warps: 4,
        stages: 2,
        m_tiles: 2,
        head_major: false,
        wgmma: false,
        key_tile: FLASH_KEYS,
        pingpong: false,
        tma: false,
    };

    /// The Hopper kernel with `stages` K/V stages: 12 warps (two consumer warpgroups and the
    /// producer warpgroup), one CTA per query block.
    const fn wgmma(stages: usize) -> FlashConfig {
        FlashConfig {
            warps: 12,
            stages,
            m_tiles: 1,
            head_major: false,
            wgmma: true,
            key_tile: FLASH_KEYS,
            pingpong: false,
            tma: false,
        }
    }

    /// The Hopper kernel's k128 form with `stages` K/V stages of 128 keys.
    const fn wgmma_k128(stages: usize) -> FlashConfig {
        FlashConfig {
            key_tile: FLASH_WGMMA_K128_KEYS,
            ..FlashConfig::wgmma(stages)
        }
    }

    /// The k128 form with the consumer warpgroups' pingpong (the default on sm_90 before the TMA
    /// form). At config A on an H100 (op profile, real masks, PERF_NOTES.md) sage 1.341 → 1.258
    /// ms per call and block 2.574 → 2.383 against the 64-key form; the plain k128 form 1.300 /
    /// 2.441.
    const fn wgmma_k128_pingpong(stages: usize) -> FlashConfig {
        FlashConfig {
            pingpong: true,
            ..FlashConfig::wgmma_k128(stages)
        }
    }

    /// The pingpong form with K/V copied by TMA: the default on sm_90. At config A on an H100
    /// (op profile, real masks, PERF_NOTES.md) sage 1.263 → 1.082 ms per call and block 2.397 →
    /// 2.022 against the pingpong form with cp.async copies.
    const fn wgmma_k128_pingpong_tma(stages: usize) -> FlashConfig {
        FlashConfig {
            tma: true,
            ..FlashConfig::wgmma_k128_pingpong(stages)
        }
    }

    /// Query rows per CTA.
    const fn rows_per_cta(self) -> usize {
        if self.wgmma {
            FLASH_ROWS
        } else {
            16 * self.m_tiles * self.warps
        }
    }

    /// CTAs per work item (a 128-row query block): SPLIT in flash.cu.
    const fn split(self) -> usize {
        FLASH_ROWS / self.rows_per_cta()
    }

    /// Dynamic shared memory: a K and a V tile of bf16 per stage, and with more than one m-tile
    /// the CTA's Q rows in bf16.
    /// The wgmma kernel: 1 KB to align its operands to the 128-byte swizzle's 1024-byte period,
    /// Q's 128 rows of bf16 and the stages.
    const fn smem(self) -> usize {
        if self.wgmma {
            return 1024
                + FLASH_ROWS * FLASH_HD * 2
                + self.stages * 2 * self.key_tile * FLASH_HD * 2;
        }
        let q = if self.m_tiles > 1 {
            self.rows_per_cta() * FLASH_HD * 2
        } else {
            0
        };
        self.stages * 2 * FLASH_KEYS * FLASH_HD * 2 + q
    }

    fn kernel_name(self) -> String {
        if self.wgmma && self.key_tile == FLASH_WGMMA_K128_KEYS {
            flash_wgmma_k128_kernel_name(self.stages, self.pingpong, self.tma)
        } else if self.wgmma {
            flash_wgmma_kernel_name(self.stages)
        } else {
            flash_kernel_name(self.warps, self.stages, self.m_tiles)
        }
    }

    /// The default (the Hopper kernel's k128 pingpong form where `hopper`, else w4s2m2), or
    /// `FLASHVSR_CUDA_FLASH=w<W>s<S>[m<M>][h]` (tuning experiments, read per call: an instance of
    /// FLASH_INSTANCES; `m2` = 32 query rows per warp, `h` = head-major K/V), or `wgmma[<S>][h]`
    /// (the Hopper kernel, S K/V stages, 4 if not given) or `wgmma_k128[pp][<S>][h]` (its
    /// 128-key form, 3 stages; `pp`: the consumer warpgroups' pingpong) or
    /// `wgmma_k128pp_tma[<S>]` (the pingpong form with K/V copied by TMA); where the device is
    /// no sm_90 (`hopper` false), the default instead. Anything else keeps the default. An
    /// instance whose shared memory the GPU cannot give (w4s3m2 needs 128 KB: not on sm_86/sm_89)
    /// fails at launch.
    fn from_env(hopper: bool) -> FlashConfig {
        FlashConfig::select(std::env::var("FLASHVSR_CUDA_FLASH").ok().as_deref(), hopper)
    }

    /// The instance a knob value names, as `from_env` reads it.
    fn select(knob: Option<&str>, hopper: bool) -> FlashConfig {
        let default = if hopper {
            FlashConfig::wgmma_k128_pingpong_tma(FLASH_WGMMA_K128_STAGES[0])
        } else {
            FlashConfig::DEFAULT
        };
        knob.and_then(FlashConfig::parse)
            .filter(|c| hopper || !c.wgmma)
            .unwrap_or(default)
    }

    fn parse(v: &str) -> Option<FlashConfig> {
        let (v, head_major) = match v.strip_suffix('h') {
            Some(rest) => (rest, true),
            None => (v, false),
        };
        if let Some(rest) = v.strip_prefix("wgmma_k128") {
            let (stages, pingpong) = match rest.strip_prefix("pp") {
                Some(stages) => (stages, true),
                None => (rest, false),
            };
            // TMA: pingpong only, row layout only (no `h`).
            let (stages, tma) = match stages.strip_prefix("_tma") {
                Some(_) if !pingpong || head_major => return None,
                Some(stages) => (stages, true),
                None => (stages, false),
            };
            let stages = match stages {
                "" => FLASH_WGMMA_K128_STAGES[0],
                s if s.starts_with(|c: char| c.is_ascii_digit()) => s.parse().ok()?,
                _ => return None,
            };
            return FLASH_WGMMA_K128_STAGES
                .contains(&stages)
                .then_some(FlashConfig {
                    head_major,
                    pingpong,
                    tma,
                    ..FlashConfig::wgmma_k128(stages)
                });
        }
        if let Some(stages) = v.strip_prefix("wgmma") {
            let stages = match stages {
                "" => FLASH_WGMMA_STAGES[0],
                s if s.starts_with(|c: char| c.is_ascii_digit()) => s.parse().ok()?,
                _ => return None,
            };
            return FLASH_WGMMA_STAGES.contains(&stages).then_some(FlashConfig {
                head_major,
                ..FlashConfig::wgmma(stages)
            });
        }
        let (w, rest) = v.strip_prefix('w')?.split_once('s')?;
        let (s, m_tiles) = match rest.split_once('m') {
            Some((s, m)) => (s, m.parse().ok()?),
            None => (rest, 1),
        };
        let (warps, stages) = (w.parse().ok()?, s.parse().ok()?);
        FLASH_INSTANCES
            .contains(&(warps, stages, m_tiles))
            .then_some(FlashConfig {
                warps,
                stages,
                m_tiles,
                head_major,
                wgmma: false,
                key_tile: FLASH_KEYS,
                pingpong: false,
                tma: false,
            })
    }
}

/// The K/V stages of flash_wgmma.cu's int8 sage instances (`FLASH_SAGE8_INSTANCE(S)`), the first
/// the one `FLASHVSR_CUDA_SAGE_INT8=1` selects (stages of 48 KB: a 16 KB int8 K tile and a 32 KB
/// bf16 V tile). On an H100 (`flash bench`, sage, kernel alone) 3 stages took 0.59 ms per call,
/// 4 stages 0.66.
const FLASH_SAGE8_STAGES: [usize; 2] = [3, 4];
/// The sage pre-pass's keys per partial sum of the K mean (SAGE_SUM_ROWS in flash_wgmma.cu).
const SAGE_SUM_ROWS: usize = 256;
/// The K mean sums every this many chunks of SAGE_SUM_ROWS keys (the first of each): the mean
/// only smooths K before quantisation (the softmax is exact for any vector subtracted), and a
/// sample of one key in 8 estimates it well while the pass reads an eighth of K. At 1920×1080
/// the full mean read all of K once more per call, ~7 ms a pass.
const SAGE_MEAN_CHUNK_STRIDE: usize = 8;

/// The keys the sage pre-pass's K mean sums, of a call's `lk`: the first SAGE_SUM_ROWS of every
/// SAGE_MEAN_CHUNK_STRIDE · SAGE_SUM_ROWS (sampled chunks, keys summed).
fn sage_mean_sample(lk: usize) -> (usize, usize) {
    let sampled = lk.div_ceil(SAGE_SUM_ROWS * SAGE_MEAN_CHUNK_STRIDE);
    let summed = (0..sampled)
        .map(|i| SAGE_SUM_ROWS.min(lk - i * SAGE_SUM_ROWS * SAGE_MEAN_CHUNK_STRIDE))
        .sum();
    (sampled, summed)
}

/// What `FLASHVSR_CUDA_SAGE_INT8` asks of a sage call (key blocks of 64, on the Hopper TMA
/// kernel): `1` (or a stage count of FLASH_SAGE8_STAGES: `3`, `4`) SageAttention's int8 Q·Kᵀ
/// (flash_sage8_body); `prepass` the int8 pre-pass and then the exact bf16 kernel (its output
/// unused: what the pre-pass costs, for measurements). Unset: on (3 stages), as the reference's
/// sage mode computes it (spec §5.6); `0` (or anything else): the exact bf16 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SageInt8 {
    On { stages: usize },
    PrepassOnly,
}

impl SageInt8 {
    fn parse(v: &str) -> Option<SageInt8> {
        match v {
            "1" => Some(SageInt8::On {
                stages: FLASH_SAGE8_STAGES[0],
            }),
            "prepass" => Some(SageInt8::PrepassOnly),
            s => {
                let stages = s.parse().ok()?;
                FLASH_SAGE8_STAGES
                    .contains(&stages)
                    .then_some(SageInt8::On { stages })
            }
        }
    }

    fn from_env() -> Option<SageInt8> {
        match std::env::var("FLASHVSR_CUDA_SAGE_INT8") {
            Ok(v) => SageInt8::parse(&v),
            Err(_) => SageInt8::parse("1"),
        }
    }

    /// The int8 kernel to launch (both knobs read per call, as FLASHVSR_CUDA_SAGE_INT8; 3 stages
    /// only, for measurements): `FLASHVSR_CUDA_SAGE8_FOLD=0` session 11's unfolded softmax;
    /// `FLASHVSR_CUDA_SAGE8_EXP=<form>` another softmax form of FLASH_SAGE8_FORMS (`mufu`: helper
    /// h28's, every exponential on MUFU.EX2 and the accumulator rescaled every tile); else the
    /// default.
    fn kernel_name(stages: usize) -> String {
        let unfolded = std::env::var("FLASHVSR_CUDA_SAGE8_FOLD").is_ok_and(|v| v == "0");
        let form = std::env::var("FLASHVSR_CUDA_SAGE8_EXP")
            .ok()
            .filter(|v| FLASH_SAGE8_FORMS.contains(&v.as_str()));
        match (stages, unfolded, form) {
            (3, true, _) => FLASH_SAGE8_UNFOLDED.to_string(),
            (3, false, Some(form)) => flash_sage8_form_kernel_name(&form),
            _ => flash_sage8_kernel_name(stages),
        }
    }

    /// Dynamic shared memory of the int8 kernel: 1 KB of alignment, Q8 (128 rows of 128 bytes),
    /// the stages (128 keys of int8 K and of bf16 V: 3 bytes per key and dim).
    const fn smem(stages: usize) -> usize {
        1024 + FLASH_ROWS * FLASH_HD + stages * (FLASH_WGMMA_K128_KEYS * FLASH_HD * 3)
    }
}

/// flash_wgmma.cu's persistent kernel for dense calls over one K/V segment
/// (`flash_dense_persistent_body`): one CTA per SM loops over the items, staging the next item's
/// Q and copying K/V while the current one computes; the k128 TMA kernel's bits.
const FLASH_DENSE_PERSISTENT_KERNEL: &str = "attention_flash_dense_bf16_hd128_wgmma_persistent";
/// Its K/V stages (FW_DP_STAGES): two, so that the f32 Q of the next item fits beside them.
const FLASH_DENSE_PERSISTENT_STAGES: usize = 2;

/// Dynamic shared memory of the persistent dense kernel: 1 KB of alignment, Q's 128 rows in bf16,
/// the K/V stages of 128 keys, and the next item's Q rows as f32 (FW_DP_QF32_BYTES).
const fn dense_persistent_smem() -> usize {
    1024 + FLASH_ROWS * FLASH_HD * 2
        + FLASH_DENSE_PERSISTENT_STAGES * 2 * FLASH_WGMMA_K128_KEYS * FLASH_HD * 2
        + FLASH_ROWS * FLASH_HD * 4
}

/// The persistent dense kernel's options (its `flags`): `head_minor`, items in the order query
/// block × heads + head (the CTAs running at once read every head's K/V) instead of head-major;
/// `vector_stores`, the output stored 16 bytes at a time (`fw_store_output_v4`). Neither changes
/// a bit of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DensePersistent {
    head_minor: bool,
    vector_stores: bool,
}

impl DensePersistent {
    /// Both: on an H200 in the 1080p pipeline (op profile, same call, PERF_NOTES.md) `attention
    /// q17280 k512` took 0.258 ms per call with the one-CTA-per-item TMA kernel, 0.249 with the
    /// persistent kernel without either option, 0.227 with both; q51840 0.727 → 0.690 → 0.622.
    const DEFAULT: DensePersistent = DensePersistent {
        head_minor: true,
        vector_stores: true,
    };

    /// `FLASHVSR_CUDA_DENSE_PERSISTENT` (read per call). Unset: on, with DEFAULT's options;
    /// `1` on without them, `1h` with the head-minor order, `1v` with vector stores, `1hv` both;
    /// `0` (or anything else) off: dense calls keep the one-CTA-per-item TMA kernel.
    fn from_env() -> Option<DensePersistent> {
        match std::env::var("FLASHVSR_CUDA_DENSE_PERSISTENT") {
            Ok(v) => DensePersistent::parse(&v),
            Err(_) => Some(DensePersistent::DEFAULT),
        }
    }

    fn parse(v: &str) -> Option<DensePersistent> {
        let (v, vector_stores) = match v.strip_suffix('v') {
            Some(rest) => (rest, true),
            None => (v, false),
        };
        let (v, head_minor) = match v.strip_suffix('h') {
            Some(rest) => (rest, true),
            None => (v, false),
        };
        (v == "1").then_some(DensePersistent {
            head_minor,
            vector_stores,
        })
    }

    /// The kernel's `flags` argument.
    fn flags(self) -> i32 {
        i32::from(self.head_minor) | i32::from(self.vector_stores) << 1
    }
}

/// The sage pre-pass's outputs (device pointers, alive until the op's kernels are enqueued).
struct Sage8Inputs {
    k_scale: u64,
    k_blocks: usize,
    k_map: [u64; 16],
}

/// The flash kernel's work order for a call whose K/V take `head_kv_bytes` a head (bf16, K and V).
/// Default: head by head, heaviest first within a head (the long items start early) while two
/// heads' K/V fit in `l2_bytes`; beyond that, grid order (head-major, query blocks in window order:
/// neighbouring windows select much the same keys, which then stay in L2). Measured on an H100:
/// 1408×768 sage (17 MB a head) by head 1.113 ms a call, grid 1.133; 1920×1152 sage (35 MB a
/// head) grid 2.76, by head 2.83–2.86, heaviest first over all heads 2.92.
/// `FLASHVSR_CUDA_FLASH_ORDER=head|grid|lpt` forces one (experiments).
fn work_order(head_kv_bytes: usize, l2_bytes: usize) -> WorkOrder {
    match std::env::var("FLASHVSR_CUDA_FLASH_ORDER").as_deref() {
        Ok("head") => WorkOrder::ByHeadHeaviestFirst,
        Ok("lpt") => WorkOrder::HeaviestFirst,
        Ok("grid") => WorkOrder::Grid,
        _ if head_kv_bytes.saturating_mul(2) > l2_bytes => WorkOrder::Grid,
        _ => WorkOrder::ByHeadHeaviestFirst,
    }
}

/// Which flash kernels can run on a device (`prepare_flash`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FlashReady {
    /// The default instance (sm_80+, shared-memory limit raised): else the fp32 kernels serve.
    pub default: bool,
    /// The wgmma instances of flash_wgmma.cu (an sm_90 device, so the module was built for
    /// sm_90a; every limit raised): else `FLASHVSR_CUDA_FLASH=wgmma` keeps the default.
    pub wgmma: bool,
    /// The int8 sage instances of flash_wgmma.cu (with `wgmma`, every limit raised): else
    /// `FLASHVSR_CUDA_SAGE_INT8` keeps the bf16 kernel.
    pub sage8: bool,
    /// The persistent dense kernel of flash_wgmma.cu (with `wgmma`, its limit raised): else
    /// dense calls keep the k128 TMA kernel.
    pub dense_persistent: bool,
}

/// Raises the flash kernels' dynamic shared-memory limits (and asks for the largest shared-memory
/// carve-out). The default instance is not ready where the GPU cannot run it (before sm_80, or
/// too little shared memory), so that the fp32 kernels serve instead.
pub(crate) fn prepare_flash(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
    kernels: &Kernels,
) -> FlashReady {
    if cc < (8, 0) || ctx.bind_to_thread().is_err() {
        return FlashReady::default();
    }
    let mut default_ok = false;
    // The wgmma kernels are built (non-empty) for sm_90a only, the target of (9, 0).
    let mut wgmma_ok = cc == (9, 0);
    let classic = FLASH_INSTANCES.map(|(warps, stages, m_tiles)| FlashConfig {
        warps,
        stages,
        m_tiles,
        head_major: false,
        wgmma: false,
        key_tile: FLASH_KEYS,
        pingpong: false,
        tma: false,
    });
    let hopper: Vec<FlashConfig> = FLASH_WGMMA_STAGES
        .map(FlashConfig::wgmma)
        .into_iter()
        .chain(FLASH_WGMMA_K128_STAGES.map(FlashConfig::wgmma_k128))
        .chain(FLASH_WGMMA_K128_STAGES.map(FlashConfig::wgmma_k128_pingpong))
        .chain(FLASH_WGMMA_K128_STAGES.map(FlashConfig::wgmma_k128_pingpong_tma))
        .collect();
    let wanted: &[FlashConfig] = if wgmma_ok { &hopper } else { &[] };
    for cfg in classic.iter().chain(wanted) {
        let Ok(f) = kernels.get(&cfg.kernel_name()) else {
            wgmma_ok &= !cfg.wgmma;
            continue;
        };
        let ok = f
            .set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                cfg.smem() as i32,
            )
            .is_ok();
        // A hint only: failing it costs occupancy, not correctness.
        let _ = f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            100,
        );
        if *cfg == FlashConfig::DEFAULT {
            default_ok = ok;
        }
        if cfg.wgmma {
            wgmma_ok &= ok;
        }
    }
    let sage8_names = FLASH_SAGE8_STAGES
        .iter()
        .map(|&stages| (stages, flash_sage8_kernel_name(stages)))
        .chain([(3, FLASH_SAGE8_UNFOLDED.to_string())])
        .chain(
            FLASH_SAGE8_FORMS
                .iter()
                .map(|form| (3, flash_sage8_form_kernel_name(form))),
        )
        .collect::<Vec<_>>();
    let sage8_ok = wgmma_ok
        && sage8_names.iter().all(|(stages, name)| {
            let stages = *stages;
            kernels.get(name).is_ok_and(|f| {
                f.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    SageInt8::smem(stages) as i32,
                )
                .is_ok()
            })
        });
    let dense_persistent_ok = wgmma_ok
        && kernels.get(FLASH_DENSE_PERSISTENT_KERNEL).is_ok_and(|f| {
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dense_persistent_smem() as i32,
            )
            .is_ok()
        });
    FlashReady {
        default: default_ok,
        wgmma: wgmma_ok && default_ok,
        sage8: sage8_ok && default_ok,
        dense_persistent: dense_persistent_ok && default_ok,
    }
}

/// Query rows per block (one warp each), as `ATT_WARPS` in attention.cu.
const ROWS_PER_BLOCK: usize = 4;

/// The kernel instance for `head_dim`: values per lane so that 32 lanes cover a head.
fn width_for(head_dim: usize) -> CudaResult<usize> {
    ATTENTION_WIDTHS
        .iter()
        .copied()
        .find(|&w| 32 * w >= head_dim)
        .ok_or_else(|| {
            CudaError::Unsupported(format!(
                "attention head_dim {head_dim} > {}",
                32 * ATTENTION_WIDTHS[ATTENTION_WIDTHS.len() - 1]
            ))
        })
}

fn int(what: &str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported(format!("{what} = {v} exceeds i32")))
}

fn config(rows: usize, heads: usize, head_dim: usize) -> CudaResult<LaunchConfig> {
    if heads > 65_535 {
        return Err(CudaError::Unsupported(format!("{heads} heads")));
    }
    Ok(LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, heads as u32, 1),
        block_dim: (32 * ROWS_PER_BLOCK as u32, 1, 1),
        shared_mem_bytes: (ROWS_PER_BLOCK * head_dim * 4) as u32,
    })
}

impl CudaBackend {
    /// Whether an attention of this head_dim runs on the flash kernel.
    fn use_flash(&self, head_dim: usize) -> bool {
        self.options().attention == AttentionPrecision::Bf16
            && self.flash_ready.default
            && head_dim == FLASH_HD
    }

    /// `x` (rows × heads·128) as bf16 for the flash kernel: its own storage when it is kept in
    /// bf16 (the KV cache in fast mode), else converted into a temporary that lives until the op
    /// has enqueued its kernels, in the same layout, or head-major (heads × rows × 128) when
    /// `head_major` and `x` is 16-byte aligned. Returns the data and its (row, head) strides in
    /// elements.
    fn to_bf16(&self, x: &Tensor, heads: usize, head_major: bool) -> CudaResult<(u64, u64, u64)> {
        let (rows, dim) = (x.dim(0), x.dim(1));
        let row_layout = (dim as u64, FLASH_HD as u64);
        if let (ptr, Storage::Bf16) = self.raw(x)? {
            if ptr % 16 == 0 {
                return Ok((ptr, row_layout.0, row_layout.1));
            }
        }
        let n = rows * dim;
        let y = self.output_as(n, Storage::Bf16)?;
        let x_ptr = self.ptr(x)?;
        let strides = if head_major && x_ptr % 16 == 0 {
            let args = KernelArgs::new()
                .push(x_ptr)
                .push(y.ptr())
                .push(rows as u64)
                .push(int("heads", heads)?);
            self.launch("to_bf16_heads_f32", self.grid(n.div_ceil(4) as u64), args)?;
            (FLASH_HD as u64, (rows * FLASH_HD) as u64)
        } else {
            let n4 = if x_ptr % 16 == 0 { n / 4 } else { 0 };
            let args = KernelArgs::new()
                .push(x_ptr)
                .push(y.ptr())
                .push(n as u64)
                .push(n4 as u64);
            self.launch("to_bf16_f32", self.grid(n.div_ceil(4) as u64), args)?;
            row_layout
        };
        Ok((self.keep_for_op(y), strides.0, strides.1))
    }

    /// The segments' bf16 data for the flash kernel (see `to_bf16`; head-major only for one
    /// segment) and their common (row, head) strides.
    fn flash_segments(
        &self,
        k: &[&Tensor],
        v: &[&Tensor],
        heads: usize,
        cfg: FlashConfig,
    ) -> CudaResult<(FlashSegments, (u64, u64))> {
        if k.is_empty() || k.len() > FLASH_MAX_SEGMENTS || k.len() != v.len() {
            return Err(CudaError::Input(format!("{} key segments", k.len())));
        }
        let head_major = cfg.head_major && k.len() == 1;
        let mut segments = FlashSegments::default();
        let mut layout = None;
        let mut first_key = 0;
        for (i, (ks, vs)) in k.iter().zip(v).enumerate() {
            let (k_ptr, row, head) = self.to_bf16(ks, heads, head_major)?;
            let (v_ptr, v_row, v_head) = self.to_bf16(vs, heads, head_major)?;
            if (v_row, v_head) != (row, head) || layout.is_some_and(|l| l != (row, head)) {
                return Err(CudaError::Input("k and v segments differ in layout".into()));
            }
            layout = Some((row, head));
            segments.k[i] = k_ptr;
            segments.v[i] = v_ptr;
            segments.first_key[i] = int("key rows", first_key)?;
            first_key += ks.dim(0);
        }
        segments.count = k.len() as i32;
        Ok((segments, layout.unwrap_or_default()))
    }

    /// Row segments as one tensor (for the kernels that read one K and one V).
    fn joined(&self, xs: &[&Tensor]) -> CudaResult<Tensor> {
        let rows = xs.iter().map(|x| x.dim(0)).sum();
        let buf = self.op_cat(xs, 0)?;
        Tensor::from_buffer(xs[0].backend(), Arc::new(buf), &[rows, xs[0].dim(1)])
            .map_err(|e| CudaError::Input(e.to_string()))
    }

    /// The flash kernel over `items` = heads × query blocks of 128 rows. `k`, `v`: segments of
    /// rows (at most FLASH_MAX_SEGMENTS; all but the last a multiple of FLASH_KEYS rows), `lk`
    /// keys in all. `sparse` (device pointers): `None` for dense attention over all `lk` keys,
    /// else the offsets (items + 1), the selected key blocks, the launch order (0: grid order) and
    /// the key block, as built by `compact_mask`. Returns `out` with the bf16 copy of its values
    /// that the fast mode's output projection reads (written by the same kernel).
    #[allow(clippy::too_many_arguments)]
    fn launch_flash(
        &self,
        q: &Tensor,
        k: &[&Tensor],
        v: &[&Tensor],
        out: CudaBuffer,
        heads: usize,
        sparse: Option<(u64, u64, u64, usize)>,
    ) -> CudaResult<CudaBuffer> {
        let (lq, dim) = (q.dim(0), q.dim(1));
        let lk: usize = k.iter().map(|s| s.dim(0)).sum();
        let mut cfg = FlashConfig::from_env(self.flash_ready.wgmma);
        let query_blocks = lq.div_ceil(FLASH_ROWS);
        let items = heads * query_blocks;
        let split = cfg.split();
        if items * split > i32::MAX as usize {
            return Err(CudaError::Unsupported(format!(
                "{items} attention work items"
            )));
        }
        let (segments, (row_stride, head_stride)) = self.flash_segments(k, v, heads, cfg)?;
        let maps = if cfg.tma {
            let rows: Vec<usize> = k.iter().map(|s| s.dim(0)).collect();
            let maps = flash_tensor_maps(&segments, &rows, heads, (row_stride, head_stride));
            // The same kernel without TMA (same shared memory, same arithmetic) where no maps.
            cfg.tma = maps.is_some();
            maps
        } else {
            None
        };
        let (off, blocks, order, key_block) = sparse.unwrap_or((0, 0, 0, FLASH_KEYS));
        let scale_log2 = std::f32::consts::LOG2_E / (FLASH_HD as f32).sqrt();
        // SageAttention's int8 Q·Kᵀ: sage masks (64-key blocks) on the TMA kernel only (its V
        // maps; the default on sm_90), f32 Q 16-byte aligned (the kernel reads it as float4s).
        let q_ptr = self.ptr(q)?;
        let sage8 = SageInt8::from_env().filter(|_| {
            self.flash_ready.sage8
                && sparse.is_some()
                && key_block == FLASH_KEYS
                && cfg.tma
                && cfg.key_tile == FLASH_WGMMA_K128_KEYS
                && q_ptr.is_multiple_of(16)
        });
        if let (Some(mode), Some(mut maps)) = (sage8, maps) {
            let geometry = (lk, heads);
            let prepared = self.sage8_prepass(&segments, geometry, (row_stride, head_stride))?;
            if let (SageInt8::On { stages }, Some(pre)) = (mode, prepared) {
                maps.k[0] = pre.k_map;
                let copy = self.bf16_copy_output(lq * dim)?;
                let q_mul = std::f32::consts::LOG2_E / (FLASH_HD as f32).sqrt();
                let args = KernelArgs::new()
                    .push(q_ptr)
                    .push(q_mul)
                    .push(pre.k_scale)
                    .push(int("key blocks", pre.k_blocks)?)
                    .push(segments)
                    .push(out.ptr())
                    .push(copy.as_ref().map_or(0, |c| c.ptr()))
                    .push(int("query rows", lq)?)
                    .push(int("key rows", lk)?)
                    .push(int("dim", dim)?)
                    .push(off)
                    .push(blocks)
                    .push(order)
                    .push(int("query blocks", query_blocks)?)
                    .push(maps);
                let launch = LaunchConfig {
                    grid_dim: (items as u32, 1, 1),
                    block_dim: (32 * cfg.warps as u32, 1, 1),
                    shared_mem_bytes: SageInt8::smem(stages) as u32,
                };
                self.launch(&SageInt8::kernel_name(stages), launch, args)?;
                return Ok(out.with_bf16_copy(copy));
            }
        }
        // Dense over one segment on the TMA kernel: the persistent form where asked for (its
        // bulk copies of Q's rows need 16-byte aligned rows).
        let persistent = DensePersistent::from_env().filter(|_| {
            self.flash_ready.dense_persistent
                && sparse.is_none()
                && k.len() == 1
                && lk > 0
                && cfg == FlashConfig::wgmma_k128_pingpong_tma(FLASH_WGMMA_K128_STAGES[0])
                && q_ptr.is_multiple_of(16)
                && dim.is_multiple_of(4)
                && out.ptr().is_multiple_of(16)
        });
        if let (Some(dp), Some(maps)) = (persistent, maps) {
            let copy = self.bf16_copy_output(lq * dim)?;
            let grid = items.min(self.gpu.sm_count.max(1) as usize);
            // Vector stores: 8-byte stores into the bf16 copy (out is 16-byte aligned).
            let dp = DensePersistent {
                vector_stores: dp.vector_stores
                    && copy.as_ref().is_none_or(|c| c.ptr().is_multiple_of(8)),
                ..dp
            };
            let args = KernelArgs::new()
                .push(q_ptr)
                .push(out.ptr())
                .push(copy.as_ref().map_or(0, |c| c.ptr()))
                .push(int("query rows", lq)?)
                .push(int("key rows", lk)?)
                .push(int("dim", dim)?)
                .push(scale_log2)
                .push(int("query blocks", query_blocks)?)
                .push(int("items", items)?)
                .push(dp.flags())
                .push(maps);
            let launch = LaunchConfig {
                grid_dim: (grid as u32, 1, 1),
                block_dim: (32 * cfg.warps as u32, 1, 1),
                shared_mem_bytes: dense_persistent_smem() as u32,
            };
            self.launch(FLASH_DENSE_PERSISTENT_KERNEL, launch, args)?;
            return Ok(out.with_bf16_copy(copy));
        }
        let copy = self.bf16_copy_output(lq * dim)?;
        let args = KernelArgs::new()
            .push(q_ptr)
            .push(segments)
            .push(out.ptr())
            .push(copy.as_ref().map_or(0, |c| c.ptr()))
            .push(int("query rows", lq)?)
            .push(int("key rows", lk)?)
            .push(int("dim", dim)?)
            .push(scale_log2)
            .push(off)
            .push(blocks)
            .push(order)
            .push(int("query blocks", query_blocks)?)
            .push(int("key block", key_block)?)
            .push(row_stride)
            .push(head_stride);
        let args = match maps {
            Some(maps) => args.push(maps),
            None => args,
        };
        let launch = LaunchConfig {
            grid_dim: ((items * split) as u32, 1, 1),
            block_dim: (32 * cfg.warps as u32, 1, 1),
            shared_mem_bytes: cfg.smem() as u32,
        };
        self.launch(&cfg.kernel_name(), launch, args)?;
        Ok(out.with_bf16_copy(copy))
    }

    /// The sage int8 pre-pass of one call (flash_wgmma.cu): the per-head mean of the keys
    /// `sage_mean_sample` picks of `lk` (partial sums of SAGE_SUM_ROWS keys, then summed in a
    /// fixed order: the same bits every run), and K smoothed and quantised per 64-key block, into temporaries of the op (Q is
    /// quantised by the attention kernel). `geometry`: (lk, heads). None where the int8 K's
    /// tensor map cannot be made (the call keeps the bf16 kernel).
    fn sage8_prepass(
        &self,
        segments: &FlashSegments,
        (lk, heads): (usize, usize),
        (row_stride, head_stride): (u64, u64),
    ) -> CudaResult<Option<Sage8Inputs>> {
        let dim = heads * FLASH_HD;
        let grid = |x: usize, y: usize, threads: u32| -> CudaResult<LaunchConfig> {
            Ok(LaunchConfig {
                grid_dim: (int("sage grid", x)? as u32, int("heads", y)? as u32, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            })
        };
        let (chunks, summed) = sage_mean_sample(lk);
        let partial = self.keep_for_op(self.output(chunks * dim)?);
        let mean = self.keep_for_op(self.output(dim)?);
        let args = KernelArgs::new()
            .push(*segments)
            .push(int("key rows", lk)?)
            .push(int("chunk stride", SAGE_MEAN_CHUNK_STRIDE)?)
            .push(row_stride)
            .push(head_stride)
            .push(partial);
        self.launch("sage_k_partial_sums", grid(chunks, heads, 256)?, args)?;
        let args = KernelArgs::new()
            .push(partial)
            .push(int("chunks", chunks)?)
            .push(int("keys summed", summed)?)
            .push(mean);
        self.launch("sage_k_mean", grid(heads, 1, 512)?, args)?;
        // int8 K: k_blocks · 64 rows of `dim` bytes (a multiple of 4: f32 words).
        let k_blocks = lk.div_ceil(FLASH_KEYS);
        let k8 = self.keep_for_op(self.output(k_blocks * FLASH_KEYS * dim / 4)?);
        let k_scale = self.keep_for_op(self.output(heads * k_blocks)?);
        let Some(k_map) = encode_sage8_k_tensor_map(k8, k_blocks * FLASH_KEYS, dim) else {
            return Ok(None);
        };
        let args = KernelArgs::new()
            .push(*segments)
            .push(int("key rows", lk)?)
            .push(row_stride)
            .push(head_stride)
            .push(mean)
            .push(k8)
            .push(k_scale);
        self.launch("sage_quantize_k", grid(k_blocks, heads, 256)?, args)?;
        Ok(Some(Sage8Inputs {
            k_scale,
            k_blocks,
            k_map,
        }))
    }

    pub(crate) fn op_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> CudaResult<CudaBuffer> {
        let (lq, dim, lk) = (q.dim(0), q.dim(1), k.dim(0));
        let hd = dim / heads;
        let out = self.output(lq * dim)?;
        if lq * dim == 0 {
            return Ok(out);
        }
        if self.use_flash(hd) {
            return self.launch_flash(q, &[k], &[v], out, heads, None);
        }
        if self.attention_takes_gemm(hd, lk) {
            match self.attention_by_gemm((q, k, v), heads, &out) {
                Ok(()) => return Ok(out),
                // No cuBLASLt algorithm for a shape: the scalar kernel below rewrites all of out.
                Err(CudaError::Blas(_))
                    if hd <= 32 * ATTENTION_WIDTHS[ATTENTION_WIDTHS.len() - 1] => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!("attention_dense_f32_n{}", width_for(hd)?);
        let args = KernelArgs::new()
            .push(self.ptr(q)?)
            .push(self.ptr(k)?)
            .push(self.ptr(v)?)
            .push(out.ptr())
            .push(int("query rows", lq)?)
            .push(int("key rows", lk)?)
            .push(int("dim", dim)?)
            .push(hd as i32)
            .push(1.0 / (hd as f32).sqrt());
        self.launch(&name, config(lq, heads, hd)?, args)?;
        Ok(out)
    }

    /// `mask` `(heads, query blocks, key blocks)` on the device; compacted there, so nothing
    /// waits for the GPU.
    pub(crate) fn op_block_sparse_attention(
        &self,
        q: &Tensor,
        k: &[&Tensor],
        v: &[&Tensor],
        mask: &Tensor,
        query_block: usize,
        key_block: usize,
    ) -> CudaResult<CudaBuffer> {
        let (lq, dim) = (q.dim(0), q.dim(1));
        let (heads, query_blocks) = (mask.dim(0), mask.dim(1));
        let hd = dim / heads;
        let out = self.output(lq * dim)?;
        if lq * dim == 0 {
            return Ok(out);
        }
        let flash = self.use_flash(hd)
            && query_block == FLASH_ROWS
            && key_block > 0
            && key_block.is_multiple_of(FLASH_KEYS);
        // The flash kernel reads the KV cache's segments where they are; the others get one copy.
        let in_place = k.len() == 1
            || flash
                && k.len() <= FLASH_MAX_SEGMENTS
                && k[..k.len() - 1]
                    .iter()
                    .all(|s| s.dim(0).is_multiple_of(FLASH_KEYS));
        let joined = if in_place {
            None
        } else {
            Some((self.joined(k)?, self.joined(v)?))
        };
        let (k, v): (Vec<&Tensor>, Vec<&Tensor>) = match &joined {
            Some((kj, vj)) => (vec![kj], vec![vj]),
            None => (k.to_vec(), v.to_vec()),
        };
        let order = if flash {
            let keys: usize = k.iter().map(|s| s.dim(0)).sum();
            work_order(keys * FLASH_HD * 2 * 2, self.gpu.l2_bytes)
        } else {
            WorkOrder::Grid
        };
        // Freed in stream order after the kernels: the stream is the one they run on.
        let lists = self.compact_mask(mask, order)?;
        if flash {
            let sparse = Some((lists.offsets, lists.blocks, lists.order, key_block));
            return self.launch_flash(q, &k, &v, out, heads, sparse);
        }
        let name = format!("attention_sparse_f32_n{}", width_for(hd)?);
        let args = KernelArgs::new()
            .push(self.ptr(q)?)
            .push(self.ptr(k[0])?)
            .push(self.ptr(v[0])?)
            .push(out.ptr())
            .push(int("query rows", lq)?)
            .push(int("dim", dim)?)
            .push(hd as i32)
            .push(1.0 / (hd as f32).sqrt())
            .push(lists.offsets)
            .push(lists.blocks)
            .push(int("query block", query_block)?)
            .push(int("query blocks", query_blocks)?)
            .push(int("key block", key_block)?);
        self.launch(&name, config(lq, heads, hd)?, args)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_cover_the_model_head_dims() {
        assert_eq!(width_for(16).unwrap(), 1);
        assert_eq!(width_for(128).unwrap(), 4);
        assert_eq!(width_for(384).unwrap(), 12);
        assert_eq!(width_for(1024).unwrap(), 32);
        assert!(width_for(1025).is_err());
    }

    #[test]
    fn flash_constants_match_the_kernel_source() {
        let src = include_str!("../kernels/flash.cu");
        let common = include_str!("../kernels/flash_common.cuh");
        for (name, value) in [
            ("FA_HD", FLASH_HD),
            ("FA_KT", FLASH_KEYS),
            ("FA_QBLOCK", FLASH_ROWS),
            ("FA_MAX_SEGMENTS", FLASH_MAX_SEGMENTS),
        ] {
            assert!(
                common.contains(&format!("#define {name} {value}\n")),
                "{name} != {value} in flash_common.cuh"
            );
        }
        // FaSegments: the Rust mirror has the C layout of the kernel's parameter struct.
        assert_eq!(
            std::mem::size_of::<FlashSegments>(),
            16 * 8 * 2 + 16 * 4 + 8
        );
        let listed = crate::kernels::SOURCES
            .iter()
            .find(|s| s.name == "flash.cu")
            .unwrap()
            .functions;
        for (w, s, m) in FLASH_INSTANCES {
            let stamp = if m == 1 {
                format!("FLASH_INSTANCE({w}, {s})")
            } else {
                format!("FLASH_INSTANCE_M({w}, {s}, {m},")
            };
            assert!(src.contains(&stamp), "{stamp} not in flash.cu");
            let cfg = FlashConfig::parse(&format!("w{w}s{s}m{m}")).unwrap();
            assert!(listed.contains(&cfg.kernel_name().as_str()));
            // A CTA covers a whole number of its query block's rows...
            assert!(FLASH_ROWS.is_multiple_of(cfg.rows_per_cta()));
            // ...and fits the 227 KiB that an H100 gives one CTA.
            assert!(cfg.smem() <= 227 * 1024);
        }
        // The default fits the sm_86/sm_89 opt-in limit of 99 KiB.
        assert!(FlashConfig::DEFAULT.smem() <= 99 * 1024);
    }

    #[test]
    fn flash_wgmma_source_matches_the_host() {
        let src = include_str!("../kernels/flash_wgmma.cu");
        for (name, value) in [
            ("FW_HD", FLASH_HD),
            ("FW_KT", FLASH_KEYS),
            ("FW_QBLOCK", FLASH_ROWS),
            ("FW_K128_KT", FLASH_WGMMA_K128_KEYS),
        ] {
            assert!(
                src.contains(&format!("#define {name} {value}\n")),
                "{name} != {value} in flash_wgmma.cu"
            );
        }
        // The host fills one FaSegments (flash_common.cuh) for either kernel; both kernels get
        // that header, and neither defines its own.
        for kernel in [src, include_str!("../kernels/flash.cu")] {
            assert!(!kernel.contains("struct FaSegments"));
        }
        assert!(["flash.cu", "flash_wgmma.cu"].iter().all(|name| {
            let source = crate::kernels::SOURCES.iter().find(|s| s.name == *name);
            source.is_some_and(|s| s.text().contains("struct FaSegments {"))
        }));
        let listed = crate::kernels::SOURCES
            .iter()
            .find(|s| s.name == "flash_wgmma.cu")
            .unwrap()
            .functions;
        // The attention instances, the persistent dense kernel, the int8 kernel's unfolded form
        // and other softmax forms, and the sage int8 pre-pass's 3 kernels.
        assert_eq!(
            listed.len(),
            FLASH_WGMMA_STAGES.len()
                + 3 * FLASH_WGMMA_K128_STAGES.len()
                + 1
                + FLASH_SAGE8_STAGES.len()
                + 1
                + FLASH_SAGE8_FORMS.len()
                + 3
        );
        for form in FLASH_SAGE8_FORMS {
            assert!(listed.contains(&flash_sage8_form_kernel_name(form).as_str()));
            assert!(src.contains(&format!("\nFLASH_SAGE8_FORM(3, {form}, ")));
        }
        assert!(listed.contains(&FLASH_DENSE_PERSISTENT_KERNEL));
        // Within an H100's 227 KiB with the kernel's static shared memory (its barriers).
        assert!(dense_persistent_smem() + 1024 <= 227 * 1024);
        let define = format!("#define FW_DP_STAGES {FLASH_DENSE_PERSISTENT_STAGES}\n");
        assert!(src.contains(&define), "{define} not in flash_wgmma.cu");
        assert!(src.contains("#define FW_DP_QF32_BYTES (FW_QBLOCK * FW_HD * 4)\n"));
        assert!(listed.contains(&FLASH_SAGE8_UNFOLDED));
        assert!(src.contains("\nFLASH_SAGE8_UNFOLDED(3)\n"));
        assert_eq!(
            FLASH_SAGE8_UNFOLDED,
            format!("{}_unfolded", flash_sage8_kernel_name(3))
        );
        let instances = FLASH_WGMMA_STAGES
            .map(|s| (s, "FLASH_WGMMA_INSTANCE", "wgmma"))
            .into_iter()
            .chain(FLASH_WGMMA_K128_STAGES.map(|s| (s, "FLASH_WGMMA_K128_INSTANCE", "wgmma_k128")))
            .chain(
                FLASH_WGMMA_K128_STAGES.map(|s| (s, "FLASH_WGMMA_K128PP_INSTANCE", "wgmma_k128pp")),
            )
            .chain(
                FLASH_WGMMA_K128_STAGES
                    .map(|s| (s, "FLASH_WGMMA_K128PP_TMA_INSTANCE", "wgmma_k128pp_tma")),
            );
        for (stages, macro_name, knob) in instances {
            let stamp = format!("\n{macro_name}({stages})\n");
            assert!(src.contains(&stamp), "{stamp} not in flash_wgmma.cu");
            let cfg = FlashConfig::parse(&format!("{knob}{stages}")).unwrap();
            assert!(listed.contains(&cfg.kernel_name().as_str()));
            // One CTA of two consumer warpgroups (and the producer) per query block, within an
            // H100's 227 KiB (with the kernel's 1 KiB of static shared memory).
            assert_eq!((cfg.warps, cfg.rows_per_cta(), cfg.split()), (12, 128, 1));
            assert!(cfg.smem() + 1024 <= 227 * 1024);
            let define = format!("#define FW_THREADS {}\n", 32 * cfg.warps);
            assert!(src.contains(&define), "{define} not in flash_wgmma.cu");
        }
        let define = format!("#define FW_TMA_MAX_SEGMENTS {FLASH_TMA_MAX_SEGMENTS}\n");
        assert!(src.contains(&define), "{define} not in flash_wgmma.cu");
        // FwTensorMaps: a K and a V map of 128 bytes per segment.
        assert_eq!(
            std::mem::size_of::<FlashTensorMaps>(),
            2 * FLASH_TMA_MAX_SEGMENTS * std::mem::size_of::<sys::CUtensorMap>()
        );
        assert_eq!(std::mem::size_of::<sys::CUtensorMap>(), 128);
    }

    #[test]
    fn kv_tensor_map_boxes_are_half_units_of_the_row_layout() {
        // Config A's KV cache segment: 8448 rows of 12 heads x 128 bf16, rows 3072 bytes apart.
        let g = kv_tensor_map_geometry(0x7f00_0000_0000, 8448, 12, 1536, 128).unwrap();
        assert_eq!(g.dims, [64, 24, 8448]);
        assert_eq!(g.strides, [128, 3072]);
        // A box: 64 rows (a unit) of 64 dims = 128 bytes, the 128-byte swizzle's span, 8 KB.
        assert_eq!(g.box_dims, [64, 1, FLASH_KEYS as u32]);
        assert_eq!(g.box_dims[0] as usize * 2, 128);
        assert_eq!(
            g.box_dims.iter().product::<u32>() as usize * 2,
            FLASH_KEYS * 128
        );
        // Element (d, half, row) of the view is bf16 element row * 1536 + 64 half + d of the
        // segment, i.e. dim 64 (half % 2) + d of head half / 2.
        let at =
            |d: u64, half: u64, row: u64| (d * 2 + half * g.strides[0] + row * g.strides[1]) / 2;
        assert_eq!(at(5, 2 * 7 + 1, 100), 100 * 1536 + 7 * 128 + 64 + 5);
        // The whole row of all heads lies within the row stride.
        assert_eq!(g.dims[0] * 2 * g.dims[1], g.strides[1]);
        // A segment of a wider tensor (the row holds more than these heads) is fine too.
        assert!(kv_tensor_map_geometry(0, 64, 2, 1536, 128).is_some());
        // Head-major layouts, misaligned bases or row strides, empty segments: no map.
        assert_eq!(kv_tensor_map_geometry(0, 8448, 12, 128, 8448 * 128), None);
        assert_eq!(kv_tensor_map_geometry(8, 64, 2, 256, 128), None);
        assert_eq!(kv_tensor_map_geometry(0, 64, 2, 260, 128), None);
        assert_eq!(kv_tensor_map_geometry(0, 0, 2, 256, 128), None);
        assert_eq!(kv_tensor_map_geometry(0, 64, 3, 256, 128), None);
        // More segments than the kernel takes maps for: none (the call takes the cp.async form),
        // decided before any map is encoded.
        let rows = [64; FLASH_TMA_MAX_SEGMENTS + 1];
        let segments = FlashSegments::default();
        assert!(flash_tensor_maps(&segments, &rows, 2, (256, 128)).is_none());
    }

    #[test]
    fn work_order_goes_by_grid_once_two_heads_of_kv_overflow_l2() {
        if std::env::var_os("FLASHVSR_CUDA_FLASH_ORDER").is_some() {
            return; // forced by the environment
        }
        let l2 = 50 << 20;
        // 1408×768 sage, a steady chunk: 4 groups × 8448 keys, 512 bytes a key and head.
        assert_eq!(
            work_order(4 * 8448 * 512, l2),
            WorkOrder::ByHeadHeaviestFirst
        );
        // 1920×1152: 4 × 17280 keys.
        assert_eq!(work_order(4 * 17280 * 512, l2), WorkOrder::Grid);
        // No L2 size from the driver: grid.
        assert_eq!(work_order(1 << 20, 0), WorkOrder::Grid);
    }

    #[test]
    fn sage_mean_samples_the_first_256_keys_of_every_2048() {
        // 1920×1080 steady chunk: 34 sampled chunks, all full.
        assert_eq!(sage_mean_sample(69_120), (34, 34 * 256));
        assert_eq!(sage_mean_sample(100), (1, 100));
        assert_eq!(sage_mean_sample(2_048), (1, 256));
        assert_eq!(sage_mean_sample(2_100), (2, 256 + 52));
    }

    #[test]
    fn sage_int8_knob_and_instances() {
        assert_eq!(
            SageInt8::parse("1"),
            Some(SageInt8::On {
                stages: FLASH_SAGE8_STAGES[0]
            })
        );
        assert_eq!(SageInt8::parse("4"), Some(SageInt8::On { stages: 4 }));
        assert_eq!(SageInt8::parse("prepass"), Some(SageInt8::PrepassOnly));
        for off in ["0", "", "2", "5", "yes"] {
            assert_eq!(SageInt8::parse(off), None, "{off}");
        }
        let src = include_str!("../kernels/flash_wgmma.cu");
        let listed = crate::kernels::SOURCES
            .iter()
            .find(|s| s.name == "flash_wgmma.cu")
            .unwrap()
            .functions;
        for stages in FLASH_SAGE8_STAGES {
            assert!(src.contains(&format!("\nFLASH_SAGE8_INSTANCE({stages})\n")));
            assert!(listed.contains(&flash_sage8_kernel_name(stages).as_str()));
            // Within an H100's 227 KiB with the kernel's static shared memory (under 1 KiB).
            assert!(SageInt8::smem(stages) + 1024 <= 227 * 1024);
        }
        assert_eq!(SageInt8::smem(4), 1024 + 16 * 1024 + 4 * 48 * 1024);
        assert!(src.contains(&format!("#define SAGE_SUM_ROWS {SAGE_SUM_ROWS}\n")));
        // The int8 K stage (FW_S8_K_TILE_BYTES) and V tile of the kernel: 16 + 32 KB.
        assert!(
            src.contains("#define FW_S8_STAGE_BYTES (FW_S8_K_TILE_BYTES + FW_K128_TILE_BYTES)\n")
        );
    }

    #[test]
    fn dense_persistent_knob() {
        let parse =
            |v| DensePersistent::parse(v).map(|d| (d.head_minor, d.vector_stores, d.flags()));
        assert_eq!(parse("1"), Some((false, false, 0)));
        assert_eq!(parse("1h"), Some((true, false, 1)));
        assert_eq!(parse("1v"), Some((false, true, 2)));
        assert_eq!(parse("1hv"), Some((true, true, 3)));
        for off in ["0", "", "h", "hv", "1vh", "2", "yes"] {
            assert_eq!(parse(off), None, "{off}");
        }
        assert_eq!(DensePersistent::DEFAULT.flags(), 3);
    }

    #[test]
    fn flash_knob_parses_instances_only() {
        let c = FlashConfig::parse("w4s2h").unwrap();
        assert_eq!(
            (c.warps, c.stages, c.m_tiles, c.head_major),
            (4, 2, 1, true)
        );
        assert_eq!(FlashConfig::parse("w4s2m2"), Some(FlashConfig::DEFAULT));
        assert_eq!(
            FlashConfig::parse("w4s3m1"),
            FlashConfig::parse("w4s3").filter(|c| c.m_tiles == 1)
        );
        assert_eq!(FlashConfig::parse("w8s3").map(|c| c.warps), Some(8));
        let c = FlashConfig::parse("w4s3m2h").unwrap();
        assert_eq!(
            (c.warps, c.stages, c.m_tiles, c.head_major),
            (4, 3, 2, true)
        );
        assert_eq!(FlashConfig::parse("w2s3"), None);
        // 8 warps of 32 rows would span two query blocks.
        assert_eq!(FlashConfig::parse("w8s3m2"), None);
        assert_eq!(FlashConfig::parse("w4s2m3"), None);
        assert_eq!(FlashConfig::parse("w4s2m"), None);
        assert_eq!(FlashConfig::parse("w4s2mh"), None);
        assert_eq!(FlashConfig::parse("x"), None);
        let w = FlashConfig::parse("wgmma").unwrap();
        assert!(w.wgmma && !w.head_major);
        assert_eq!((w.warps, w.stages), (12, FLASH_WGMMA_STAGES[0]));
        assert_eq!(FlashConfig::parse("wgmma4"), Some(w));
        let w5 = FlashConfig::parse("wgmma5h").unwrap();
        assert!(w5.wgmma && w5.head_major && w5.stages == 5);
        assert_eq!(w5.kernel_name(), "attention_flash_bf16_hd128_wgmma_s5");
        assert_eq!(FlashConfig::parse("wgmma3"), None);
        assert_eq!(FlashConfig::parse("wgmma-4"), None);
        assert_eq!(FlashConfig::parse("wgmmax"), None);
        let k128 = FlashConfig::parse("wgmma_k128").unwrap();
        assert!(k128.wgmma && !k128.head_major && k128.key_tile == 128);
        assert_eq!((k128.warps, k128.stages), (12, FLASH_WGMMA_K128_STAGES[0]));
        assert_eq!(FlashConfig::parse("wgmma_k1283"), Some(k128));
        assert!(FlashConfig::parse("wgmma_k128h").unwrap().head_major);
        assert_eq!(
            k128.kernel_name(),
            "attention_flash_bf16_hd128_wgmma_k128_s3"
        );
        assert_eq!(FlashConfig::parse("wgmma_k1284"), None);
        assert_eq!(FlashConfig::parse("wgmma_k64"), None);
        assert_eq!(FlashConfig::parse("wgmma_k128x"), None);
        assert!(!k128.pingpong);
        let pp = FlashConfig::parse("wgmma_k128pp").unwrap();
        assert_eq!(
            pp,
            FlashConfig {
                pingpong: true,
                ..k128
            }
        );
        assert_eq!(
            pp.kernel_name(),
            "attention_flash_bf16_hd128_wgmma_k128pp_s3"
        );
        assert_eq!(
            FlashConfig::parse("wgmma_k128pp3h").map(|c| c.head_major),
            Some(true)
        );
        assert_eq!(FlashConfig::parse("wgmma_k128ppx"), None);
        assert!(!pp.tma);
        let tma = FlashConfig::parse("wgmma_k128pp_tma").unwrap();
        assert_eq!(tma, FlashConfig { tma: true, ..pp });
        assert_eq!(FlashConfig::parse("wgmma_k128pp_tma3"), Some(tma));
        assert_eq!(
            tma.kernel_name(),
            "attention_flash_bf16_hd128_wgmma_k128pp_tma_s3"
        );
        // TMA maps need the row layout, and come with the pingpong form only.
        assert_eq!(FlashConfig::parse("wgmma_k128pp_tmah"), None);
        assert_eq!(FlashConfig::parse("wgmma_k128_tma"), None);
        assert_eq!(FlashConfig::parse("wgmma_k128pp_tma4"), None);
        assert_eq!(tma.smem(), pp.smem());
    }

    #[test]
    fn flash_wgmma_only_on_hopper() {
        assert!(FlashConfig::select(Some("wgmma"), true).wgmma);
        assert_eq!(
            FlashConfig::select(Some("wgmma"), false),
            FlashConfig::DEFAULT
        );
        let w4s3 = FlashConfig::select(Some("w4s3"), false);
        assert_eq!((w4s3.wgmma, w4s3.stages, w4s3.m_tiles), (false, 3, 1));
        assert_eq!(
            FlashConfig::select(None, true),
            FlashConfig::parse("wgmma_k128pp_tma").unwrap()
        );
        assert_eq!(
            FlashConfig::select(Some("wgmma_k128pp"), true),
            FlashConfig::wgmma_k128_pingpong(FLASH_WGMMA_K128_STAGES[0])
        );
        assert_eq!(
            FlashConfig::select(Some("wgmma_k128pp_tma"), false),
            FlashConfig::DEFAULT
        );
        assert_eq!(
            FlashConfig::select(Some("wgmma_k128"), true),
            FlashConfig::wgmma_k128(FLASH_WGMMA_K128_STAGES[0])
        );
        assert_eq!(
            FlashConfig::select(Some("wgmma"), true),
            FlashConfig::wgmma(FLASH_WGMMA_STAGES[0])
        );
        assert_eq!(
            FlashConfig::select(Some("wgmma_k128"), false),
            FlashConfig::DEFAULT
        );
        assert_eq!(FlashConfig::select(None, false), FlashConfig::DEFAULT);
        assert_eq!(FlashConfig::select(Some("x"), false), FlashConfig::DEFAULT);
        assert_eq!(
            FlashConfig::select(Some("w4s2m2"), true),
            FlashConfig::DEFAULT
        );
    }

    #[test]
    fn flash_launch_shape_follows_rows_per_warp() {
        let m1 = FlashConfig::parse("w4s3").unwrap();
        assert_eq!((m1.split(), m1.smem()), (2, 96 * 1024));
        assert_eq!(FlashConfig::parse("w8s3").unwrap().split(), 1);
        assert_eq!(m1.kernel_name(), "attention_flash_bf16_hd128_w4s3");
        // One CTA of 4 warps x 32 rows per query block, Q's 128 rows of bf16 after the stages.
        let m2 = FlashConfig::DEFAULT;
        assert_eq!((m2.rows_per_cta(), m2.split()), (128, 1));
        assert_eq!(m2.smem(), 2 * 32 * 1024 + 32 * 1024);
        assert_eq!(m2.kernel_name(), "attention_flash_bf16_hd128_w4s2m2");
        // Two CTAs per SM in an H100's 228 KiB (1 KiB of each reserved), and within the 99 KiB
        // that sm_86/sm_89 give one CTA.
        assert!(2 * (m2.smem() + 1024) <= 228 * 1024);
        assert!(m2.smem() <= 99 * 1024);
        let m2s3 = FlashConfig::parse("w4s3m2").unwrap();
        assert_eq!(m2s3.smem(), 128 * 1024);
        assert_eq!(m2s3.kernel_name(), "attention_flash_bf16_hd128_w4s3m2");
        // wgmma: 1 KiB of alignment, Q (32 KiB), 4 stages of a K and a V tile (32 KiB each).
        let w = FlashConfig::parse("wgmma").unwrap();
        assert_eq!(w.smem(), 1024 + 32 * 1024 + 4 * 32 * 1024);
        assert_eq!(w.kernel_name(), "attention_flash_bf16_hd128_wgmma_s4");
        // k128: Q and 3 stages of a K and a V tile of 128 keys (64 KiB each).
        let k128 = FlashConfig::parse("wgmma_k128").unwrap();
        assert_eq!(k128.smem(), 1024 + 32 * 1024 + 3 * 64 * 1024);
    }
}
