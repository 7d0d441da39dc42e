//! Backend choice. This build carries the CPU backend; `auto` falls back to it and says why.

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::BackendRef;

use crate::args::Precision;
use crate::failure::{Failure, Outcome};

pub fn select(device: &str, precision: Precision, quiet: bool) -> Outcome<BackendRef> {
    let device = device.trim().to_ascii_lowercase();
    match device.as_str() {
        "cpu" => {}
        "auto" => {
            if !quiet {
                eprintln!("flashvsr: device auto: using the CPU (this build has no CUDA backend)");
            }
        }
        d if d == "cuda" || d.starts_with("cuda:") => {
            return Err(Failure::bad(format!(
                "--device {d}: this build of flashvsr has no CUDA backend; use --device cpu"
            )))
        }
        other => {
            return Err(Failure::bad(format!(
                "--device {other}: expected cpu, cuda, cuda:N or auto"
            )))
        }
    }
    match precision {
        Precision::Auto | Precision::Fp32 => Ok(CpuBackend::new_ref()),
        Precision::Fp16 | Precision::Bf16 => Err(Failure::bad(
            "--precision fp16/bf16 need a GPU backend; the CPU backend computes in fp32",
        )),
    }
}
