//! Compiles every kernel to an sm_90a CUBIN with NVRTC. Needs libnvrtc but no GPU; skips with a
//! message when libnvrtc is absent. Own `main` (harness = false): the library resolver may re-exec
//! this binary once, which must happen before any test thread starts.

fn main() {
    let libs = match flashvsr_cuda::prepare_and_reexec_if_needed() {
        Ok(libs) => libs,
        Err(e) => {
            eprintln!("nvrtc_compile: library resolver failed: {e}");
            std::process::exit(1);
        }
    };
    if !flashvsr_cuda::nvrtc_available() {
        println!("nvrtc_compile: skipped: libnvrtc not found (pip install nvidia-cuda-nvrtc)");
        return;
    }
    let (major, minor) = flashvsr_cuda::nvrtc_version().expect("nvrtc version");
    println!("nvrtc_compile: NVRTC {major}.{minor}");
    print!("{libs}");
    for arch in ["sm_90a", "sm_89"] {
        let start = std::time::Instant::now();
        match flashvsr_cuda::compile_all_kernels_for(arch) {
            Ok(cubins) => {
                for (name, bytes, log) in &cubins {
                    println!("nvrtc_compile: {arch} {name}: {bytes} bytes");
                    assert!(*bytes > 0, "{name}: empty CUBIN");
                    // ptxas notes where it had to serialize a wgmma pipeline (C7510-C7520:
                    // "wgmma.mma_async instructions are serialized due to ..."): the Hopper
                    // kernel would still be right, and slow.
                    assert!(
                        !log.contains("serialized"),
                        "{arch} {name}: ptxas serialized wgmma:\n{log}"
                    );
                }
                let wgmma = cubins.iter().find(|c| c.0 == "flash_wgmma.cu");
                let wgmma_bytes = wgmma.map_or(0, |c| c.1);
                // Built for sm_90a only; elsewhere its kernels are empty (~3 KB each with their
                // parameters: 16 kernels, 42 KB; on sm_90a 0.7 MB).
                if arch == "sm_90a" {
                    assert!(
                        wgmma_bytes > 256 * 1024,
                        "flash_wgmma.cu: {wgmma_bytes} bytes"
                    );
                } else {
                    assert!(
                        wgmma_bytes < 80 * 1024,
                        "flash_wgmma.cu: {wgmma_bytes} bytes"
                    );
                }
                println!(
                    "nvrtc_compile: {arch}: {} sources in {:.2}s: ok",
                    cubins.len(),
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                eprintln!("nvrtc_compile: {arch}: FAILED\n{e}");
                std::process::exit(1);
            }
        }
    }
}
