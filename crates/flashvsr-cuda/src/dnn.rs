//! cuDNN convolutions for the fast mode (STACK.md §2.4): bf16 channels-last tensors (NHWC for a
//! batch of frames, NDHWC for a temporal kernel), fp32 accumulation on tensor cores, the legacy
//! API. cuDNN is optional: [`Dnn::open`] fails cleanly when the library is missing or too old, and
//! the backend keeps its im2col path. Descriptors and the heuristic's algorithm are built once per
//! shape; the workspace comes from the stream-ordered allocator on the backend's one stream.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::{CudaStream, DevicePtr};

use crate::error::{catch, CudaError, CudaResult};

/// Algorithms needing a larger workspace are skipped (the good ones for our shapes need none).
const MAX_WORKSPACE_BYTES: usize = 256 << 20;

/// The workspace cap: MAX_WORKSPACE_BYTES, or `FLASHVSR_CUDNN_WORKSPACE_MB` (experiments).
fn workspace_cap() -> usize {
    std::env::var("FLASHVSR_CUDNN_WORKSPACE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(MAX_WORKSPACE_BYTES, |mb| mb << 20)
}

/// `FLASHVSR_CUDNN_LOG=1`: each new shape's candidates (algorithm, workspace) and the pick.
fn logging() -> bool {
    std::env::var("FLASHVSR_CUDNN_LOG").is_ok_and(|v| v == "1")
}
/// How many heuristic candidates to look through.
const CANDIDATES: usize = 8;

/// One convolution as cuDNN sees it. `kt == 1`: a 2-D conv over a batch of `n` frames of
/// `h × w`; `kt > 1`: a 3-D conv over one volume of `d` frames (n = 1) with temporal stride
/// `stride_t`. Channels `c` in and `k` out; spatial stride 1 and `pad` zeros on each side.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub k: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
    pub kt: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_t: usize,
    pub pad: usize,
}

impl ConvShape {
    fn is_3d(&self) -> bool {
        self.kt > 1
    }

    /// (N, C, [D,] H, W) of the input, as cuDNN's dimension array.
    fn input_dims(&self) -> Vec<usize> {
        if self.is_3d() {
            vec![self.n, self.c, self.d, self.h, self.w]
        } else {
            vec![self.n, self.c, self.h, self.w]
        }
    }

    fn filter_dims(&self) -> Vec<usize> {
        if self.is_3d() {
            vec![self.k, self.c, self.kt, self.kh, self.kw]
        } else {
            vec![self.k, self.c, self.kh, self.kw]
        }
    }

    /// (N, K, [D_out,] H_out, W_out).
    pub fn output_dims(&self) -> Vec<usize> {
        let ho = self.h + 2 * self.pad + 1 - self.kh;
        let wo = self.w + 2 * self.pad + 1 - self.kw;
        if self.is_3d() {
            let d_out = (self.d - self.kt) / self.stride_t + 1;
            vec![self.n, self.k, d_out, ho, wo]
        } else {
            vec![self.n, self.k, ho, wo]
        }
    }

    /// (pads, strides) per spatial dimension; no temporal padding.
    fn conv_params(&self) -> (Vec<i32>, Vec<i32>) {
        let p = self.pad as i32;
        if self.is_3d() {
            (vec![0, p, p], vec![self.stride_t as i32, 1, 1])
        } else {
            (vec![p, p], vec![1, 1])
        }
    }
}

fn check(what: &str, s: dnn::cudnnStatus_t) -> CudaResult<()> {
    if s == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Dnn(format!("{what}: {s:?}")))
    }
}

fn dims_i32(dims: &[usize]) -> CudaResult<Vec<i32>> {
    dims.iter()
        .map(|&d| i32::try_from(d).map_err(|_| CudaError::Dnn(format!("dimension {d} > i32"))))
        .collect()
}

pub(crate) fn cudnn_present() -> bool {
    catch(|| Ok(unsafe { dnn::is_culib_present() })).unwrap_or(false)
}

/// cuDNN's version (e.g. 91400 for 9.14.0), or None when the library is missing.
pub fn cudnn_version() -> Option<usize> {
    if !cudnn_present() {
        return None;
    }
    catch(|| Ok(unsafe { dnn::cudnnGetVersion() })).ok()
}

/// Descriptors and algorithm of one shape.
struct Plan {
    x: dnn::cudnnTensorDescriptor_t,
    y: dnn::cudnnTensorDescriptor_t,
    w: dnn::cudnnFilterDescriptor_t,
    conv: dnn::cudnnConvolutionDescriptor_t,
    algo: dnn::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            if !self.x.is_null() {
                dnn::cudnnDestroyTensorDescriptor(self.x);
            }
            if !self.y.is_null() {
                dnn::cudnnDestroyTensorDescriptor(self.y);
            }
            if !self.w.is_null() {
                dnn::cudnnDestroyFilterDescriptor(self.w);
            }
            if !self.conv.is_null() {
                dnn::cudnnDestroyConvolutionDescriptor(self.conv);
            }
        }
    }
}

pub(crate) struct Dnn {
    handle: dnn::cudnnHandle_t,
    stream: Arc<CudaStream>,
    /// None: cuDNN refused the shape; the caller keeps its own path for it.
    plans: HashMap<ConvShape, Option<Plan>>,
}

// SAFETY: the handle and descriptors are heap objects of cuDNN, used by one thread at a time (the
// backend keeps `Dnn` behind a mutex).
unsafe impl Send for Dnn {}

impl Dnn {
    /// A handle bound to `stream`. Err when libcudnn is missing, older than 9, or fails to start.
    /// May panic inside cudarc on a broken library: call under [`catch`].
    pub fn open(stream: &Arc<CudaStream>) -> CudaResult<Dnn> {
        let version = cudnn_version().ok_or_else(|| {
            CudaError::Library("libcudnn.so.9 not found (cuDNN 9 is optional)".into())
        })?;
        if version < 90000 {
            return Err(CudaError::Library(format!(
                "cuDNN {version} is older than 9.0"
            )));
        }
        stream.context().bind_to_thread()?;
        let mut handle = std::ptr::null_mut();
        check("cudnnCreate", unsafe { dnn::cudnnCreate(&mut handle) })?;
        let dnn = Dnn {
            handle,
            stream: stream.clone(),
            plans: HashMap::new(),
        };
        check("cudnnSetStream", unsafe {
            dnn::cudnnSetStream(handle, stream.cu_stream() as _)
        })?;
        Ok(dnn)
    }

    /// Builds the plan of `shape` if not done yet. Ok(false) when cuDNN cannot run it (then it is
    /// never asked again); the reason is logged once.
    pub fn prepare(&mut self, shape: ConvShape) -> CudaResult<bool> {
        if let Some(plan) = self.plans.get(&shape) {
            return Ok(plan.is_some());
        }
        self.stream.context().bind_to_thread()?;
        let plan = match Dnn::plan(self.handle, &shape) {
            Ok(plan) => Some(plan),
            Err(e) => {
                eprintln!("flashvsr: cuDNN cannot run conv {shape:?} ({e}); using im2col + GEMM");
                None
            }
        };
        let ok = plan.is_some();
        self.plans.insert(shape, plan);
        Ok(ok)
    }

    fn plan(handle: dnn::cudnnHandle_t, s: &ConvShape) -> CudaResult<Plan> {
        let bf16 = dnn::cudnnDataType_t::CUDNN_DATA_BFLOAT16;
        let nhwc = dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
        let mut p = Plan {
            x: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            algo: dnn::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
            workspace: 0,
        };
        let (xd, wd, yd) = (
            dims_i32(&s.input_dims())?,
            dims_i32(&s.filter_dims())?,
            dims_i32(&s.output_dims())?,
        );
        let (pads, strides) = s.conv_params();
        let ones = vec![1i32; pads.len()];
        let nd = xd.len() as i32;
        unsafe {
            check(
                "cudnnCreateTensorDescriptor",
                dnn::cudnnCreateTensorDescriptor(&mut p.x),
            )?;
            check(
                "cudnnCreateTensorDescriptor",
                dnn::cudnnCreateTensorDescriptor(&mut p.y),
            )?;
            check(
                "cudnnCreateFilterDescriptor",
                dnn::cudnnCreateFilterDescriptor(&mut p.w),
            )?;
            check(
                "cudnnCreateConvolutionDescriptor",
                dnn::cudnnCreateConvolutionDescriptor(&mut p.conv),
            )?;
            check(
                "cudnnSetTensorNdDescriptorEx (x)",
                dnn::cudnnSetTensorNdDescriptorEx(p.x, nhwc, bf16, nd, xd.as_ptr()),
            )?;
            check(
                "cudnnSetFilterNdDescriptor",
                dnn::cudnnSetFilterNdDescriptor(p.w, bf16, nhwc, nd, wd.as_ptr()),
            )?;
            check(
                "cudnnSetConvolutionNdDescriptor",
                dnn::cudnnSetConvolutionNdDescriptor(
                    p.conv,
                    pads.len() as i32,
                    pads.as_ptr(),
                    strides.as_ptr(),
                    ones.as_ptr(),
                    dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
                ),
            )?;
            check(
                "cudnnSetConvolutionMathType",
                dnn::cudnnSetConvolutionMathType(
                    p.conv,
                    dnn::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
                ),
            )?;
            let mut got = vec![0i32; yd.len()];
            check(
                "cudnnGetConvolutionNdForwardOutputDim",
                dnn::cudnnGetConvolutionNdForwardOutputDim(p.conv, p.x, p.w, nd, got.as_mut_ptr()),
            )?;
            if got != yd {
                return Err(CudaError::Dnn(format!(
                    "output dims {got:?}, expected {yd:?}"
                )));
            }
            check(
                "cudnnSetTensorNdDescriptorEx (y)",
                dnn::cudnnSetTensorNdDescriptorEx(p.y, nhwc, bf16, nd, yd.as_ptr()),
            )?;
            let mut perf: Vec<dnn::cudnnConvolutionFwdAlgoPerf_t> =
                vec![std::mem::zeroed(); CANDIDATES];
            let mut count = 0;
            check(
                "cudnnGetConvolutionForwardAlgorithm_v7",
                dnn::cudnnGetConvolutionForwardAlgorithm_v7(
                    handle,
                    p.x,
                    p.w,
                    p.conv,
                    p.y,
                    CANDIDATES as i32,
                    &mut count,
                    perf.as_mut_ptr(),
                ),
            )?;
            perf.truncate(count.max(0) as usize);
            let cap = workspace_cap();
            // The heuristic's order, first that runs within the workspace cap.
            for cand in perf
                .iter()
                .filter(|c| c.status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            {
                let mut ws = 0usize;
                let sized = dnn::cudnnGetConvolutionForwardWorkspaceSize(
                    handle, p.x, p.w, p.conv, p.y, cand.algo, &mut ws,
                );
                if logging() {
                    eprintln!(
                        "cudnn {s:?}: candidate {:?} ({:.3} ms) workspace {} MiB{}",
                        cand.algo,
                        cand.time,
                        ws >> 20,
                        if ws > cap { " (over the cap)" } else { "" }
                    );
                }
                if sized != dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS || ws > cap {
                    continue;
                }
                check(
                    "cudnnSetConvolutionMathType",
                    dnn::cudnnSetConvolutionMathType(p.conv, cand.mathType),
                )?;
                p.algo = cand.algo;
                p.workspace = ws;
                return Ok(p);
            }
        }
        Err(CudaError::Dnn(format!(
            "no algorithm within {} MiB of workspace",
            workspace_cap() >> 20
        )))
    }

    /// Enqueues `y = conv(x, w)` on the stream: bf16 channels-last device buffers of the sizes
    /// `shape` implies. The shape must have been [`prepare`](Dnn::prepare)d with Ok(true).
    pub fn forward(&mut self, shape: &ConvShape, x: u64, w: u64, y: u64) -> CudaResult<()> {
        let Some(Some(plan)) = self.plans.get(shape) else {
            return Err(CudaError::Dnn(format!("conv {shape:?} not prepared")));
        };
        self.stream.context().bind_to_thread()?;
        // SAFETY: only cuDNN writes the workspace; freed in stream order after the call.
        let workspace = flashvsr_tensor::host_stalls::timed("cudnn workspace alloc", || unsafe {
            self.stream.alloc::<u8>(plan.workspace.max(1))
        })?;
        let (ws_ptr, _guard) = workspace.device_ptr(&self.stream);
        let (alpha, beta) = (1.0f32, 0.0f32);
        let status = flashvsr_tensor::host_stalls::enqueue("cudnnConvolutionForward", || unsafe {
            dnn::cudnnConvolutionForward(
                self.handle,
                (&alpha as *const f32).cast(),
                plan.x,
                x as *const c_void,
                plan.w,
                w as *const c_void,
                plan.conv,
                plan.algo,
                ws_ptr as *mut c_void,
                plan.workspace,
                (&beta as *const f32).cast(),
                plan.y,
                y as *mut c_void,
            )
        });
        check("cudnnConvolutionForward", status)
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        self.plans.clear();
        let _ = self.stream.context().bind_to_thread();
        unsafe { dnn::cudnnDestroy(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kt: usize, d: usize, stride_t: usize) -> ConvShape {
        ConvShape {
            n: 1,
            c: 16,
            k: 8,
            d,
            h: 9,
            w: 11,
            kt,
            kh: 3,
            kw: 3,
            stride_t,
            pad: 1,
        }
    }

    #[test]
    fn two_d_shapes_have_four_dims() {
        let s = ConvShape {
            n: 5,
            ..shape(1, 1, 1)
        };
        assert_eq!(s.input_dims(), vec![5, 16, 9, 11]);
        assert_eq!(s.filter_dims(), vec![8, 16, 3, 3]);
        assert_eq!(s.output_dims(), vec![5, 8, 9, 11]);
        assert_eq!(s.conv_params(), (vec![1, 1], vec![1, 1]));
    }

    #[test]
    fn three_d_shapes_stride_in_time_only() {
        let s = shape(4, 10, 2);
        assert_eq!(s.input_dims(), vec![1, 16, 10, 9, 11]);
        assert_eq!(s.filter_dims(), vec![8, 16, 4, 3, 3]);
        // (10 − 4) / 2 + 1 = 4 output frames.
        assert_eq!(s.output_dims(), vec![1, 8, 4, 9, 11]);
        assert_eq!(s.conv_params(), (vec![0, 1, 1], vec![2, 1, 1]));
    }

    #[test]
    fn oversized_dimensions_are_refused() {
        assert!(dims_i32(&[1, 1 << 31]).is_err());
        assert_eq!(dims_i32(&[3, 7]).unwrap(), vec![3, 7]);
    }
}
