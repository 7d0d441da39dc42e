//! Tensors and the backend op set of flashvsr. The model is written once against [`Tensor`];
//! each device implements [`Backend`]. The CPU backend here is the f32 parity reference.

mod backend;
mod block_mask;
pub mod cpu;
mod dtype;
mod error;
pub mod host_stalls;
mod meter;
pub mod random;
mod resample;
mod tensor;

pub use backend::{
    linear_then_add, modulated_ffn_composed, split_rows, Backend, BackendRef, BinaryOp, Buffer,
    BufferRef, Device, HostData, HostValues, ModulatedFfn, PadMode, PendingDownload, QkvBuffers,
    QueuePoint, UnaryOp,
};
pub use block_mask::BlockMask;
pub use dtype::DType;
pub use error::{Result, TensorError};
pub use meter::MemoryMeter;
pub use resample::{CanvasWindow, FixedTaps, MAX_FIXED_POINT_BITS};
pub use tensor::{SplitQkv, Tensor};
