//! The flash kernel's other instances (16 or 32 query rows per warp, `FLASHVSR_CUDA_FLASH=w4s3`,
//! ..., read per call) against the mma.sync kernel's default instance (w4s2m2), bit for bit: per row the arithmetic is the same,
//! only which warp holds the row changes. And against the CPU with the bf16 tolerances. Dense
//! (query rows not a multiple of 128, keys not a multiple of 64), block-sparse (a query block with
//! no key block, a mask with none at all), KV segments read in place and joined, and the bf16 copy
//! of the output that the fast mode's GEMMs read.
//!
//! The Hopper instances (`FLASHVSR_CUDA_FLASH=wgmma[<stages>][h]`, `wgmma_k128[pp]`,
//! `wgmma_k128pp_tma`, flash_wgmma.cu) sum in another order: they are held to the CPU with the
//! same tolerances, and to the default instance's output within a relative L2 of
//! `WGMMA_VS_DEFAULT`, on the same cases; the pairs of `SAME_BITS` to each other bit for bit. Off
//! sm_90 the knob keeps the default instance, and these cases check it again. (Dense calls of
//! `wgmma_k128pp_tma` take its persistent form by default, `FLASHVSR_CUDA_DENSE_PERSISTENT`: its
//! dense cases here hold that form to `wgmma_k128pp`'s bits.)

use flashvsr_tensor::{BackendRef, BlockMask, Tensor};

use super::kv_segments::{segment_attention, segment_inputs, SEGMENT_CASES};
use super::{
    mask_input, nonzero_in_block, random_mask, rel_l2, Input, Op, Suite, BF16_ATTENTION,
    BF16_ATTENTION_LARGE_QK,
};

const KNOB: &str = "FLASHVSR_CUDA_FLASH";
const INSTANCES: [&str; 4] = ["w4s3", "w4s3m2", "w4s2m2h", "w4s2"];
/// The mma.sync kernel's default instance, the reference of the others.
const MMA_DEFAULT: &str = "w4s2m2";
/// The wgmma kernel's instances: 4 stages (what `wgmma` selects), 5 with head-major K/V
/// (single-segment calls), and the 128-keys-per-iteration form (`wgmma_k128`: its online softmax
/// takes 128 keys at a time, so it sums in another order than the 64-key kernels).
/// `wgmma_k128pp`: the same with the consumer warpgroups' pingpong; `wgmma_k128pp_tma`: that with
/// K/V copied by TMA.
const WGMMA_INSTANCES: [&str; 5] = [
    "wgmma",
    "wgmma5h",
    "wgmma_k128",
    "wgmma_k128pp",
    "wgmma_k128pp_tma",
];
/// Relative L2 between a wgmma instance's output and the default instance's: both round the
/// same bf16 operands and P; they may differ in summation order, and where a P rounds to the
/// other bf16 neighbour. (On an H100 they measured equal, bit for bit: the tensor cores sum each
/// k16 step the same way for mma.sync and wgmma, and the k-steps go in the same order.)
const WGMMA_VS_DEFAULT: f64 = 5e-3;
/// Instances with the bits of another (run before them): the pingpong form and the plain one of
/// the k128 kernel (the same arithmetic in the same order, only when each warpgroup issues its
/// wgmmas differs); the TMA form and the pingpong one (the same operands in shared memory: where
/// TMA copies real rows for an absent unit instead of zeros, their scores are masked and P is
/// exactly 0 either way).
const SAME_BITS: [(&str, &str); 2] = [
    ("wgmma_k128pp", "wgmma_k128"),
    ("wgmma_k128pp_tma", "wgmma_k128pp"),
];

type Check<'a> = &'a dyn Fn(&[f32]) -> Option<String>;

/// Selects the flash instance for the calls that follow (None: the default). The suite runs on
/// this one thread: nothing reads the environment concurrently.
fn select(instance: Option<&str>) {
    match instance {
        Some(v) => std::env::set_var(KNOB, v),
        None => std::env::remove_var(KNOB),
    }
}

fn run_with(backend: &BackendRef, instance: Option<&str>, inputs: &[Input], op: Op) -> Output {
    select(instance);
    Suite::run_on(backend, inputs, op)
        .map(|(_, v)| v)
        .map_err(|e| e.to_string())
}

type Output = std::result::Result<Vec<f32>, String>;

/// One case of `got` against the default instance's `want`: errors, lengths and unwritten (NaN)
/// values first, then `judge` (Ok: what the line reports).
fn against_default(
    s: &mut Suite,
    name: &str,
    got: Output,
    want: &Output,
    judge: impl Fn(&[f32], &[f32]) -> std::result::Result<String, String>,
) {
    s.cases += 1;
    let verdict = match (&got, want) {
        (Err(e), _) | (_, Err(e)) => Err(format!("CUDA error: {e}")),
        (Ok(g), Ok(w)) if g.len() != w.len() => Err(format!("{} values vs {}", g.len(), w.len())),
        (Ok(g), Ok(w)) => match g.iter().filter(|v| v.is_nan()).count() {
            0 => judge(g, w),
            nan => Err(format!("{nan} NaN (unwritten output?)")),
        },
    };
    match verdict {
        Ok(what) => println!("ok    {name:<44} {what}"),
        Err(msg) => s.fail(name, msg),
    }
}

/// `got` has the bits of `want`, the output of the instance `of`.
fn same_bits(s: &mut Suite, name: &str, got: Output, want: &Output, of: &str) {
    against_default(s, name, got, want, |g, w| {
        let differ = |(a, b): (&f32, &f32)| a.to_bits() != b.to_bits();
        match g.iter().zip(w).position(differ) {
            Some(i) => Err(format!(
                "{} values differ from {of}'s, first at {i}: {:e} vs {:e}",
                g.iter().zip(w).filter(|&p| differ(p)).count(),
                g[i],
                w[i]
            )),
            None => Ok(format!("{} values, {of}'s bits", g.len())),
        }
    });
}

/// A row of a head with no key (the kernels write +0 over its whole width, at least
/// `EMPTY_ROW_MIN` values) is at least this long; the positions of such runs in `want`.
const EMPTY_ROW_MIN: usize = 32;

fn empty_row_values(want: &[f32]) -> impl Iterator<Item = usize> + '_ {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, v) in want.iter().chain([&1.0f32]).enumerate() {
        match (v.to_bits() == 0, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= EMPTY_ROW_MIN {
                    runs.push(s..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    runs.into_iter().flatten()
}

fn close_to_default(s: &mut Suite, name: &str, got: Output, want: &Output) {
    against_default(s, name, got, want, |g, w| {
        // Where the default writes a row of exact zeros (no key at all), so must this one. A lone
        // +0 is a sum that happened to cancel in the default's order, not an empty row.
        let zeros = empty_row_values(w).filter(|&i| g[i].to_bits() != 0).count();
        let (err, _) = rel_l2(g, w);
        if zeros > 0 {
            Err(format!("{zeros} values not +0 where the default's are"))
        } else if err.is_nan() || err > WGMMA_VS_DEFAULT {
            Err(format!(
                "relative L2 {err:.3e} to the default instance > {WGMMA_VS_DEFAULT:.0e}"
            ))
        } else {
            Ok(format!("rel L2 {err:.2e} to the default instance"))
        }
    });
}

impl Suite {
    /// `op` with every instance of INSTANCES: the default instance's bits on `backend`, and, when
    /// `tol` is given, the bf16 tolerances against the CPU on the bf16 backend (with `check`).
    fn flash_instance_case(
        &mut self,
        name: &str,
        backend: &BackendRef,
        tol: Option<(f64, f64)>,
        inputs: &[Input],
        op: Op,
        check: Check,
    ) {
        let named = |inst: &str| format!("flash {inst} {name}");
        if INSTANCES
            .iter()
            .chain(&WGMMA_INSTANCES)
            .all(|inst| self.skip(&named(inst)))
        {
            return;
        }
        // The mma.sync kernel's default instance (on sm_90 the knob's absence means
        // wgmma_k128pp_tma).
        let want = run_with(backend, Some(MMA_DEFAULT), inputs, op);
        let cpu = self.cpu.clone();
        for inst in INSTANCES {
            let name = named(inst);
            if self.skip(&name) {
                continue;
            }
            let got = run_with(backend, Some(inst), inputs, op);
            same_bits(self, &format!("{name} bits"), got, &want, MMA_DEFAULT);
            if let Some(tol) = tol {
                select(Some(inst));
                self.bf16_case(&name, tol, &cpu, inputs, op, check);
            }
        }
        let mut outputs: Vec<(&str, Output)> = Vec::new();
        for inst in WGMMA_INSTANCES {
            let name = named(inst);
            if self.skip(&name) {
                continue;
            }
            let got = run_with(backend, Some(inst), inputs, op);
            for (of, want) in SAME_BITS.iter().filter(|p| p.0 == inst).filter_map(|p| {
                let want = outputs.iter().find(|(i, _)| *i == p.1)?;
                Some((p.1, &want.1))
            }) {
                let what = format!("{name} bits vs {of}");
                same_bits(self, &what, got.clone(), want, of);
            }
            outputs.push((inst, got.clone()));
            close_to_default(self, &format!("{name} vs default"), got, &want);
            if let Some(tol) = tol {
                select(Some(inst));
                self.bf16_case(&name, tol, &cpu, inputs, op, check);
            }
        }
        select(None);
    }
}

pub fn run(s: &mut Suite, fast: &BackendRef) {
    let saved = std::env::var_os(KNOB);
    let bf16 = s.gpu_bf16.clone();

    for (lq, lk, heads) in [
        (300, 512, 2),
        (77, 200, 3),
        (129, 1, 1),
        (256, 65, 2),
        (1024, 512, 12),
    ] {
        let dim = heads * 128;
        let inputs = [
            s.normal_input(&[lq, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
        ];
        s.flash_instance_case(
            &format!("dense q{lq} k{lk} {heads}x128"),
            &bf16,
            Some(BF16_ATTENTION),
            &inputs,
            &|t| t[0].attention(&t[1], &t[2], heads),
            &|_| None,
        );
    }

    for (key_block, query_blocks, key_blocks, heads, qk_scale) in [
        (128, 2, 4, 2, 1.0),
        (64, 3, 10, 3, 2.5),
        (128, 8, 16, 12, 1.0),
    ] {
        let dim = heads * 128;
        let mask = random_mask(&mut s.rng, heads, query_blocks, key_blocks, key_block, 0.5);
        let (lq, lk) = (query_blocks * 128, key_blocks * key_block);
        let inputs = [
            s.normal_input(&[lq, dim], qk_scale),
            s.normal_input(&[lk, dim], qk_scale),
            s.normal_input(&[lk, dim], 1.0),
            mask_input(&mask),
        ];
        let tol = if qk_scale > 1.0 {
            BF16_ATTENTION_LARGE_QK
        } else {
            BF16_ATTENTION
        };
        let empty = |out: &[f32]| {
            let bad = nonzero_in_block(out, dim, 128, 1);
            (bad > 0).then(|| format!("{bad} non-zero values in a query block with no key block"))
        };
        s.flash_instance_case(
            &format!("block_sparse q{lq} k{lk} kb{key_block} {heads}x128 x{qk_scale}"),
            &bf16,
            Some(tol),
            &inputs,
            &|t| t[0].block_sparse_attention(&t[1], &t[2], &t[3], key_block),
            &empty,
        );
    }

    {
        // No key block anywhere: every value exactly zero.
        let (heads, query_blocks, key_blocks) = (2, 2, 4);
        let dim = heads * 128;
        let mask = BlockMask {
            heads,
            query_blocks,
            key_blocks,
            query_block: 128,
            key_block: 128,
            selected: vec![0; heads * query_blocks * key_blocks],
        };
        let inputs = [
            s.normal_input(&[query_blocks * 128, dim], 1.0),
            s.normal_input(&[key_blocks * 128, dim], 1.0),
            s.normal_input(&[key_blocks * 128, dim], 1.0),
            mask_input(&mask),
        ];
        let zeros = |out: &[f32]| {
            let bad = out.iter().filter(|v| v.to_bits() != 0).count();
            (bad > 0).then(|| format!("{bad} values not +0 with an empty mask"))
        };
        s.flash_instance_case(
            "block_sparse empty mask",
            &bf16,
            Some(BF16_ATTENTION),
            &inputs,
            &|t| t[0].block_sparse_attention(&t[1], &t[2], &t[3], 128),
            &zeros,
        );
    }

    // Segments read in place (multiples of the 64-key tile) and joined first (a 96-row one).
    let (lq, heads) = (384, 2);
    let dim = heads * 128;
    for (sizes, kb) in SEGMENT_CASES {
        let n = sizes.len();
        let inputs = segment_inputs(s, lq, heads, sizes, kb);
        let op = |t: &[Tensor]| segment_attention(t, n, kb);
        let empty = |out: &[f32]| {
            let bad = nonzero_in_block(out, dim, 128, 1);
            (bad > 0).then(|| format!("{bad} non-zero values in a query block with no key block"))
        };
        s.flash_instance_case(
            &format!("kv segments {sizes:?} key block {kb}"),
            &bf16,
            Some(BF16_ATTENTION),
            &inputs,
            &op,
            &empty,
        );
    }

    // Fast mode: the kernel also writes the output's bf16 copy, which a bf16 GEMM then reads.
    let (lq, lk, heads, n) = (300, 512, 2, 96);
    let dim = heads * 128;
    let mask = random_mask(&mut s.rng, heads, 2, 4, 128, 0.5);
    let inputs = [
        s.normal_input(&[lq, dim], 1.0),
        s.normal_input(&[lk, dim], 1.0),
        s.normal_input(&[lk, dim], 1.0),
        s.normal_input(&[n, dim], 0.05),
        s.normal_input(&[n], 1.0),
        mask_input(&mask),
        s.normal_input(&[256, dim], 1.0),
    ];
    let dense = |t: &[Tensor]| t[0].attention(&t[1], &t[2], heads);
    let sparse = |t: &[Tensor]| t[6].block_sparse_attention(&t[1], &t[2], &t[5], 128);
    let project = |y: Tensor, t: &[Tensor]| y.linear(&t[3].compact()?, Some(&t[4]));
    s.flash_instance_case("fast dense", fast, None, &inputs, &dense, &|_| None);
    s.flash_instance_case(
        "fast dense into a GEMM",
        fast,
        None,
        &inputs,
        &|t| project(dense(t)?, t),
        &|_| None,
    );
    s.flash_instance_case("fast block_sparse", fast, None, &inputs, &sparse, &|_| None);
    s.flash_instance_case(
        "fast block_sparse into a GEMM",
        fast,
        None,
        &inputs,
        &|t| project(sparse(t)?, t),
        &|_| None,
    );

    match saved {
        Some(v) => std::env::set_var(KNOB, v),
        None => std::env::remove_var(KNOB),
    }
}
