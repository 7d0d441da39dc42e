//! Finds the CUDA user-space libraries and makes cudarc load exactly those (STACK.md §3).
//!
//! cudarc `dlopen`s by name and tries the unversioned dev name first, so a stray system
//! `libnvrtc.so` wins over anything we preload. What works: resolve each library family to one
//! folder, put symlinks to that family (soname, unversioned alias, siblings such as
//! `libnvrtc-builtins`) into a private folder, and re-exec once with that folder first on
//! `LD_LIBRARY_PATH`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{CudaError, CudaResult};

/// Extra library folders, `:`-separated, searched before anything else.
pub const ENV_LIB_DIRS: &str = "FLASHVSR_CUDA_LIBS";
/// Set in the re-executed child to the symlink folder; its presence stops a second re-exec.
pub const ENV_FARM: &str = "FLASHVSR_CUDALIBS";

struct Family {
    soname: &'static str,
    alias: &'static str,
    prefix: &'static str,
}

/// `libcuda.so.1` is deliberately absent: the driver always comes from the system.
const FAMILIES: [Family; 3] = [
    Family {
        soname: "libnvrtc.so.13",
        alias: "libnvrtc.so",
        prefix: "libnvrtc",
    },
    Family {
        soname: "libcublasLt.so.13",
        alias: "libcublasLt.so",
        prefix: "libcublas",
    },
    Family {
        soname: "libcudnn.so.9",
        alias: "libcudnn.so",
        prefix: "libcudnn",
    },
];

/// One library family: the folder its soname was found in and the real file behind it.
#[derive(Clone, Debug)]
pub struct ResolvedLib {
    pub soname: &'static str,
    pub dir: Option<PathBuf>,
    pub path: Option<PathBuf>,
}

/// What the resolver found; `flashvsr doctor` prints it.
#[derive(Clone, Debug, Default)]
pub struct LibReport {
    /// The symlink folder this process loads from (set in the re-executed child).
    pub farm: Option<PathBuf>,
    pub libraries: Vec<ResolvedLib>,
}

impl LibReport {
    pub fn path_of(&self, soname: &str) -> Option<&Path> {
        self.libraries
            .iter()
            .find(|l| l.soname == soname)
            .and_then(|l| l.path.as_deref())
    }
}

impl fmt::Display for LibReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.farm {
            Some(farm) => writeln!(f, "library folder: {}", farm.display())?,
            None => writeln!(
                f,
                "library folder: none (libraries load from the default path)"
            )?,
        }
        for lib in &self.libraries {
            match &lib.path {
                Some(p) => writeln!(f, "  {} => {}", lib.soname, p.display())?,
                None => writeln!(f, "  {}: not found", lib.soname)?,
            }
        }
        Ok(())
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Subfolders of `parent` whose names start with `prefix`, newest version first.
fn subdirs(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v.reverse();
    v
}

/// The wheel folders (`nvidia/cu13/lib`, `nvidia/cudnn/lib`) of a Python prefix.
fn wheel_dirs(prefix: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for py in subdirs(&prefix.join("lib"), "python3") {
        for sp in ["site-packages", "dist-packages"] {
            for pkg in ["cu13", "cudnn"] {
                v.push(py.join(sp).join("nvidia").join(pkg).join("lib"));
            }
        }
    }
    v
}

fn cuda_root_dirs(root: &Path) -> [PathBuf; 3] {
    [
        root.join("lib64"),
        root.join("targets/x86_64-linux/lib"),
        root.join("lib"),
    ]
}

/// Folders that hold one of our sonames according to `ldconfig -p`.
fn ld_cache_dirs() -> Vec<PathBuf> {
    let out = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|exe| std::process::Command::new(exe).arg("-p").output().ok());
    let Some(out) = out else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if !FAMILIES.iter().any(|f| f.soname == name) {
            continue;
        }
        if let Some((_, path)) = line.split_once("=> ") {
            if let Some(dir) = Path::new(path.trim()).parent() {
                v.push(dir.to_path_buf());
            }
        }
    }
    v
}

/// Every folder that may hold CUDA user-space libraries, in the order STACK.md §3 gives.
pub fn candidate_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    if let Ok(dirs) = std::env::var(ENV_LIB_DIRS) {
        v.extend(dirs.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(p) = env_path(var) {
            v.extend(wheel_dirs(&p));
            v.push(p.join("lib"));
        }
    }
    for var in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        if let Some(p) = env_path(var) {
            v.extend(cuda_root_dirs(&p));
        }
    }
    v.extend(cuda_root_dirs(Path::new("/usr/local/cuda")));
    for d in subdirs(Path::new("/usr/local"), "cuda-13") {
        v.extend(cuda_root_dirs(&d));
    }
    v.extend(ld_cache_dirs());
    let home = env_path("HOME");
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for d in subdirs(Path::new("/opt"), "") {
        prefixes.push(d.join(".venv"));
        prefixes.push(d);
    }
    if let Some(h) = &home {
        prefixes.push(h.join(".local"));
    }
    let pyenv = env_path("PYENV_ROOT").or_else(|| home.as_ref().map(|h| h.join(".pyenv")));
    if let Some(p) = pyenv {
        prefixes.extend(subdirs(&p.join("versions"), ""));
    }
    prefixes.push("/usr/local".into());
    prefixes.push("/usr".into());
    for p in prefixes {
        v.extend(wheel_dirs(&p));
    }
    let mut seen = std::collections::HashSet::new();
    // The compat folder holds a forward-compatibility libcuda that must never shadow the driver.
    v.retain(|p| {
        !p.components().any(|c| c.as_os_str() == "compat") && p.is_dir() && seen.insert(p.clone())
    });
    v
}

/// Resolves every family to the first folder holding its soname. No side effects.
pub fn resolve() -> LibReport {
    let dirs = candidate_dirs();
    let libraries = FAMILIES
        .iter()
        .map(|f| {
            let found = dirs.iter().find_map(|d| {
                let real = std::fs::canonicalize(d.join(f.soname)).ok()?;
                Some((d.clone(), real))
            });
            ResolvedLib {
                soname: f.soname,
                dir: found.as_ref().map(|(d, _)| d.clone()),
                path: found.map(|(_, p)| p),
            }
        })
        .collect();
    LibReport {
        farm: None,
        libraries,
    }
}

pub(crate) fn cache_root() -> PathBuf {
    env_path("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("flashvsr")
}

/// The sonames' folder entries that belong to the family, by their file names.
fn family_members(dir: &Path, prefix: &str) -> Vec<(std::ffi::OsString, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let s = name.to_string_lossy();
            let member = s.starts_with(prefix) && s.contains(".so") && !s.contains(".alt.");
            let real = std::fs::canonicalize(e.path()).ok()?;
            member.then_some((name, real))
        })
        .collect()
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CudaError {
    CudaError::Library(format!("{what} {}: {e}", path.display()))
}

/// Builds (or reuses) the symlink folder for the resolved libraries; made in a temporary folder
/// and renamed into place so that concurrent processes never see half a folder.
fn build_farm(report: &LibReport) -> CudaResult<PathBuf> {
    build_farm_in(&cache_root().join("cudalibs"), report)
}

fn build_farm_in(root: &Path, report: &LibReport) -> CudaResult<PathBuf> {
    let mut key = String::new();
    for lib in &report.libraries {
        if let Some(p) = &lib.path {
            key.push_str(&format!("{}={}\n", lib.soname, p.display()));
        }
    }
    std::fs::create_dir_all(root).map_err(|e| io_err("creating", root, e))?;
    let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    let dest = root.join(format!("{hash:016x}"));
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = root.join(format!(".{hash:016x}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
    for (family, lib) in FAMILIES.iter().zip(&report.libraries) {
        let (Some(dir), Some(real)) = (&lib.dir, &lib.path) else {
            continue;
        };
        // Siblings live next to the soname found, not next to the real file it may point to.
        for (name, target) in family_members(dir, family.prefix) {
            let link = tmp.join(&name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).map_err(|e| io_err("linking", &link, e))?;
        }
        for name in [family.soname, family.alias] {
            let link = tmp.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(real, &link).map_err(|e| io_err("linking", &link, e))?;
        }
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        Err(_) if dest.is_dir() => {
            // Another process won the race; its folder has the same content.
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(io_err("renaming into", &dest, e))
        }
    }
}

/// The report as seen from inside the re-executed child.
fn report_from_farm(farm: &Path) -> LibReport {
    LibReport {
        farm: Some(farm.to_path_buf()),
        libraries: FAMILIES
            .iter()
            .map(|f| ResolvedLib {
                soname: f.soname,
                dir: Some(farm.to_path_buf()),
                path: std::fs::canonicalize(farm.join(f.soname)).ok(),
            })
            .collect(),
    }
}

/// The libraries this process loads: the symlink folder's in a re-executed child, else what the
/// resolver would pick. Never re-execs.
pub fn current_report() -> LibReport {
    match env_path(ENV_FARM) {
        Some(farm) => report_from_farm(&farm),
        None => resolve(),
    }
}

/// Call first thing in `main`, before any thread starts and before any CUDA call. Resolves the
/// libraries, builds the symlink folder and re-execs this program once with it on
/// `LD_LIBRARY_PATH`; in the re-executed process (`FLASHVSR_CUDALIBS` set) it only reports.
/// Returns without re-exec when no CUDA library was found. Never returns on a successful re-exec.
pub fn prepare_and_reexec_if_needed() -> CudaResult<LibReport> {
    if let Some(farm) = env_path(ENV_FARM) {
        return Ok(report_from_farm(&farm));
    }
    let report = resolve();
    if report.libraries.iter().all(|l| l.path.is_none()) {
        return Ok(report);
    }
    let farm = build_farm(&report)?;
    let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let path = if old.is_empty() {
        farm.display().to_string()
    } else {
        format!("{}:{old}", farm.display())
    };
    reexec(&farm, &path)
}

fn reexec(farm: &Path, ld_path: &str) -> CudaResult<LibReport> {
    use std::os::unix::process::CommandExt;
    // /proc/self/exe still works when the binary was replaced on disk after start.
    let exe = if Path::new("/proc/self/exe").exists() {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().map_err(|e| CudaError::Library(format!("current exe: {e}")))?
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(&exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let err = cmd
        .args(args)
        .env(ENV_FARM, farm)
        .env("LD_LIBRARY_PATH", ld_path)
        .exec();
    Err(CudaError::Library(format!(
        "re-exec with LD_LIBRARY_PATH={ld_path} failed: {err}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn farm_links_family_and_alias() {
        let base = std::env::temp_dir().join(format!("flashvsr-libs-test-{}", std::process::id()));
        let libdir = base.join("lib");
        std::fs::create_dir_all(&libdir).unwrap();
        for name in [
            "libnvrtc.so.13",
            "libnvrtc-builtins.so.13.0",
            "libnvrtc.alt.so.13",
        ] {
            std::fs::write(libdir.join(name), b"x").unwrap();
        }
        let dirs = wheel_dirs(&base);
        assert!(dirs.iter().all(|d| d.ends_with("lib")));
        let real = std::fs::canonicalize(libdir.join("libnvrtc.so.13")).unwrap();
        let members: Vec<String> = family_members(&libdir, "libnvrtc")
            .into_iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        assert!(members.contains(&"libnvrtc-builtins.so.13.0".to_string()));
        assert!(!members.iter().any(|m| m.contains(".alt.")));
        let report = LibReport {
            farm: None,
            libraries: vec![ResolvedLib {
                soname: "libnvrtc.so.13",
                dir: Some(libdir.clone()),
                path: Some(real.clone()),
            }],
        };
        assert_eq!(report.path_of("libnvrtc.so.13"), Some(real.as_path()));
        let farm = build_farm_in(&base.join("farms"), &report).unwrap();
        for name in ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc-builtins.so.13.0"] {
            assert!(farm.join(name).exists(), "{name} missing in the farm");
        }
        assert!(!farm.join("libnvrtc.alt.so.13").exists());
        assert_eq!(build_farm_in(&base.join("farms"), &report).unwrap(), farm);
        assert_eq!(
            report_from_farm(&farm).path_of("libnvrtc.so.13"),
            Some(real.as_path())
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn report_prints_missing_libraries() {
        let r = LibReport {
            farm: None,
            libraries: vec![ResolvedLib {
                soname: "libnvrtc.so.13",
                dir: None,
                path: None,
            }],
        };
        assert!(r.to_string().contains("libnvrtc.so.13: not found"));
    }
}
