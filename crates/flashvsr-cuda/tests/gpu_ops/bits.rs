//! Bit-for-bit comparison of stored values (the fused ops against the ops they stand for).

use flashvsr_tensor::HostData;

/// The storage and bit patterns of stored values: NaN (an unwritten, poisoned element) and
/// signed zeros compare as bits.
pub(super) fn stored_bits(d: &HostData) -> (&'static str, Vec<u32>) {
    match d {
        HostData::F32(v) => ("f32", v.iter().map(|x| x.to_bits()).collect()),
        HostData::Bf16(v) => ("bf16", v.iter().map(|&x| x as u32).collect()),
    }
}

/// Where `got` differs from `want` in storage or bits; None when identical.
pub(super) fn difference(got: &HostData, want: &HostData) -> Option<String> {
    let ((gs, g), (ws, w)) = (stored_bits(got), stored_bits(want));
    if gs != ws {
        return Some(format!("stored as {gs}, the composed ops store {ws}"));
    }
    if g.len() != w.len() {
        return Some(format!("{} values, want {}", g.len(), w.len()));
    }
    let differing = g.iter().zip(&w).filter(|(a, b)| a != b).count();
    (differing > 0).then(|| {
        let first = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
        format!(
            "{differing} of {} values differ (first at {first}: {:#x} vs {:#x})",
            g.len(),
            g[first],
            w[first]
        )
    })
}
