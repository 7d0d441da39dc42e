//! Converted copies of weight tensors (the bf16 KRSC filters of the cuDNN convs), so that a model's
//! weights are converted once rather than on every call. An entry is found by the identity of the
//! source buffer's allocation and the shape it was viewed with; it holds only a `Weak` to that
//! buffer, so the cache never keeps a weight alive, and an entry whose buffer is gone is never
//! matched (a live `Weak` pins the allocation's address, so no new buffer can take it) and is
//! dropped on the next miss. Tensor buffers are immutable, so a live entry is never stale.

use std::sync::{Arc, Weak};

use flashvsr_tensor::{Buffer, BufferRef};

struct Entry<V> {
    owner: Weak<dyn Buffer>,
    dims: Vec<usize>,
    bytes: usize,
    value: V,
}

pub(crate) struct WeightCache<V> {
    entries: Vec<Entry<V>>,
    bytes: usize,
    capacity: usize,
}

impl<V> WeightCache<V> {
    /// A cache holding at most `capacity` bytes of converted weights.
    pub fn new(capacity: usize) -> Self {
        WeightCache {
            entries: Vec::new(),
            bytes: 0,
            capacity,
        }
    }

    fn position(&self, owner: &BufferRef, dims: &[usize]) -> Option<usize> {
        let key = Arc::downgrade(owner);
        self.entries
            .iter()
            .position(|e| e.dims == dims && e.owner.strong_count() > 0 && e.owner.ptr_eq(&key))
    }

    pub fn get(&self, owner: &BufferRef, dims: &[usize]) -> Option<&V> {
        self.position(owner, dims).map(|i| &self.entries[i].value)
    }

    /// Keeps `value` if it fits after dropping the entries of dead buffers; otherwise hands it
    /// back (the caller uses it once).
    pub fn insert(
        &mut self,
        owner: &BufferRef,
        dims: &[usize],
        bytes: usize,
        value: V,
    ) -> Result<&V, V> {
        self.entries.retain(|e| e.owner.strong_count() > 0);
        self.bytes = self.entries.iter().map(|e| e.bytes).sum();
        if self.bytes + bytes > self.capacity {
            return Err(value);
        }
        self.bytes += bytes;
        self.entries.push(Entry {
            owner: Arc::downgrade(owner),
            dims: dims.to_vec(),
            bytes,
            value,
        });
        Ok(&self.entries.last().expect("pushed above").value)
    }

    /// Moves the entry of `owner` viewed as `dims` to `new_owner` (a stand-in that outlives
    /// `owner`); whether there was one.
    pub fn rekey(&mut self, owner: &BufferRef, dims: &[usize], new_owner: &BufferRef) -> bool {
        match self.position(owner, dims) {
            Some(i) => {
                self.entries[i].owner = Arc::downgrade(new_owner);
                true
            }
            None => false,
        }
    }

    /// Bytes of the converted weights held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::any::Any;

    struct Host(usize);

    impl Buffer for Host {
        fn as_any(&self) -> &dyn Any {
            self
        }
        fn len(&self) -> usize {
            self.0
        }
    }

    fn buffer() -> BufferRef {
        Arc::new(Host(4))
    }

    #[test]
    fn entries_match_the_same_buffer_and_shape_only() {
        let (a, b) = (buffer(), buffer());
        let mut cache = WeightCache::new(100);
        assert_eq!(cache.insert(&a, &[2, 2], 10, "a").ok(), Some(&"a"));
        assert_eq!(cache.get(&a, &[2, 2]), Some(&"a"));
        assert_eq!(cache.get(&a.clone(), &[2, 2]), Some(&"a"));
        assert_eq!(cache.get(&a, &[4, 1]), None, "another view of the buffer");
        assert_eq!(cache.get(&b, &[2, 2]), None, "another buffer");
    }

    #[test]
    fn dead_buffers_are_not_matched_and_are_dropped_on_insert() {
        let mut cache = WeightCache::new(100);
        let a = buffer();
        cache.insert(&a, &[4], 60, 1).ok().unwrap();
        drop(a);
        let b = buffer();
        assert_eq!(cache.get(&b, &[4]), None);
        // Only fits once the dead entry's 60 bytes are given back.
        assert_eq!(cache.insert(&b, &[4], 60, 2).ok(), Some(&2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_rekeyed_entry_follows_the_new_owner_and_outlives_the_old_one() {
        let mut cache = WeightCache::new(100);
        let (source, stand_in) = (buffer(), buffer());
        cache
            .insert(&source, &[2, 2], 10, "converted")
            .ok()
            .unwrap();
        assert!(
            !cache.rekey(&source, &[4], &stand_in),
            "no entry for that view"
        );
        assert!(cache.rekey(&source, &[2, 2], &stand_in));
        assert_eq!(cache.get(&source, &[2, 2]), None);
        drop(source);
        assert_eq!(cache.get(&stand_in, &[2, 2]), Some(&"converted"));
        // Still counted, and kept across an insert (its owner lives).
        cache.insert(&buffer(), &[1], 90, "other").ok().unwrap();
        assert_eq!(cache.get(&stand_in, &[2, 2]), Some(&"converted"));
        assert_eq!(cache.bytes(), 100);
    }

    #[test]
    fn values_over_capacity_are_handed_back() {
        let mut cache = WeightCache::new(100);
        let (a, b) = (buffer(), buffer());
        cache.insert(&a, &[4], 70, 1).ok().unwrap();
        assert_eq!(cache.insert(&b, &[4], 40, 2).err(), Some(2));
        assert_eq!(cache.get(&b, &[4]), None);
        assert_eq!(cache.get(&a, &[4]), Some(&1));
    }
}
