//! The ops, one file per family, as `impl CudaBackend` blocks. Shapes were validated by
//! `flashvsr_tensor::Tensor`; inputs are contiguous row-major.

mod adain;
pub(crate) mod attention;
mod attention_gemm;
mod blur;
pub(crate) mod channels_last;
mod conv;
mod conv_cudnn;
mod conv_direct;
pub(crate) mod conv_stage;
mod ffn;
mod layout;
mod linear;
pub(crate) mod mask;
mod norm;
mod norm_silu;
mod pointwise;
mod qkv;
mod resample;
mod scores;
mod upsample_conv;
pub(crate) mod weight_cache;
