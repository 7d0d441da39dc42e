//! Safetensors index: the `safetensors` crate validates the header (JSON, offsets contiguous and
//! exactly covering the data section); this adds the dtype allowlist and readable errors.

use std::collections::BTreeMap;
use std::path::Path;

use flashvsr_tensor::DType;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::{check_extent, contiguous_strides, format_error, TensorEntry, WeightError};

const LEN_FIELD: usize = 8;

pub(super) fn index(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, TensorEntry>, WeightError> {
    let (header_len, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_error(path, explain(&e, bytes)))?;
    // read_metadata proved that 8 + header_len + data section == file length.
    let data_start = LEN_FIELD + header_len;
    let mut tensors = BTreeMap::new();
    for (name, info) in metadata.tensors() {
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(format_error(
                    path,
                    format!(
                        "tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 are supported"
                    ),
                ))
            }
        };
        let (begin, end) = info.data_offsets;
        let range = data_start
            .checked_add(begin)
            .zip(data_start.checked_add(end))
            .filter(|&(b, e)| b <= e && e <= bytes.len())
            .map(|(b, e)| b..e)
            .ok_or_else(|| format_error(path, format!("tensor `{name}` lies outside the file")))?;
        let strides = contiguous_strides(&info.shape);
        check_extent(&info.shape, &strides, 0, dtype, range.len())
            .map_err(|reason| format_error(path, format!("tensor `{name}` {reason}")))?;
        tensors.insert(
            name,
            TensorEntry {
                dtype,
                shape: info.shape.clone(),
                strides,
                offset: 0,
                bytes: range,
            },
        );
    }
    Ok(tensors)
}

fn explain(err: &SafeTensorError, bytes: &[u8]) -> String {
    let declared = bytes
        .get(..LEN_FIELD)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; LEN_FIELD])));
    let file_len = bytes.len();
    match (err, declared) {
        (SafeTensorError::HeaderTooSmall, _) => format!(
            "the file has {file_len} bytes, too short for a safetensors header (not a safetensors, \
             zip or torch file?)"
        ),
        (SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength, Some(n)) => {
            format!(
                "safetensors header length field says {n} bytes but the file has {file_len} bytes \
                 (truncated, or not a safetensors file)"
            )
        }
        (SafeTensorError::MetadataIncompleteBuffer, Some(n)) => {
            let have = (file_len as u64).saturating_sub(LEN_FIELD as u64 + n);
            match declared_data_len(bytes, n) {
                Some(want) if want > have => format!(
                    "the safetensors header describes {want} bytes of tensor data but the file \
                     holds only {have} after the header (truncated?)"
                ),
                Some(want) => format!(
                    "the safetensors header describes {want} bytes of tensor data but the file \
                     holds {have} after the header (trailing bytes?)"
                ),
                None => format!("bad safetensors header: {err}"),
            }
        }
        _ => format!("bad safetensors header: {err}"),
    }
}

/// End of the data section according to the header (largest end offset), for error messages.
fn declared_data_len(bytes: &[u8], header_len: u64) -> Option<u64> {
    let header = bytes.get(LEN_FIELD..LEN_FIELD.checked_add(usize::try_from(header_len).ok()?)?)?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    map.values()
        .filter_map(|info| info.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .or(Some(0))
}
