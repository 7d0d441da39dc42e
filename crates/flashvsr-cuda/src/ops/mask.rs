//! Block masks on the device (mask.cu): the top-k selection of block scores, and the compaction
//! of a 0/1 mask into the lists the attention kernels read. Nothing here waits for the GPU.

use cudarc::driver::{sys, CudaSlice, DevicePtr, LaunchConfig};
use flashvsr_tensor::Tensor;

use crate::backend::CudaBackend;
use crate::buffer::CudaBuffer;
use crate::error::{CudaError, CudaResult};
use crate::launch::KernelArgs;

/// Threads of the one-warp-per-row kernels' blocks (8 rows per block).
const ROW_BLOCK: u32 = 256;
/// MASK_TOPK_THREADS and MASK_SCAN_THREADS in mask.cu.
const TOPK_THREADS: u32 = 1024;
/// MASK_CLUSTER_CTAS in mask.cu: CTAs per selection group of the cluster form.
const TOPK_CLUSTER_CTAS: usize = 8;
const SCAN_THREADS: u32 = 1024;
/// Counting-sort bins of the work order that fit the default 48 KiB of shared memory (less the
/// scan's); `prepare_mask_order` raises the limit to the device's opt-in size.
const DEFAULT_ORDER_BINS: usize = 11 * 1024;
/// Bytes of the device's opt-in shared memory left to the scan's static part (warp totals).
const SCAN_STATIC_RESERVE: usize = 1024;

/// Raises the work-order kernel's dynamic shared-memory limit to what the device allows (the by-head
/// sort of a 1920×1152 sage steady chunk needs 12 × 1081 counters, past the default 48 KiB) and
/// returns how many counters then fit (the default's where the driver refuses).
pub(crate) fn prepare_mask_order(
    ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
    kernels: &crate::kernels::Kernels,
) -> usize {
    let optin = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_or(0, |b| b.max(0) as usize);
    let bytes = optin.saturating_sub(SCAN_STATIC_RESERVE);
    let raised = kernels.get("mask_offsets_order").is_ok_and(|f| {
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .is_ok()
    });
    if raised {
        bytes / 4
    } else {
        DEFAULT_ORDER_BINS
    }
}

/// The raw device pointer of a scratch allocation of this backend's stream. Event tracking is
/// off, so the guard cudarc returns is a no-op; the allocation outlives the launches that use it
/// (it is freed in stream order).
fn scratch_ptr<T>(slice: &CudaSlice<T>) -> u64 {
    let (ptr, _guard) = slice.device_ptr(slice.stream());
    ptr
}

fn int(what: &str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported(format!("{what} = {v} exceeds i32")))
}

/// How the flash kernel takes its work items (head, query block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkOrder {
    /// Grid order: no order list.
    Grid,
    /// Most selected key blocks first, so that the long items start early and the short ones
    /// fill the tail.
    HeaviestFirst,
    /// Head by head (the CTAs in flight share one or two heads' K/V in L2), heaviest first
    /// within a head.
    ByHeadHeaviestFirst,
}

/// A mask compacted on the device: one i32 allocation holding, per (head, query block) row,
/// the offsets (rows + 1) into the selected key-block list, the list (room for every block), and
/// the work order (rows) when one was asked for. Freed in stream order when dropped.
pub(crate) struct DeviceMaskLists {
    _list: crate::buffer::DeviceBlock<i32>,
    pub offsets: u64,
    pub blocks: u64,
    /// 0 = grid order.
    pub order: u64,
}

impl CudaBackend {
    /// One warp per row over `rows` rows.
    fn row_grid(&self, rows: usize) -> LaunchConfig {
        let per_block = (ROW_BLOCK / 32) as usize;
        let blocks = rows
            .div_ceil(per_block)
            .clamp(1, self.gpu.sm_count.max(1) as usize * 16);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (ROW_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Scores `(heads, query blocks, key blocks)` and the eligibility pattern `(P, Q)` (validated
    /// by the tensor crate) to the 0/1 mask of the same shape.
    pub(crate) fn op_sparse_topk_mask(
        &self,
        scores: &Tensor,
        allowed: &Tensor,
        topk: i64,
        scale: f64,
    ) -> CudaResult<CudaBuffer> {
        let (heads, nq, nk) = (scores.dim(0), scores.dim(1), scores.dim(2));
        let (pattern_rows, pattern_cols) = (allowed.dim(0), allowed.dim(1));
        let len = heads * nq * nk;
        let out = self.output(len)?;
        let group_values = (pattern_rows * nk) as i64;
        let rank = (group_values - 1).min(topk);
        if len == 0 {
            return Ok(out);
        }
        if rank <= 0 {
            self.fill(out.ptr(), len, 0.0)?;
            return Ok(out);
        }
        let groups = heads * (nq / pattern_rows);
        if groups > u32::MAX as usize {
            return Err(CudaError::Unsupported(format!("{groups} selection groups")));
        }
        let rows = heads * nq;
        // SAFETY: every element is written by mask_softmax_f64 before anything reads it.
        let probs = unsafe { self.alloc_block::<f64>(len) }?;
        let probs_ptr = scratch_ptr(&probs);
        let args = KernelArgs::new()
            .push(self.ptr(scores)?)
            .push(self.ptr(allowed)?)
            .push(probs_ptr)
            .push(rows as u64)
            .push(int("query blocks", nq)?)
            .push(int("key blocks", nk)?)
            .push(int("pattern rows", pattern_rows)?)
            .push(int("pattern columns", pattern_cols)?)
            .push(scale);
        self.launch("mask_softmax_f64", self.row_grid(rows), args)?;
        let args = KernelArgs::new()
            .push(probs_ptr)
            .push(out.ptr())
            .push(int("query blocks", nq)?)
            .push(int("key blocks", nk)?)
            .push(int("pattern rows", pattern_rows)?)
            .push(rank as u64);
        // The cluster form on Hopper unless turned off (`topk_cluster`).
        let (kernel, ctas) = if self.options().topk_cluster && self.gpu.cc.0 >= 9 {
            ("mask_topk_select_cluster_f64", TOPK_CLUSTER_CTAS)
        } else {
            ("mask_topk_select_f64", 1)
        };
        let grid = groups
            .checked_mul(ctas)
            .filter(|&g| g <= u32::MAX as usize)
            .ok_or_else(|| CudaError::Unsupported(format!("{groups} selection groups")))?;
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: (TOPK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(kernel, cfg, args)?;
        // `probs` is freed in stream order, after the kernels that read it.
        drop(probs);
        Ok(out)
    }

    /// Compacts `mask` `(heads, query blocks, key blocks)` on the device. `order` other than
    /// `Grid` also builds the flash kernel's work order (grid order where its counting sort
    /// would not fit in shared memory).
    pub(crate) fn compact_mask(
        &self,
        mask: &Tensor,
        order: WorkOrder,
    ) -> CudaResult<DeviceMaskLists> {
        let (heads, nq, nk) = (mask.dim(0), mask.dim(1), mask.dim(2));
        let rows = heads * nq;
        let bins = match order {
            WorkOrder::Grid => 0,
            WorkOrder::HeaviestFirst => nk + 1,
            WorkOrder::ByHeadHeaviestFirst => heads * (nk + 1),
        };
        let with_order = bins > 0 && self.order_bins_fit(bins);
        // counts | offsets | blocks | order
        let (n_off, n_blocks) = (rows + 1, (rows * nk).max(1));
        let n_order = if with_order { rows } else { 0 };
        let total = rows + n_off + n_blocks + n_order;
        int("mask list entries", total)?;
        // SAFETY: counts, offsets and the order are written in full below; the kernels read only
        // the block entries that mask_row_blocks wrote (offsets bound them).
        let list = unsafe { self.alloc_block::<i32>(total) }?;
        let base = scratch_ptr(&list);
        let counts = base;
        let offsets = counts + 4 * rows as u64;
        let blocks = offsets + 4 * n_off as u64;
        let order_ptr = if with_order {
            blocks + 4 * n_blocks as u64
        } else {
            0
        };
        let lists = DeviceMaskLists {
            _list: list,
            offsets,
            blocks,
            order: order_ptr,
        };
        if rows == 0 {
            // No work item: nothing reads the lists.
            return Ok(lists);
        }
        let mask_ptr = self.ptr(mask)?;
        let args = KernelArgs::new()
            .push(mask_ptr)
            .push(counts)
            .push(rows as u64)
            .push(int("key blocks", nk)?);
        self.launch("mask_row_counts", self.row_grid(rows), args)?;
        let args = KernelArgs::new()
            .push(counts)
            .push(offsets)
            .push(order_ptr)
            .push(int("rows", rows)?)
            .push(int("query blocks", nq)?)
            .push(int("key blocks", nk)?)
            .push(i32::from(order == WorkOrder::ByHeadHeaviestFirst))
            .push(int("bins", bins)?);
        let smem = if with_order { bins * 4 } else { 0 };
        self.launch("mask_offsets_order", self.scan_config(smem), args)?;
        let args = KernelArgs::new()
            .push(mask_ptr)
            .push(offsets)
            .push(blocks)
            .push(rows as u64)
            .push(int("key blocks", nk)?);
        self.launch("mask_row_blocks", self.row_grid(rows), args)?;
        Ok(lists)
    }

    /// Whether `bins` counters fit the work-order kernel's shared memory (`order_bins`, raised at
    /// load). Else the launch takes grid order.
    fn order_bins_fit(&self, bins: usize) -> bool {
        bins <= self.order_bins.max(DEFAULT_ORDER_BINS)
    }

    fn scan_config(&self, shared_bytes: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (SCAN_THREADS, 1, 1),
            shared_mem_bytes: shared_bytes as u32,
        }
    }
}
