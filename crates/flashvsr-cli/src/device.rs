//! Backend choice at run time: `auto` takes CUDA when a driver, a device and the libraries are
//! there, else the CPU, and says which; `cuda[:N]` fails (exit 2) when CUDA cannot start.
//!
//! Precision: `fp32` is the parity mode (exact fp32 everywhere, TF32 off). `auto` on CUDA is the
//! fast mode: GEMMs and convolutions on TF32 tensor cores, attention on bf16 tensor cores where
//! the backend has them. fp16/bf16 storage is not implemented yet.

use flashvsr_cuda::{CudaBackend, CudaOptions};
use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::BackendRef;

use crate::args::Precision;
use crate::failure::{Failure, Outcome};

/// `memory_limit`: `--max-vram` in bytes (the CUDA pool cap, or the CPU backend's tensor limit).
pub fn select(
    device: &str,
    precision: Precision,
    quiet: bool,
    memory_limit: Option<u64>,
) -> Outcome<BackendRef> {
    if matches!(precision, Precision::Fp16 | Precision::Bf16) {
        return Err(Failure::bad(
            "--precision fp16/bf16 (half-precision weights and activations) are not available yet; \
             use auto (fast mixed precision on CUDA) or fp32 (exact)",
        ));
    }
    let device = device.trim().to_ascii_lowercase();
    match device.as_str() {
        "cpu" => Ok(cpu(memory_limit)),
        "auto" => match flashvsr_cuda::probe() {
            Ok(_) => cuda(0, precision, quiet, memory_limit).or_else(|e| {
                if !quiet {
                    eprintln!("flashvsr: device auto: using the CPU ({e})");
                }
                Ok(cpu(memory_limit))
            }),
            Err(why) => {
                if !quiet {
                    eprintln!("flashvsr: device auto: using the CPU ({why})");
                }
                Ok(cpu(memory_limit))
            }
        },
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = d
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse::<usize>)
                .map_err(|_| {
                    Failure::bad(format!(
                        "--device {d}: expected cuda:N with a device number"
                    ))
                })?;
            flashvsr_cuda::probe_device(ordinal)
                .map_err(|why| Failure::bad(format!("--device {d}: {why}")))?;
            cuda(ordinal, precision, quiet, memory_limit)
        }
        other => Err(Failure::bad(format!(
            "--device {other}: expected cpu, cuda, cuda:N or auto"
        ))),
    }
}

fn cpu(memory_limit: Option<u64>) -> BackendRef {
    match memory_limit {
        Some(limit) => CpuBackend::with_memory_limit(limit),
        None => CpuBackend::new_ref(),
    }
}

fn cuda(
    ordinal: usize,
    precision: Precision,
    quiet: bool,
    memory_limit: Option<u64>,
) -> Outcome<BackendRef> {
    let fast = precision == Precision::Auto;
    let options = CudaOptions {
        memory_limit,
        ..CudaOptions::from_env().with_fast_mode(fast)
    };
    let backend = CudaBackend::create(ordinal, options)
        .map_err(|e| Failure::bad(format!("--device cuda:{ordinal}: {e}")))?;
    if !quiet {
        match flashvsr_cuda::probe_device(ordinal) {
            Ok(info) => eprintln!(
                "flashvsr: using CUDA device {ordinal} ({precision:?} precision):\n{info}"
            ),
            Err(why) => eprintln!("flashvsr: using CUDA device {ordinal} ({why})"),
        }
        if let (Some(limit), Some(cap)) = (memory_limit, backend.tensor_memory_cap()) {
            eprintln!(
                "flashvsr: --max-vram {} MiB: {} MiB for tensors after the CUDA context and libraries",
                limit >> 20,
                cap >> 20
            );
        }
    }
    Ok(backend)
}
