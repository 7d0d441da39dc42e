//! Backend choice at run time: `auto` takes CUDA when a driver, a device and the libraries are
//! there, else the CPU, and says which; `cuda[:N]` fails (exit 2) when CUDA cannot start.

use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::BackendRef;

use crate::args::Precision;
use crate::failure::{Failure, Outcome};

pub fn select(device: &str, precision: Precision, quiet: bool) -> Outcome<BackendRef> {
    if matches!(precision, Precision::Fp16 | Precision::Bf16) {
        return Err(Failure::bad(
            "--precision fp16/bf16 are not available yet: both backends compute in fp32",
        ));
    }
    let device = device.trim().to_ascii_lowercase();
    match device.as_str() {
        "cpu" => Ok(CpuBackend::new_ref()),
        "auto" => match flashvsr_cuda::auto_backend() {
            Ok(backend) => {
                if !quiet {
                    announce(0);
                }
                Ok(backend)
            }
            Err(why) => {
                if !quiet {
                    eprintln!("flashvsr: device auto: using the CPU ({why})");
                }
                Ok(CpuBackend::new_ref())
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
            let backend = flashvsr_cuda::CudaBackend::new(ordinal)
                .map_err(|e| Failure::bad(format!("--device {d}: {e}")))?;
            if !quiet {
                announce(ordinal);
            }
            Ok(backend)
        }
        other => Err(Failure::bad(format!(
            "--device {other}: expected cpu, cuda, cuda:N or auto"
        ))),
    }
}

/// Logs the driver, library versions and paths of the CUDA device in use.
fn announce(ordinal: usize) {
    match flashvsr_cuda::probe_device(ordinal) {
        Ok(info) => eprintln!("flashvsr: using CUDA device {ordinal}:\n{info}"),
        Err(why) => eprintln!("flashvsr: using CUDA device {ordinal} ({why})"),
    }
}
