//! NVRTC to CUBIN for the exact device arch, with an on-disk cache. Never PTX: a newer NVRTC's
//! PTX is refused by an older driver, its CUBIN is not (STACK.md §2.2).

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use cudarc::nvrtc::{result as nvr, sys as nvs};

use crate::error::{catch, CudaError, CudaResult};

/// True when libnvrtc can be loaded (needs no GPU).
pub fn nvrtc_available() -> bool {
    catch(|| Ok(unsafe { nvs::is_culib_present() })).unwrap_or(false)
}

/// `(major, minor)` of the loaded NVRTC.
pub fn nvrtc_version() -> CudaResult<(i32, i32)> {
    if !nvrtc_available() {
        return Err(CudaError::Library(
            "libnvrtc not found (pip install nvidia-cuda-nvrtc, or set FLASHVSR_CUDA_LIBS)".into(),
        ));
    }
    catch(|| {
        let (mut major, mut minor) = (0, 0);
        unsafe { nvs::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| CudaError::Nvrtc(format!("nvrtcVersion: {e:?}")))?;
        Ok((major, minor))
    })
}

/// The NVRTC target for a compute capability: Hopper gets its arch-specific `sm_90a` so that
/// wgmma kernels can join later; everything else the plain `sm_XY`.
pub fn arch_for(cc: (i32, i32)) -> String {
    match cc {
        (9, 0) => "sm_90a".into(),
        (major, minor) => format!("sm_{major}{minor}"),
    }
}

fn options(arch: &str) -> Vec<String> {
    vec!["--std=c++17".into(), format!("--gpu-architecture={arch}")]
}

fn nvrtc_err(what: &str, e: nvr::NvrtcError) -> CudaError {
    CudaError::Nvrtc(format!("{what}: {e:?}"))
}

/// Compiles one header-free source to a CUBIN. `name` only labels the log.
pub(crate) fn compile_cubin(name: &str, src: &str, arch: &str) -> CudaResult<Vec<u8>> {
    compile_cubin_logged(name, src, arch).map(|(cubin, _)| cubin)
}

/// [`compile_cubin`], with the compiler's log (its warnings and ptxas' notes, such as a wgmma
/// pipeline it serialized).
pub(crate) fn compile_cubin_logged(
    name: &str,
    src: &str,
    arch: &str,
) -> CudaResult<(Vec<u8>, String)> {
    nvrtc_version()?;
    catch(|| {
        let csrc = CString::new(src).map_err(|e| CudaError::Nvrtc(e.to_string()))?;
        let cname = CString::new(name).map_err(|e| CudaError::Nvrtc(e.to_string()))?;
        let prog = nvr::create_program(&csrc, Some(&cname)).map_err(|e| nvrtc_err("create", e))?;
        let out = compile_program(prog, name, &options(arch));
        unsafe { nvr::destroy_program(prog) }.map_err(|e| nvrtc_err("destroy", e))?;
        out
    })
}

fn compile_program(
    prog: nvs::nvrtcProgram,
    name: &str,
    opts: &[String],
) -> CudaResult<(Vec<u8>, String)> {
    let compiled = unsafe { nvr::compile_program(prog, opts) };
    let log: Vec<u8> = unsafe { nvr::get_program_log(prog) }
        .unwrap_or_default()
        .into_iter()
        .map(|c| c as u8)
        .collect();
    let log = CStr::from_bytes_until_nul(&log)
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = compiled {
        return Err(CudaError::Nvrtc(format!(
            "compiling {name} with {opts:?}: {e:?}\n{log}"
        )));
    }
    let mut size = 0usize;
    unsafe { nvs::nvrtcGetCUBINSize(prog, &mut size) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcGetCUBINSize", e))?;
    let mut cubin = vec![0u8; size];
    unsafe { nvs::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcGetCUBIN", e))?;
    Ok((cubin, log))
}

fn cache_path(src: &str, arch: &str, version: (i32, i32)) -> PathBuf {
    let key = format!(
        "{src}\u{0}{}\u{0}nvrtc {}.{}",
        options(arch).join(" "),
        version.0,
        version.1
    );
    let hash = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
    crate::libs::cache_root()
        .join("kernels")
        .join(arch)
        .join(format!("{hash:032x}.cubin"))
}

/// Like [`compile_cubin`], through the cache at `$XDG_CACHE_HOME/flashvsr/kernels/<arch>/`.
/// A cache that cannot be written only costs a recompile next time.
pub(crate) fn cached_cubin(name: &str, src: &str, arch: &str) -> CudaResult<Vec<u8>> {
    let path = cache_path(src, arch, nvrtc_version()?);
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.starts_with(b"\x7fELF") {
            return Ok(bytes);
        }
    }
    let cubin = compile_cubin(name, src, arch)?;
    if let Some(dir) = path.parent() {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, &cubin))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(cubin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopper_gets_the_arch_specific_target() {
        assert_eq!(arch_for((9, 0)), "sm_90a");
        assert_eq!(arch_for((8, 9)), "sm_89");
        assert_eq!(arch_for((12, 0)), "sm_120");
    }

    #[test]
    fn cache_key_depends_on_source_arch_and_version() {
        let a = cache_path("x", "sm_90a", (13, 0));
        assert_ne!(a, cache_path("y", "sm_90a", (13, 0)));
        assert_ne!(a, cache_path("x", "sm_89", (13, 0)));
        assert_ne!(a, cache_path("x", "sm_90a", (13, 1)));
        assert!(a.to_string_lossy().contains("kernels/sm_90a/"));
    }
}
