//! torch >= 1.6 checkpoints: a zip of `<root>/data.pkl` (the object graph) and one entry per
//! storage, `<root>/data/<key>`. Entries are read in place from the memory map, so they must be
//! stored uncompressed (torch always writes them that way).

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, Container, Tensor, Value};
use super::{check_extent, format_error, TensorEntry, WeightError};

/// Bounds the walk over a pickled graph whose dicts are shared many times (a DAG can name an
/// exponential number of paths); real state dicts have at most tens of thousands of entries.
const MAX_DICT_VISITS: usize = 4_000_000;

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;
type Named = Vec<(String, Rc<Tensor>)>;

pub(super) fn index(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, TensorEntry>, bool), WeightError> {
    let err = |reason: String| format_error(path, reason);
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        err(format!(
            "cannot read the zip archive ({e}); truncated or corrupt?"
        ))
    })?;
    let root = pickle_root(&archive).map_err(err)?;
    let order_name = format!("{root}/byteorder");
    if archive.index_for_name(&order_name).is_some() {
        let range = entry_range(&mut archive, &order_name, bytes.len()).map_err(err)?;
        if &bytes[range] != b"little" {
            return Err(err(format!(
                "{order_name} is not `little`; only little-endian checkpoints are supported"
            )));
        }
    }
    let pkl_name = format!("{root}/data.pkl");
    let pkl = entry_range(&mut archive, &pkl_name, bytes.len()).map_err(err)?;
    let value = pickle::load(&bytes[pkl]).map_err(|e| err(format!("{pkl_name}: {e}")))?;
    let (tensors, bare) = flatten(&value).map_err(|e| err(format!("{pkl_name}: {e}")))?;
    if tensors.is_empty() {
        return Err(err(format!("{pkl_name} contains no tensors")));
    }

    let mut storages: HashMap<String, Range<usize>> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in tensors {
        let st = &t.storage.storage_type;
        let dtype = st.dtype.ok_or_else(|| {
            err(format!(
                "tensor `{name}` is stored as torch.{}; only FloatStorage, HalfStorage and \
                 BFloat16Storage are supported",
                st.name
            ))
        })?;
        let key = &t.storage.key;
        let range = match storages.get(key) {
            Some(r) => r.clone(),
            None => {
                let entry = format!("{root}/data/{key}");
                let r = entry_range(&mut archive, &entry, bytes.len())
                    .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
                storages.insert(key.clone(), r.clone());
                r
            }
        };
        check_extent(&t.shape, &t.strides, t.offset, dtype, range.len()).map_err(|reason| {
            err(format!(
                "tensor `{name}` (storage {root}/data/{key}) {reason}"
            ))
        })?;
        out.insert(
            name,
            TensorEntry {
                dtype,
                shape: t.shape.clone(),
                strides: t.strides.clone(),
                offset: t.offset,
                bytes: range,
            },
        );
    }
    Ok((out, bare))
}

/// The archive's top folder, found from its `<root>/data.pkl` rather than the file name (renamed
/// checkpoints keep their original folder).
fn pickle_root(archive: &Archive<'_>) -> Result<String, String> {
    let roots: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .filter_map(|n| {
            let root = n.strip_suffix("/data.pkl")?;
            (!root.is_empty() && !root.contains('/')).then(|| root.to_string())
        })
        .collect();
    match roots.as_slice() {
        [root] => Ok(root.clone()),
        [] => Err("the zip archive has no <root>/data.pkl entry (not a torch checkpoint)".into()),
        _ => Err(format!(
            "the zip archive has several data.pkl entries (roots {roots:?})"
        )),
    }
}

/// Byte range of an entry's data inside the file, for stored (uncompressed) entries only.
fn entry_range(
    archive: &mut Archive<'_>,
    name: &str,
    file_len: usize,
) -> Result<Range<usize>, String> {
    let index = archive
        .index_for_name(name)
        .ok_or_else(|| format!("the zip archive has no entry {name}"))?;
    let file = archive
        .by_index_raw(index)
        .map_err(|e| format!("zip entry {name}: {e}"))?;
    if file.encrypted() {
        return Err(format!("zip entry {name} is encrypted"));
    }
    if file.compression() != CompressionMethod::Stored {
        return Err(format!(
            "zip entry {name} is compressed ({}); torch writes stored entries, re-save the file \
             with torch.save",
            file.compression()
        ));
    }
    let len = file.compressed_size();
    if len != file.size() {
        return Err(format!("zip entry {name} has inconsistent sizes"));
    }
    let start = file
        .data_start()
        .ok_or_else(|| format!("zip entry {name}: data offset unknown"))?;
    let end = start
        .checked_add(len)
        .filter(|&end| end <= file_len as u64)
        .ok_or_else(|| format!("zip entry {name} extends past the end of the file (truncated?)"))?;
    // Both fit in usize: they are bounded by the length of a mapped file.
    Ok(start as usize..end as usize)
}

/// Flattens nested dicts into '.'-joined names; a bare tensor becomes the single name "".
/// Non-tensor leaves (epoch counters, configs) are skipped; a repeated name keeps the last value,
/// like Python's dict assignment.
fn flatten(root: &Value) -> Result<(Named, bool), String> {
    match root {
        Value::Tensor(t) => Ok((vec![(String::new(), t.clone())], true)),
        Value::Dict(d) => {
            let mut out = Vec::new();
            let mut budget = MAX_DICT_VISITS;
            walk(d, "", &mut out, &mut budget)?;
            Ok((out, false))
        }
        other => Err(format!(
            "the pickled object is a {}, expected a state dict or a tensor",
            other.kind()
        )),
    }
}

fn walk(
    dict: &Container<(Value, Value)>,
    prefix: &str,
    out: &mut Named,
    budget: &mut usize,
) -> Result<(), String> {
    for (k, v) in dict.items.borrow().iter() {
        *budget = budget
            .checked_sub(1)
            .ok_or("the pickled dicts have too many entries")?;
        let key = match k {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            _ => continue,
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            Value::Tensor(t) => out.push((name, t.clone())),
            Value::Dict(d) => walk(d, &name, out, budget)?,
            _ => {}
        }
    }
    Ok(())
}
