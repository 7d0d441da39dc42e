//! Weight files: safetensors and torch zip pickles (`.pth`/`.ckpt`), memory-mapped and indexed at
//! open; tensors are decoded to f32 on demand. Nothing in a file is ever executed.

mod pickle;
mod safetensors_file;
mod source;
mod torch_zip;

pub use source::WeightSource;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use flashvsr_tensor::DType;
use memmap2::Mmap;

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid weight file: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{}: missing tensor `{key}` ({what})", path.display())]
    MissingKey {
        path: PathBuf,
        key: String,
        what: String,
    },
    #[error("{}: unexpected tensor `{key}` ({what})", path.display())]
    UnexpectedKey {
        path: PathBuf,
        key: String,
        what: String,
    },
    #[error("{}: tensor `{key}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: {reason}", path.display())]
    WrongFile { path: PathBuf, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    Safetensors,
    TorchZip,
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::TorchZip => "torch zip",
        })
    }
}

/// Where one tensor's elements live in the map. Safetensors tensors are contiguous with offset 0;
/// torch tensors are views (offset, strides in elements) into a storage entry.
#[derive(Clone, Debug)]
pub(crate) struct TensorEntry {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
    /// Byte range of the whole storage (torch) or tensor (safetensors) inside the map.
    pub bytes: Range<usize>,
}

impl TensorEntry {
    pub fn numel(&self) -> usize {
        // Checked when the entry was built (`check_extent`), so the product cannot overflow.
        self.shape.iter().product()
    }

    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }
}

pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0usize; shape.len()];
    let mut acc = 1usize;
    for (stride, &size) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc = acc.saturating_mul(size);
    }
    strides
}

/// Verifies that every element of the view lies inside `storage_bytes`; all arithmetic is checked
/// so that hostile shapes cannot overflow into a small, passing extent.
pub(crate) fn check_extent(
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    dtype: DType,
    storage_bytes: usize,
) -> Result<(), String> {
    if shape.len() != strides.len() {
        return Err(format!(
            "shape {shape:?} and strides {strides:?} have different ranks"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(|| format!("element count of shape {shape:?} overflows"))?;
    if numel == 0 {
        return Ok(());
    }
    let mut last = offset;
    for (&size, &stride) in shape.iter().zip(strides) {
        last = (size - 1)
            .checked_mul(stride)
            .and_then(|span| last.checked_add(span))
            .ok_or_else(|| format!("extent of shape {shape:?} strides {strides:?} overflows"))?;
    }
    let needed = last
        .checked_add(1)
        .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
        .ok_or_else(|| format!("extent of shape {shape:?} strides {strides:?} overflows"))?;
    if needed > storage_bytes {
        return Err(format!(
            "needs {needed} bytes (offset {offset}, shape {shape:?}, strides {strides:?}, {dtype}) \
             but its storage has only {storage_bytes}"
        ));
    }
    Ok(())
}

/// A memory-mapped weight file and its tensor index.
pub struct WeightFile {
    path: PathBuf,
    format: WeightFormat,
    map: Mmap,
    tensors: BTreeMap<String, TensorEntry>,
    bare_tensor: bool,
}

impl fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Git checkouts without symlink support turn a relative link into a small text file holding the
/// target path (the golden v1.0 folder is such a checkout); following it keeps those folders usable.
const MAX_LINK_STUB_LEN: usize = 1024;
const MAX_LINK_STUB_DEPTH: usize = 8;

impl WeightFile {
    /// Opens and indexes a weight file; the format is detected from the content, never from the
    /// extension.
    pub fn open(path: &Path) -> Result<WeightFile, WeightError> {
        let mut actual = path.to_path_buf();
        for _ in 0..=MAX_LINK_STUB_DEPTH {
            let map = map_file(&actual)?;
            match link_stub_target(&actual, &map) {
                LinkStub::No => {}
                LinkStub::Target(target) => {
                    actual = target;
                    continue;
                }
                LinkStub::Dangling(target) => {
                    return Err(format_error(
                        &actual,
                        format!(
                            "it is a short text file naming `{}`, which does not exist \
                             (a symlink checked out as a plain file?)",
                            target.display()
                        ),
                    ))
                }
            }
            let (format, tensors, bare_tensor) = index(&actual, &map)?;
            return Ok(WeightFile {
                path: path.to_path_buf(),
                format,
                map,
                tensors,
                bare_tensor,
            });
        }
        Err(format_error(
            path,
            format!("more than {MAX_LINK_STUB_DEPTH} levels of link stub files"),
        ))
    }

    /// The path given to `open` (before following any link stub).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.tensors.get(name).map(|t| t.dtype)
    }

    /// True when the pickle root is a single tensor; its one entry is named "".
    pub fn is_bare_tensor(&self) -> bool {
        self.bare_tensor
    }

    /// The raw little-endian bytes of a tensor stored contiguously (row-major, no gaps), straight
    /// from the map; `None` for unknown names and non-contiguous views.
    pub fn contiguous_bytes(&self, name: &str) -> Option<&[u8]> {
        let t = self.tensors.get(name)?;
        if !t.is_contiguous() {
            return None;
        }
        let elem = t.dtype.size_in_bytes();
        let start = t.offset.checked_mul(elem)?.checked_add(t.bytes.start)?;
        self.map.get(start..start.checked_add(t.numel() * elem)?)
    }

    /// Row-major contiguous f32 copy of the tensor (bf16/f16 converted exactly).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightError::MissingKey {
                path: self.path.clone(),
                key: name.to_string(),
                what: format!("not among the {} tensors of this file", self.tensors.len()),
            })?;
        let storage = self.map.get(t.bytes.clone()).ok_or_else(|| {
            format_error(&self.path, format!("tensor `{name}` lies outside the file"))
        })?;
        let mut out = Vec::with_capacity(t.numel());
        gather_f32(t, storage, &mut out);
        Ok(out)
    }

    /// Like `read_f32` but checks the shape first.
    pub fn read_f32_shaped(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        if let Some(found) = self.shape(name) {
            if found != expected {
                return Err(WeightError::Shape {
                    path: self.path.clone(),
                    key: name.to_string(),
                    expected: expected.to_vec(),
                    found: found.to_vec(),
                });
            }
        }
        self.read_f32(name)
    }
}

pub(crate) fn format_error(path: &Path, reason: impl Into<String>) -> WeightError {
    WeightError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn map_file(path: &Path) -> Result<Mmap, WeightError> {
    let io = |source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(format_error(path, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(format_error(path, "the file is empty"));
    }
    // SAFETY: the map is read-only and weight files are not modified while a model is loaded;
    // a concurrent truncation could fault (SIGBUS), the accepted cost of not copying gigabytes.
    unsafe { Mmap::map(&file) }.map_err(io)
}

enum LinkStub {
    No,
    Target(PathBuf),
    Dangling(PathBuf),
}

/// A stub is one line of printable text. No weight file can look like that: safetensors starts
/// with a binary little-endian header length, zip and pickle with non-text magic bytes.
fn link_stub_target(path: &Path, bytes: &[u8]) -> LinkStub {
    if bytes.len() > MAX_LINK_STUB_LEN {
        return LinkStub::No;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return LinkStub::No;
    };
    if text.is_empty() || text.chars().any(char::is_control) {
        return LinkStub::No;
    }
    let target = path.parent().unwrap_or(Path::new("")).join(text);
    if target.is_file() {
        LinkStub::Target(target)
    } else {
        LinkStub::Dangling(target)
    }
}

type Index = (WeightFormat, BTreeMap<String, TensorEntry>, bool);

/// Start of every legacy `torch.save` file: PROTO 2, then LONG1 of torch's magic number.
const LEGACY_TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
const RESAVE_HINT: &str = "re-save it with torch.save(..., _use_new_zipfile_serialization=True) \
                           or convert it to safetensors";

fn index(path: &Path, bytes: &[u8]) -> Result<Index, WeightError> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        let (tensors, bare) = torch_zip::index(path, bytes)?;
        return Ok((WeightFormat::TorchZip, tensors, bare));
    }
    if bytes.starts_with(LEGACY_TORCH_MAGIC) {
        return Err(format_error(
            path,
            format!("this is a legacy (pre-1.6, non-zip) torch file; {RESAVE_HINT}"),
        ));
    }
    match safetensors_file::index(path, bytes) {
        Ok(tensors) => Ok((WeightFormat::Safetensors, tensors, false)),
        // Checked only after safetensors fails: a safetensors header length can start 0x80 0x02.
        Err(_)
            if bytes.first() == Some(&0x80)
                && bytes.get(1).is_some_and(|p| (2..=5).contains(p)) =>
        {
            Err(format_error(
                path,
                format!("this is a plain pickle, not a torch zip checkpoint; {RESAVE_HINT}"),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Copies a strided view in row-major order; runs along a unit-stride last axis are decoded in
/// one call. Bounds were validated by `check_extent` at open.
fn gather_f32(t: &TensorEntry, storage: &[u8], out: &mut Vec<f32>) {
    let elem = t.dtype.size_in_bytes();
    let numel = t.numel();
    if numel == 0 {
        return;
    }
    if t.is_contiguous() {
        let start = t.offset * elem;
        t.dtype
            .decode_le_to_f32(&storage[start..start + numel * elem], out);
        return;
    }
    let rank = t.shape.len();
    let (inner, inner_stride) = (t.shape[rank - 1], t.strides[rank - 1]);
    let outer_rank = rank - 1;
    let mut index = vec![0usize; outer_rank];
    let rows = numel / inner;
    for _ in 0..rows {
        let base = t.offset
            + index
                .iter()
                .zip(&t.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        if inner_stride == 1 {
            let start = base * elem;
            t.dtype
                .decode_le_to_f32(&storage[start..start + inner * elem], out);
        } else {
            for k in 0..inner {
                let start = (base + k * inner_stride) * elem;
                t.dtype.decode_le_to_f32(&storage[start..start + elem], out);
            }
        }
        for axis in (0..outer_rank).rev() {
            index[axis] += 1;
            if index[axis] < t.shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}
