//! Tensor memory accounting shared by the backends: bytes in use, the peak since the last reset,
//! and an optional limit (`--max-vram` on the CPU backend).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct MemoryMeter {
    in_use: AtomicU64,
    peak: AtomicU64,
    limit: Option<u64>,
}

impl MemoryMeter {
    pub fn with_limit(limit: Option<u64>) -> MemoryMeter {
        MemoryMeter {
            limit,
            ..MemoryMeter::default()
        }
    }

    /// Counts `bytes` more; under a limit, refuses (counting nothing) what would exceed it and
    /// returns the bytes in use before.
    pub fn try_add(&self, bytes: u64) -> Result<(), u64> {
        let before = self.in_use.fetch_add(bytes, Ordering::Relaxed);
        if self.limit.is_some_and(|l| before + bytes > l) {
            self.in_use.fetch_sub(bytes, Ordering::Relaxed);
            return Err(before);
        }
        self.peak.fetch_max(before + bytes, Ordering::Relaxed);
        Ok(())
    }

    pub fn release(&self, bytes: u64) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The most in use at once since creation or the last [`MemoryMeter::reset_peak`].
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn reset_peak(&self) {
        self.peak.store(self.in_use(), Ordering::Relaxed);
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryMeter;

    #[test]
    fn counts_peaks_and_refuses_over_the_limit() {
        let m = MemoryMeter::with_limit(Some(100));
        assert_eq!(m.try_add(60), Ok(()));
        assert_eq!(m.try_add(50), Err(60));
        assert_eq!(m.in_use(), 60);
        m.release(40);
        assert_eq!(m.try_add(30), Ok(()));
        assert_eq!((m.in_use(), m.peak()), (50, 60));
        m.reset_peak();
        assert_eq!(m.peak(), 50);
    }
}
