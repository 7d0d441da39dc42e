//! The persistent kernel for dense attention (flash_wgmma.cu `flash_dense_persistent_body`, the
//! default on sm_90; `FLASHVSR_CUDA_DENSE_PERSISTENT`, read per call: `1hv` its default options,
//! `1` neither, `1h` the head-minor item order, `1v` vector stores) against the kernel it stands
//! for on dense calls (the k128 TMA kernel, `0`), bit for bit: the output, and the bf16 copy of
//! it that the fast mode's GEMMs read (a GEMM over it, bit for bit). Shapes: the DiT's
//! cross-attention (512 keys) at config A's and 1080p's chunks, with more items than SMs (several
//! per CTA, not a multiple of the grid) and fewer; keys not a multiple of 64 or of 128 (masked
//! tails, an absent unit) across items; query rows not a multiple of 128 (the last block's rows
//! not copied). And against the CPU with the bf16 tolerances at small shapes. Off sm_90 the knob
//! changes nothing and these cases check that.
//!
//! `gpu_ops "dense persistent bench"` (only when asked for) times the op at the cross-attention's
//! shapes (fast mode: K/V compact bf16, as the pipeline keeps the prompt's), the kernels
//! alternating: GPU ms per call by CUDA events, median of 5 repeats of 20 calls.

use flashvsr_tensor::{BackendRef, Tensor};

use super::{Input, Suite, BF16_ATTENTION};

const KNOB: &str = "FLASHVSR_CUDA_DENSE_PERSISTENT";
/// The knob's values for the persistent kernel, the default's options first (held to the CPU
/// too, and tested with the fast mode's output without a GEMM).
const VARIANTS: [&str; 4] = ["1hv", "1", "1h", "1v"];

fn set(value: Option<&str>) {
    // The suite runs on one thread: nothing reads the environment concurrently.
    match value {
        Some(v) => std::env::set_var(KNOB, v),
        None => std::env::remove_var(KNOB),
    }
}

/// The stored f32 bits of `op` over `inputs` on `backend` with the knob at `value`.
fn bits(
    backend: &BackendRef,
    inputs: &[Input],
    op: super::Op,
    value: &str,
) -> Result<Vec<u32>, String> {
    set(Some(value));
    Suite::run_on(backend, inputs, op)
        .map(|(_, v)| v.iter().map(|x| x.to_bits()).collect())
        .map_err(|e| e.to_string())
}

impl Suite {
    fn same_bits_case(
        &mut self,
        name: &str,
        variant: &str,
        backend: &BackendRef,
        inputs: &[Input],
        op: super::Op,
    ) {
        if self.skip(name) {
            return;
        }
        self.cases += 1;
        let want = bits(backend, inputs, op, "0");
        let got = bits(backend, inputs, op, variant);
        let verdict = match (got, want) {
            (Err(e), _) | (_, Err(e)) => Err(format!("CUDA error: {e}")),
            (Ok(g), Ok(w)) if g.len() != w.len() => {
                Err(format!("{} values vs {}", g.len(), w.len()))
            }
            (Ok(g), Ok(w)) => {
                let nan = g.iter().filter(|&&b| f32::from_bits(b).is_nan()).count();
                let differ = g.iter().zip(&w).filter(|(a, b)| a != b).count();
                match (nan, g.iter().zip(&w).position(|(a, b)| a != b)) {
                    (0, None) => Ok(format!("{} values, the TMA kernel's bits", g.len())),
                    (nan, None) => Err(format!("{nan} NaN in both")),
                    (_, Some(i)) => Err(format!(
                        "{differ} of {} values differ from the TMA kernel's, first at {i}: {:e} vs {:e}",
                        g.len(),
                        f32::from_bits(g[i]),
                        f32::from_bits(w[i])
                    )),
                }
            }
        };
        match verdict {
            Ok(what) => println!("ok    {name:<44} {what}"),
            Err(msg) => self.fail(name, msg),
        }
    }
}

pub fn run(s: &mut Suite, fast: &BackendRef, ordinal: usize) {
    let saved = std::env::var(KNOB).ok();
    let bf16 = s.gpu_bf16.clone();
    // (query rows, keys, heads, vs the CPU): 1080p's steady chunk (1620 items) and config A's
    // (792), items fewer than SMs, tails across items.
    for (lq, lk, heads, cpu) in [
        (17280, 512, 12, false),
        (8448, 512, 12, false),
        (1024, 512, 12, true),
        (300, 512, 2, true),
        (2000, 300, 12, true),
        (1500, 65, 12, true),
        (77, 200, 3, true),
        (129, 1, 1, true),
    ] {
        let dim = heads * 128;
        let inputs = [
            s.normal_input(&[lq, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
            s.normal_input(&[lk, dim], 1.0),
            s.normal_input(&[96, dim], 0.05),
        ];
        let dense = move |t: &[Tensor]| t[0].attention(&t[1], &t[2], heads);
        let fast_dense =
            move |t: &[Tensor]| t[0].attention(&t[1].compact()?, &t[2].compact()?, heads);
        let into_gemm = move |t: &[Tensor]| fast_dense(t)?.linear(&t[3].compact()?, None);
        for variant in VARIANTS {
            let name = format!("dense persistent {variant} q{lq} k{lk} {heads}x128");
            s.same_bits_case(&format!("{name} bits"), variant, &bf16, &inputs, &dense);
            // Fast mode: K/V compact bf16 (as the prompt's), the output's bf16 copy into a GEMM.
            if variant == VARIANTS[0] {
                s.same_bits_case(
                    &format!("{name} fast bits"),
                    variant,
                    fast,
                    &inputs,
                    &fast_dense,
                );
            }
            s.same_bits_case(
                &format!("{name} fast into a GEMM bits"),
                variant,
                fast,
                &inputs,
                &into_gemm,
            );
            if cpu && variant == VARIANTS[0] && !s.skip(&name) {
                set(Some(variant));
                let cpu_backend = s.cpu.clone();
                s.bf16_case(
                    &name,
                    BF16_ATTENTION,
                    &cpu_backend,
                    &inputs[..3],
                    &dense,
                    &|_| None,
                );
            }
        }
    }
    set(saved.as_deref());
    bench(s, ordinal);
    set(saved.as_deref());
}

const CALLS: usize = 20;
const REPEATS: usize = 5;

fn bench(s: &mut Suite, ordinal: usize) {
    if !s
        .filter
        .as_deref()
        .is_some_and(|f| f.starts_with("dense persistent bench"))
    {
        return;
    }
    let Some(cuda) = super::bench_backend(s, ordinal, "dense persistent bench") else {
        return;
    };
    let fast: BackendRef = cuda.clone();
    let fast = &fast;
    println!(
        "dense persistent bench on {} ({})",
        cuda.device_name(),
        cuda.arch()
    );
    let heads = 12;
    let dim = heads * 128;
    for lq in [8448usize, 17280, 25344, 51840] {
        let tensors = (|| -> flashvsr_tensor::Result<_> {
            let q = Tensor::from_slice(fast, &s.rng.normal_vec(lq * dim, 1.0), &[lq, dim])?;
            let k = Tensor::from_slice(fast, &s.rng.normal_vec(512 * dim, 1.0), &[512, dim])?
                .compact()?;
            let v = Tensor::from_slice(fast, &s.rng.normal_vec(512 * dim, 1.0), &[512, dim])?
                .compact()?;
            Ok((q, k, v))
        })();
        let (q, k, v) = match tensors {
            Ok(t) => t,
            Err(e) => return s.fail("dense persistent bench", format!("inputs: {e}")),
        };
        let op = || q.attention(&k, &v, heads).expect("attention");
        let flop = 4.0 * lq as f64 * 512.0 * dim as f64;
        // "0": the TMA kernel, then the persistent variants.
        let values: Vec<&str> = std::iter::once("0").chain(VARIANTS).collect();
        let mut times = vec![Vec::new(); values.len()];
        for value in &values {
            set(Some(value));
            drop(op());
            drop(op());
        }
        for _ in 0..REPEATS {
            for (i, value) in values.iter().enumerate() {
                set(Some(value));
                match cuda.gpu_time_ms(|| {
                    for _ in 0..CALLS {
                        drop(op());
                    }
                }) {
                    Ok(((), ms)) => times[i].push(ms / CALLS as f64),
                    Err(e) => return s.fail("dense persistent bench", e.to_string()),
                }
            }
        }
        let mut medians = times.into_iter().map(|mut t| {
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        });
        let base = medians.next().unwrap_or(f64::NAN);
        let mut row = format!(
            "dense persistent bench q{lq} k512 12x128: TMA kernel {base:.4} ms/call ({:.0} TFLOP/s)",
            flop / base / 1e9
        );
        for (value, ms) in VARIANTS.iter().zip(medians) {
            row += &format!(
                "; {value} {ms:.4} ({:.0}, {:+.1} %)",
                flop / ms / 1e9,
                100.0 * (ms / base - 1.0)
            );
        }
        println!("{row}");
    }
}
