//! The CUDA backend of flashvsr. Nothing CUDA is linked: the driver, NVRTC and cuBLASLt are
//! `dlopen`ed at run time (cudarc `dynamic-loading`), kernels are header-free CUDA C++ compiled by
//! NVRTC to a CUBIN for the device's exact arch and cached on disk. Every kernel has an exact fp32
//! form (the parity mode); attention with head_dim 128 runs on bf16 tensor cores by default
//! ([`AttentionPrecision`], `FLASHVSR_CUDA_ATTENTION=fp32|bf16`). In the fast mode
//! ([`CudaOptions::gemm_tf32`]) convolutions run on cuDNN 9 in bf16 where it loads (optional,
//! `FLASHVSR_CUDA_CUDNN=0` turns it off), otherwise as im2col + GEMM. There, frame convolutions
//! hand their outputs on as bf16 channels-last buffers (cuDNN's NHWC) that the next convolution
//! reads in place, and the TCDecoder's ops between convolutions keep them so; every other op gets
//! an f32 row-major copy, so the model never sees the layout (`ops/channels_last.rs`,
//! `FLASHVSR_CUDA_CHANNELS_LAST=0` turns it off). Temporal convolutions that allow it run as 2-D
//! ones over their frames folded into the channels (`FLASHVSR_CUDA_FOLD_TIME=0` turns it off).
//!
//! Start-up, in `main`, before any thread:
//! ```no_run
//! let libs = flashvsr_cuda::prepare_and_reexec_if_needed(); // re-execs at most once
//! match flashvsr_cuda::probe() {
//!     Ok(info) => {
//!         let backend = flashvsr_cuda::CudaBackend::new(info.ordinal);
//!     }
//!     Err(why) => eprintln!("no CUDA: {why}"),
//! }
//! ```

mod backend;
mod buffer;
mod context;
mod dnn;
mod error;
mod gemm;
mod kernels;
mod launch;
mod libs;
mod nvrtc;
mod op_profile;
mod ops;
mod paged;
mod pinned;
mod pool;
mod probe;

pub use backend::{
    auto_backend, AttentionPrecision, CudaBackend, CudaOptions, ENV_ATTENTION, ENV_CHANNELS_LAST,
    ENV_CUDNN, ENV_FOLD_TIME, ENV_POISON,
};
pub use buffer::CudaBuffer;
pub use dnn::cudnn_version;
pub use error::CudaError;
pub use kernels::compile_all_kernels_for;
pub use libs::{
    candidate_dirs, current_report, prepare_and_reexec_if_needed, resolve, LibReport, ResolvedLib,
    ENV_FARM, ENV_LIB_DIRS,
};
pub use nvrtc::{arch_for, nvrtc_available, nvrtc_version};
pub use probe::{probe, probe_device, CudaInfo};
