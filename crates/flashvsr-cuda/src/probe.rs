//! What is there: driver, devices, NVRTC, cuBLASLt and the library paths. Checks library
//! presence before each first call, since cudarc panics when a library cannot be loaded.

use std::fmt;

use cudarc::driver::{result, sys};

use crate::context::{driver_present, driver_version};
use crate::error::{catch, CudaError, CudaResult};
use crate::libs::LibReport;

#[derive(Clone, Debug)]
pub struct CudaInfo {
    /// The driver's CUDA version, e.g. 13000 for 13.0.
    pub driver_version: i32,
    pub device_count: usize,
    pub ordinal: usize,
    pub device_name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    /// `(major, minor)`, None when libnvrtc is missing.
    pub nvrtc_version: Option<(i32, i32)>,
    /// e.g. 130100, None when libcublasLt is missing.
    pub cublaslt_version: Option<usize>,
    pub libraries: LibReport,
}

impl fmt::Display for CudaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.compute_capability;
        writeln!(
            f,
            "cuda:{} {} (compute {major}.{minor}, {:.1} GiB), {} device(s), driver CUDA {}.{}",
            self.ordinal,
            self.device_name,
            self.total_memory as f64 / (1u64 << 30) as f64,
            self.device_count,
            self.driver_version / 1000,
            self.driver_version % 1000 / 10
        )?;
        match self.nvrtc_version {
            Some((a, b)) => writeln!(f, "NVRTC {a}.{b}")?,
            None => writeln!(f, "NVRTC: not found")?,
        }
        match self.cublaslt_version {
            Some(v) => writeln!(f, "cuBLASLt {v}")?,
            None => writeln!(f, "cuBLASLt: not found")?,
        }
        write!(f, "{}", self.libraries)
    }
}

/// Probes device 0.
pub fn probe() -> Result<CudaInfo, String> {
    probe_device(0)
}

/// Probes one device without creating a context. Err says why CUDA cannot be used.
pub fn probe_device(ordinal: usize) -> Result<CudaInfo, String> {
    catch(|| probe_inner(ordinal)).map_err(|e| e.to_string())
}

fn probe_inner(ordinal: usize) -> CudaResult<CudaInfo> {
    let libraries = crate::libs::current_report();
    if !driver_present() {
        return Err(CudaError::Library(
            "libcuda.so.1 not found: no NVIDIA driver".into(),
        ));
    }
    result::init()?;
    let driver_version = driver_version()?;
    let device_count = result::device::get_count()? as usize;
    if ordinal >= device_count {
        return Err(CudaError::Input(format!(
            "cuda:{ordinal} requested, {device_count} device(s) present"
        )));
    }
    let dev = result::device::get(ordinal as i32)?;
    use sys::CUdevice_attribute as A;
    let attr = |a| unsafe { result::device::get_attribute(dev, a) };
    let compute_capability = (
        attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    );
    Ok(CudaInfo {
        driver_version,
        device_count,
        ordinal,
        device_name: result::device::get_name(dev)?,
        compute_capability,
        total_memory: unsafe { result::device::total_mem(dev) }?,
        nvrtc_version: crate::nvrtc::nvrtc_version().ok(),
        cublaslt_version: crate::gemm::cublaslt_version(),
        libraries,
    })
}
