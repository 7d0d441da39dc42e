//! Benchmark of the flash kernel's instances at the DiT's main self-attention shape (run only when
//! asked for: `gpu_ops "flash bench"`): 12 heads of 128, 8448 query rows (66 query blocks) against
//! 33792 keys in 4 KV-cache segments of 8448 rows kept in bf16 (read in place, as the fast mode's
//! cache is), a random mask of about 25 % of the key blocks with no empty query row, in sage mode
//! (128 x 64 blocks) and block mode (128 x 128). Per instance (`FLASHVSR_CUDA_FLASH`) and work
//! order: GPU ms per call of the whole op (mask compaction and the kernel) by CUDA events, the
//! effective TFLOP/s over the selected blocks (4 · 128 · key block · 128 FLOP each), and the same
//! op with an empty mask (compaction and writing zeros) for reference. Each instance's output is
//! also compared with the default instance's.
//!
//! A third case ("small") does about the same work on a quarter of the K/V: one segment of 8448
//! keys, every sage block selected, so that every query block of a head reads the same tiles.
//! Against the sage case it shows how much the K/V footprint (L2 misses) costs.

use flashvsr_cuda::CudaBackend;
use flashvsr_tensor::{BackendRef, Tensor};

use super::{rel_l2, Suite};

const HEADS: usize = 12;
const HD: usize = 128;
const QUERY_BLOCKS: usize = 66;
const SEGMENTS: usize = 4;
const DENSITY: f32 = 0.25;
const CALLS: usize = 20;
const REPEATS: usize = 3;

/// (FLASHVSR_CUDA_FLASH, FLASHVSR_CUDA_FLASH_ORDER); None = unset (the default: wgmma_k128pp_tma
/// on sm_90).
const RUNS: [(Option<&str>, Option<&str>); 9] = [
    (Some("w4s2m2"), None),
    (Some("wgmma"), None),
    (Some("wgmma5"), None),
    (Some("wgmma_k128"), None),
    (Some("wgmma_k128pp"), None),
    (Some("wgmma_k128pp_tma"), None),
    (Some("w4s2m2"), Some("head")),
    (Some("wgmma"), Some("head")),
    (Some("wgmma_k128pp_tma"), Some("head")),
];

/// The sage runs of the default instance with `FLASHVSR_CUDA_SAGE_INT8` (sage masks only: the
/// int8 kernel with its default and other stage count, and the int8 pre-pass before the bf16
/// kernel, for what the pre-pass costs). `gpu_ops "flash bench int8"` runs only the default
/// instance and these. `1/unfolded`: the int8 kernel with session 11's softmax
/// (`FLASHVSR_CUDA_SAGE8_FOLD=0`); `1/<form>`: another softmax form
/// (`FLASHVSR_CUDA_SAGE8_EXP=<form>`; `mufu`: helper h28's). The default and `mufu` run twice, in
/// opposite orders (the drift in between).
const SAGE_INT8_RUNS: [&str; 7] = ["1", "1/mufu", "1/unfolded", "1/mufu", "1", "3", "prepass"];

fn set(var: &str, value: Option<&str>) {
    // The suite runs on one thread: nothing reads the environment concurrently.
    match value {
        Some(v) => std::env::set_var(var, v),
        None => std::env::remove_var(var),
    }
}

/// A (heads, query blocks, key blocks) mask of 0/1 with about `density` selected and at least one
/// key block per query row.
fn mask(s: &mut Suite, key_blocks: usize, density: f32) -> (Vec<f32>, usize) {
    let mut m: Vec<f32> = (0..HEADS * QUERY_BLOCKS * key_blocks)
        .map(|_| f32::from(s.rng.uniform() * 0.5 + 0.5 < density))
        .collect();
    for row in m.chunks_mut(key_blocks) {
        if row.iter().all(|&v| v == 0.0) {
            let at = ((s.rng.uniform() * 0.5 + 0.5) * key_blocks as f32) as usize;
            row[at.min(key_blocks - 1)] = 1.0;
        }
    }
    let selected = m.iter().filter(|&&v| v != 0.0).count();
    (m, selected)
}

/// Median over `REPEATS` of the GPU ms per call of `CALLS` calls (after two warm-ups).
fn ms_per_call(backend: &CudaBackend, op: &dyn Fn() -> Tensor) -> Result<f64, String> {
    drop(op());
    drop(op());
    let mut times = Vec::new();
    for _ in 0..REPEATS {
        let (_, ms) = backend
            .gpu_time_ms(|| {
                for _ in 0..CALLS {
                    drop(op());
                }
            })
            .map_err(|e| e.to_string())?;
        times.push(ms / CALLS as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[REPEATS / 2])
}

pub fn run(s: &mut Suite, ordinal: usize) {
    if !s
        .filter
        .as_deref()
        .is_some_and(|f| f.starts_with("flash bench"))
    {
        return;
    }
    let Some(cuda) = super::bench_backend(s, ordinal, "flash bench") else {
        return;
    };
    let backend: BackendRef = cuda.clone();
    let saved = (
        std::env::var("FLASHVSR_CUDA_FLASH").ok(),
        std::env::var("FLASHVSR_CUDA_FLASH_ORDER").ok(),
        std::env::var("FLASHVSR_CUDA_SAGE_INT8").ok(),
        std::env::var("FLASHVSR_CUDA_SAGE8_FOLD").ok(),
        std::env::var("FLASHVSR_CUDA_SAGE8_EXP").ok(),
    );
    let int8_only = s
        .filter
        .as_deref()
        .is_some_and(|f| f.starts_with("flash bench int8"));
    let dim = HEADS * HD;
    let (lq, rows) = (QUERY_BLOCKS * 128, QUERY_BLOCKS * 128);
    let lk = SEGMENTS * rows;
    println!(
        "flash bench on {} ({}): q{lq} k{lk} in {SEGMENTS} bf16 segments, {HEADS}x{HD}, \
         {CALLS} calls x {REPEATS}",
        cuda.device_name(),
        cuda.arch()
    );
    let upload = |s: &mut Suite, n: usize, bf16: bool| -> Result<Tensor, String> {
        let v = s.rng.normal_vec(n * dim, 1.0);
        let t = Tensor::from_slice(&backend, &v, &[n, dim]).map_err(|e| e.to_string())?;
        if bf16 {
            t.compact().map_err(|e| e.to_string())
        } else {
            Ok(t)
        }
    };
    let tensors = (|| -> Result<_, String> {
        let q = upload(s, lq, false)?;
        let k: Vec<Tensor> = (0..SEGMENTS)
            .map(|_| upload(s, rows, true))
            .collect::<Result<_, _>>()?;
        let v: Vec<Tensor> = (0..SEGMENTS)
            .map(|_| upload(s, rows, true))
            .collect::<Result<_, _>>()?;
        Ok((q, k, v))
    })();
    let (q, k, v) = match tensors {
        Ok(t) => t,
        Err(e) => return s.fail("flash bench", format!("inputs: {e}")),
    };
    let keys: Vec<&Tensor> = k.iter().collect();
    let values: Vec<&Tensor> = v.iter().collect();

    for (mode, key_block, segments, density) in [
        ("sage", 64usize, SEGMENTS, DENSITY),
        ("block", 128, SEGMENTS, DENSITY),
        ("small", 64, 1, 1.0),
    ] {
        let keys = &keys[..segments];
        let values = &values[..segments];
        let key_blocks = segments * rows / key_block;
        let (m, selected) = mask(s, key_blocks, density);
        let shape = [HEADS, QUERY_BLOCKS, key_blocks];
        let masks = Tensor::from_slice(&backend, &m, &shape).and_then(|full| {
            let none = Tensor::from_slice(&backend, &vec![0.0; m.len()], &shape)?;
            Ok((full, none))
        });
        let (full, none) = match masks {
            Ok(t) => t,
            Err(e) => return s.fail("flash bench", format!("mask: {e}")),
        };
        let flop = 4.0 * 128.0 * key_block as f64 * 128.0 * selected as f64;
        println!(
            "flash bench {mode} kb{key_block} k{}: {selected} of {} blocks selected ({:.1} %), \
             {:.1} GFLOP per call",
            segments * rows,
            m.len(),
            100.0 * selected as f64 / m.len() as f64,
            flop / 1e9
        );
        let op = |mask: &Tensor| {
            q.block_sparse_attention_segments(keys, values, mask, key_block)
                .expect("attention")
        };
        let mut reference: Option<Vec<f32>> = None;
        let int8_runs = if key_block == 64 {
            &SAGE_INT8_RUNS[..]
        } else {
            &[]
        };
        let runs = RUNS
            .iter()
            .map(|&(instance, order)| (instance, order, None))
            .filter(|r| !int8_only || r.0 == Some("wgmma_k128pp_tma") && r.1.is_none())
            .chain(int8_runs.iter().map(|&int8| (None, None, Some(int8))));
        for (instance, order, int8) in runs {
            set("FLASHVSR_CUDA_FLASH", instance);
            set("FLASHVSR_CUDA_FLASH_ORDER", order);
            // The bf16 kernel unless an int8 run (the knob's absence means int8 for sage).
            let (knob, form) = match int8.and_then(|v| v.split_once('/')) {
                Some((knob, form)) => (Some(knob), Some(form)),
                None => (int8, None),
            };
            set("FLASHVSR_CUDA_SAGE_INT8", Some(knob.unwrap_or("0")));
            set(
                "FLASHVSR_CUDA_SAGE8_FOLD",
                (form == Some("unfolded")).then_some("0"),
            );
            set("FLASHVSR_CUDA_SAGE8_EXP", form.filter(|f| *f != "unfolded"));
            let name = format!(
                "{:<7} order {:<4}{}",
                instance.unwrap_or("default"),
                order.unwrap_or("lpt"),
                int8.map_or(String::new(), |v| format!(" sage int8 {v}"))
            );
            let out = op(&full).to_vec().map_err(|e| e.to_string());
            let vs = match (&out, &reference) {
                (Ok(o), Some(r)) => {
                    let (err, nan) = rel_l2(o, r);
                    format!("rel L2 to the default {err:.2e}, {nan} NaN")
                }
                (Ok(o), None) => {
                    reference = Some(o.clone());
                    "(the reference)".to_string()
                }
                (Err(e), _) => format!("FAILED: {e}"),
            };
            let timed = ms_per_call(&cuda, &|| op(&full))
                .and_then(|ms| Ok((ms, ms_per_call(&cuda, &|| op(&none))?)));
            match timed {
                Ok((ms, empty_ms)) => println!(
                    "flash bench {mode} {name}: {ms:.3} ms/call {:6.1} TFLOP/s \
                     (empty mask {empty_ms:.3} ms; less that: {:.3} ms {:6.1} TFLOP/s); {vs}",
                    flop / ms / 1e9,
                    ms - empty_ms,
                    flop / (ms - empty_ms) / 1e9
                ),
                Err(e) => s.fail(&format!("flash bench {mode} {name}"), e),
            }
        }
    }
    set("FLASHVSR_CUDA_FLASH", saved.0.as_deref());
    set("FLASHVSR_CUDA_FLASH_ORDER", saved.1.as_deref());
    set("FLASHVSR_CUDA_SAGE_INT8", saved.2.as_deref());
    set("FLASHVSR_CUDA_SAGE8_FOLD", saved.3.as_deref());
    set("FLASHVSR_CUDA_SAGE8_EXP", saved.4.as_deref());
}
