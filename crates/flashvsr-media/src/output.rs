//! Atomic publication of an output: everything is written under a hidden sibling name
//! (`.<name>.partial-<pid>-<n>`) on the same filesystem and renamed to the final name at the end,
//! so a crash, an error or a dropped sink never leaves a partial output under the final name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::MediaError;

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// File extensions a directory we may replace is allowed to hold (see [`check_replaceable`]).
const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "tif", "tiff", "exr", "dpx", "bmp", "webp", "y4m",
];

pub(crate) struct PendingOutput {
    final_path: PathBuf,
    temp_path: PathBuf,
    overwrite: bool,
    published: bool,
    /// A temporary output this process made is removed unless published; one adopted (a
    /// resumable job's) is left for the next run.
    remove_on_drop: bool,
}

pub(crate) fn sibling(final_path: &Path, tag: &str) -> Result<PathBuf, MediaError> {
    let name = final_path
        .file_name()
        .ok_or_else(|| MediaError::bad_output(final_path, "output path has no file name"))?;
    let parent = match final_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(format!(".{tag}-{}-{serial}", std::process::id()));
    Ok(parent.join(hidden))
}

/// An existing directory is replaced only if it looks like an image-sequence output: no
/// subdirectories and only image files (hidden files aside). This keeps `-o ~ --overwrite` from
/// deleting a home directory.
fn check_replaceable(path: &Path) -> Result<(), MediaError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MediaError::write(path, e)),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(path).map_err(|e| MediaError::write(path, e))? {
        let entry = entry.map_err(|e| MediaError::write(path, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(true);
        let image = Path::new(&*name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_dir || !(image || name.starts_with('.')) {
            return Err(MediaError::bad_output(
                path,
                format!(
                    "refusing to replace this directory: it holds {name:?}, which is not an image \
                     file (remove it yourself or choose another output)"
                ),
            ));
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl PendingOutput {
    /// Checks the final name and creates the temporary file or directory.
    pub(crate) fn create(
        final_path: &Path,
        is_dir: bool,
        overwrite: bool,
    ) -> Result<Self, MediaError> {
        if fs::symlink_metadata(final_path).is_ok() {
            if !overwrite {
                return Err(MediaError::OutputExists {
                    path: final_path.to_path_buf(),
                });
            }
            check_replaceable(final_path)?;
        }
        let temp_path = sibling(final_path, "partial")?;
        let made = if is_dir {
            fs::create_dir(&temp_path)
        } else {
            fs::File::create(&temp_path).map(drop)
        };
        made.map_err(|e| MediaError::write(final_path, e))?;
        Ok(PendingOutput {
            final_path: final_path.to_path_buf(),
            temp_path,
            overwrite,
            published: false,
            remove_on_drop: true,
        })
    }

    /// An output already written at `temp_path` (on the same filesystem), to publish as
    /// `final_path`.
    pub(crate) fn adopt(temp_path: &Path, final_path: &Path, overwrite: bool) -> Self {
        PendingOutput {
            final_path: final_path.to_path_buf(),
            temp_path: temp_path.to_path_buf(),
            overwrite,
            published: false,
            remove_on_drop: false,
        }
    }

    pub(crate) fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    pub(crate) fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Renames the temporary output to the final name. An existing output (allowed only with
    /// overwrite) is moved aside first and deleted once the new one is in place, so there is no
    /// moment without a complete output under the final name beyond the two renames.
    pub(crate) fn publish(mut self) -> Result<(), MediaError> {
        let target = self.final_path.clone();
        let werr = |e| MediaError::write(&target, e);
        if fs::symlink_metadata(&target).is_ok() {
            if !self.overwrite {
                return Err(MediaError::OutputExists {
                    path: target.clone(),
                });
            }
            check_replaceable(&target)?;
            let old = sibling(&target, "old")?;
            fs::rename(&target, &old).map_err(werr)?;
            if let Err(e) = fs::rename(&self.temp_path, &target) {
                let _ = fs::rename(&old, &target);
                return Err(werr(e));
            }
            self.published = true;
            remove_any(&old).map_err(werr)?;
        } else {
            fs::rename(&self.temp_path, &target).map_err(werr)?;
            self.published = true;
        }
        // Make the rename durable where the platform allows syncing a directory.
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        if !self.published && self.remove_on_drop {
            let _ = remove_any(&self.temp_path);
        }
    }
}
