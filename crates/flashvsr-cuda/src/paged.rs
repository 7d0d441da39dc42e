//! Large device blocks over the CUDA virtual memory API, made of fixed-size physical pages that
//! move freely between blocks, so that the memory held is the blocks alive plus what is cached,
//! never holes between them (the driver's stream-ordered pool kept ~2 GiB more than it handed out
//! at config A: a freed 264 MiB map between live tensors fits only requests that size or smaller).
//!
//! A block is a reserved virtual range with one physical page mapped at each of its pages. A freed
//! block keeps its mapping in a cache, and the next request of the same page count takes it back
//! without any driver call (the pipeline repeats its sizes chunk after chunk). A request the cache
//! cannot serve takes free pages, then the pages of the least recently freed cached blocks, and
//! only then creates pages. Everything runs on one stream, so a page may back a new block as soon
//! as its old block is freed: the new block's kernels are enqueued after the old one's. The old
//! virtual range keeps mapping the page until a fence recorded when its pages were taken has
//! passed; it is unmapped then, at a later slow-path request, and its range reused.
//!
//! The bookkeeping ([`PagedBook`]) is generic over the driver calls ([`PageDriver`]) so that it is
//! tested without a GPU; [`VmmDriver`] makes the calls.

use std::collections::{BTreeMap, HashMap};

use cudarc::driver::sys;

use crate::error::{CudaError, CudaResult};

/// The driver calls the book needs.
pub(crate) trait PageDriver {
    /// A physical page.
    type Page: Copy;
    /// A point in the stream's order.
    type Fence;

    fn page_bytes(&self) -> u64;
    fn create_page(&mut self) -> CudaResult<Self::Page>;
    fn release_page(&mut self, page: Self::Page) -> CudaResult<()>;
    /// A new virtual range of `bytes`.
    fn reserve(&mut self, bytes: u64) -> CudaResult<u64>;
    fn free_range(&mut self, va: u64, bytes: u64) -> CudaResult<()>;
    /// Maps `pages[i]` at `va + i * page_bytes` and makes the range readable and writable.
    fn map(&mut self, va: u64, pages: &[Self::Page]) -> CudaResult<()>;
    /// Unmaps the `pages` pages mapped at `va`.
    fn unmap(&mut self, va: u64, pages: usize) -> CudaResult<()>;
    /// A fence after all work enqueued so far.
    fn fence(&mut self) -> CudaResult<Self::Fence>;
    /// Whether the device has passed `fence` (`wait`: block until it has).
    fn passed(&mut self, fence: &Self::Fence, wait: bool) -> CudaResult<bool>;
}

struct Block<P> {
    va: u64,
    pages: Vec<P>,
}

/// A virtual range whose pages went to other blocks, still mapped until its fence passes.
struct Stale<F> {
    va: u64,
    pages: usize,
    fence: std::rc::Rc<F>,
}

/// Counters for the op profile's memory line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PagedStats {
    /// Pages created (held) now and at most.
    pub pages: usize,
    pub pages_high: usize,
    /// Pages of live blocks now and at most.
    pub live_pages: usize,
    pub live_pages_high: usize,
    /// Requests served from the cache, and those that mapped pages.
    pub cache_hits: u64,
    pub mapped: u64,
    /// Cached blocks whose pages were taken by another size.
    pub taken: u64,
}

pub(crate) struct PagedBook<D: PageDriver> {
    driver: D,
    free_pages: Vec<D::Page>,
    live: HashMap<u64, Block<D::Page>>,
    /// Freed blocks, still mapped, by the order they were freed (oldest first).
    cached: BTreeMap<u64, Block<D::Page>>,
    /// Keys of `cached` by page count.
    cached_by_pages: HashMap<usize, Vec<u64>>,
    stale: Vec<Stale<D::Fence>>,
    /// Unmapped reserved ranges, by page count.
    spare_ranges: HashMap<usize, Vec<u64>>,
    /// Pages may not be created beyond this many.
    max_pages: usize,
    next_key: u64,
    stats: PagedStats,
}

impl<D: PageDriver> PagedBook<D> {
    pub fn new(driver: D, max_pages: usize) -> Self {
        PagedBook {
            driver,
            free_pages: Vec::new(),
            live: HashMap::new(),
            cached: BTreeMap::new(),
            cached_by_pages: HashMap::new(),
            stale: Vec::new(),
            spare_ranges: HashMap::new(),
            max_pages,
            next_key: 0,
            stats: PagedStats::default(),
        }
    }

    pub fn page_bytes(&self) -> u64 {
        self.driver.page_bytes()
    }

    pub fn pages_for(&self, bytes: u64) -> usize {
        bytes.max(1).div_ceil(self.page_bytes()) as usize
    }

    pub fn stats(&self) -> PagedStats {
        self.stats
    }

    /// A block of at least `bytes`, its device address.
    pub fn alloc(&mut self, bytes: u64) -> CudaResult<u64> {
        let n = self.pages_for(bytes);
        if let Some(key) = self.cached_by_pages.get_mut(&n).and_then(|keys| keys.pop()) {
            let block = self.cached.remove(&key).expect("indexed cached block");
            let va = block.va;
            self.live.insert(va, block);
            self.stats.cache_hits += 1;
            self.note_live(n);
            return Ok(va);
        }
        self.unmap_passed_stale(false)?;
        self.gather_pages(n)?;
        let va = match self.spare_ranges.get_mut(&n).and_then(|r| r.pop()) {
            Some(va) => va,
            None => self.driver.reserve(n as u64 * self.page_bytes())?,
        };
        let pages = self.free_pages.split_off(self.free_pages.len() - n);
        if let Err(e) = self.driver.map(va, &pages) {
            self.free_pages.extend(pages);
            self.spare_ranges.entry(n).or_default().push(va);
            return Err(e);
        }
        self.live.insert(va, Block { va, pages });
        self.stats.mapped += 1;
        self.note_live(n);
        Ok(va)
    }

    /// Gives back the block at `va`; its memory is reused by requests enqueued after this call.
    pub fn free(&mut self, va: u64) {
        let Some(block) = self.live.remove(&va) else {
            debug_assert!(false, "freeing an unknown block {va:#x}");
            return;
        };
        let n = block.pages.len();
        self.stats.live_pages -= n;
        let key = self.next_key;
        self.next_key += 1;
        self.cached.insert(key, block);
        self.cached_by_pages.entry(n).or_default().push(key);
    }

    /// Hands every cached and free page back to the driver (waits for the device).
    pub fn trim(&mut self) -> CudaResult<()> {
        let keys: Vec<u64> = self.cached.keys().copied().collect();
        if !keys.is_empty() {
            let fence = std::rc::Rc::new(self.driver.fence()?);
            for key in keys {
                self.take_cached(key, &fence);
            }
        }
        self.unmap_passed_stale(true)?;
        for page in std::mem::take(&mut self.free_pages) {
            self.driver.release_page(page)?;
            self.stats.pages -= 1;
        }
        for (n, ranges) in std::mem::take(&mut self.spare_ranges) {
            for va in ranges {
                self.driver.free_range(va, n as u64 * self.page_bytes())?;
            }
        }
        Ok(())
    }

    fn note_live(&mut self, n: usize) {
        self.stats.live_pages += n;
        self.stats.live_pages_high = self.stats.live_pages_high.max(self.stats.live_pages);
    }

    /// At least `n` pages in `free_pages`: the free ones, then those of the least recently freed
    /// cached blocks, then new ones.
    fn gather_pages(&mut self, n: usize) -> CudaResult<()> {
        let mut fence = None;
        while self.free_pages.len() < n {
            let Some(&key) = self.cached.keys().next() else {
                break;
            };
            let fence = match &fence {
                Some(f) => std::rc::Rc::clone(f),
                None => fence.insert(std::rc::Rc::new(self.driver.fence()?)).clone(),
            };
            self.take_cached(key, &fence);
        }
        while self.free_pages.len() < n {
            if self.stats.pages >= self.max_pages {
                // The driver's own out-of-memory error, so that callers treat both alike.
                return Err(CudaError::Driver(cudarc::driver::DriverError(
                    sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY,
                )));
            }
            let page = self.driver.create_page()?;
            self.free_pages.push(page);
            self.stats.pages += 1;
            self.stats.pages_high = self.stats.pages_high.max(self.stats.pages);
        }
        Ok(())
    }

    /// Moves a cached block's pages to the free list; its range stays mapped until `fence`.
    fn take_cached(&mut self, key: u64, fence: &std::rc::Rc<D::Fence>) {
        let block = self.cached.remove(&key).expect("cached block");
        let n = block.pages.len();
        if let Some(keys) = self.cached_by_pages.get_mut(&n) {
            // Keys are pushed in freeing order and the oldest is taken first: it is at the front.
            if let Some(i) = keys.iter().position(|&k| k == key) {
                keys.remove(i);
            }
        }
        self.stale.push(Stale {
            va: block.va,
            pages: n,
            fence: std::rc::Rc::clone(fence),
        });
        self.free_pages.extend(block.pages);
        self.stats.taken += 1;
    }

    /// Unmaps the stale ranges whose fence passed (`wait`: all of them) and keeps the ranges.
    fn unmap_passed_stale(&mut self, wait: bool) -> CudaResult<()> {
        let mut i = 0;
        while i < self.stale.len() {
            if self.driver.passed(&self.stale[i].fence, wait)? {
                let s = self.stale.swap_remove(i);
                self.driver.unmap(s.va, s.pages)?;
                self.spare_ranges.entry(s.pages).or_default().push(s.va);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Unmaps and releases everything (waits for the device). Live blocks must be gone.
    fn release_all(&mut self) -> CudaResult<()> {
        for (_, block) in std::mem::take(&mut self.live) {
            // Still referenced somewhere: leave it mapped rather than fault.
            std::mem::forget(block);
        }
        self.trim()
    }
}

impl<D: PageDriver> Drop for PagedBook<D> {
    fn drop(&mut self) {
        let _ = self.release_all();
    }
}

/// The CUDA driver's virtual memory calls on one device, ordered by one stream.
pub(crate) struct VmmDriver {
    ctx: std::sync::Arc<cudarc::driver::CudaContext>,
    stream: sys::CUstream,
    prop: sys::CUmemAllocationProp,
    access: sys::CUmemAccessDesc,
    page_bytes: u64,
}

impl VmmDriver {
    pub fn new(stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> CudaResult<VmmDriver> {
        let ctx = stream.context().clone();
        ctx.bind_to_thread()?;
        let mut device = 0;
        unsafe {
            sys::cuCtxGetDevice(&mut device).result()?;
            let mut prop: sys::CUmemAllocationProp = std::mem::zeroed();
            prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
            prop.requestedHandleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
            prop.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
            prop.location.id = device;
            let mut granularity = 0usize;
            sys::cuMemGetAllocationGranularity(
                &mut granularity,
                &prop,
                sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_RECOMMENDED,
            )
            .result()?;
            let mut access: sys::CUmemAccessDesc = std::mem::zeroed();
            access.location = prop.location;
            access.flags = sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
            Ok(VmmDriver {
                ctx,
                stream: stream.cu_stream(),
                prop,
                access,
                page_bytes: (granularity as u64).max(PAGE_BYTES).next_multiple_of(PAGE_BYTES),
            })
        }
    }
}

/// 2 MiB: the granularity of device memory mappings.
pub(crate) const PAGE_BYTES: u64 = 2 << 20;

// SAFETY: driver handles; the calls are made under the book's mutex with the context bound.
unsafe impl Send for VmmDriver {}

pub(crate) struct Event(sys::CUevent);

impl Drop for Event {
    fn drop(&mut self) {
        unsafe {
            let _ = sys::cuEventDestroy_v2(self.0);
        }
    }
}

impl PageDriver for VmmDriver {
    type Page = sys::CUmemGenericAllocationHandle;
    type Fence = Event;

    fn page_bytes(&self) -> u64 {
        self.page_bytes
    }

    fn create_page(&mut self) -> CudaResult<Self::Page> {
        self.ctx.bind_to_thread()?;
        let mut handle = 0;
        unsafe { sys::cuMemCreate(&mut handle, self.page_bytes as usize, &self.prop, 0) }
            .result()?;
        Ok(handle)
    }

    fn release_page(&mut self, page: Self::Page) -> CudaResult<()> {
        unsafe { sys::cuMemRelease(page) }.result()?;
        Ok(())
    }

    fn reserve(&mut self, bytes: u64) -> CudaResult<u64> {
        self.ctx.bind_to_thread()?;
        let mut va = 0;
        unsafe { sys::cuMemAddressReserve(&mut va, bytes as usize, 0, 0, 0) }.result()?;
        Ok(va)
    }

    fn free_range(&mut self, va: u64, bytes: u64) -> CudaResult<()> {
        unsafe { sys::cuMemAddressFree(va, bytes as usize) }.result()?;
        Ok(())
    }

    fn map(&mut self, va: u64, pages: &[Self::Page]) -> CudaResult<()> {
        self.ctx.bind_to_thread()?;
        let pb = self.page_bytes;
        for (i, &page) in pages.iter().enumerate() {
            let at = va + i as u64 * pb;
            if let Err(e) = unsafe { sys::cuMemMap(at, pb as usize, 0, page, 0) }.result() {
                let _ = self.unmap(va, i);
                return Err(e.into());
            }
        }
        let bytes = pages.len() * pb as usize;
        if let Err(e) = unsafe { sys::cuMemSetAccess(va, bytes, &self.access, 1) }.result() {
            let _ = self.unmap(va, pages.len());
            return Err(e.into());
        }
        Ok(())
    }

    fn unmap(&mut self, va: u64, pages: usize) -> CudaResult<()> {
        let pb = self.page_bytes;
        for i in 0..pages as u64 {
            unsafe { sys::cuMemUnmap(va + i * pb, pb as usize) }.result()?;
        }
        Ok(())
    }

    fn fence(&mut self) -> CudaResult<Event> {
        self.ctx.bind_to_thread()?;
        let mut event = std::ptr::null_mut();
        unsafe {
            sys::cuEventCreate(
                &mut event,
                sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32,
            )
            .result()?;
            let event = Event(event);
            sys::cuEventRecord(event.0, self.stream).result()?;
            Ok(event)
        }
    }

    fn passed(&mut self, fence: &Event, wait: bool) -> CudaResult<bool> {
        unsafe {
            if wait {
                sys::cuEventSynchronize(fence.0).result()?;
                return Ok(true);
            }
            match sys::cuEventQuery(fence.0) {
                sys::CUresult::CUDA_SUCCESS => Ok(true),
                sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
                e => {
                    e.result()?;
                    Ok(true)
                }
            }
        }
    }
}

/// The book behind a mutex, shared by the backend and the blocks it handed out.
pub(crate) struct PagedAllocator {
    book: std::sync::Mutex<PagedBook<VmmDriver>>,
    /// Requests of at least this many bytes come from here; smaller ones from the driver's pool.
    pub min_bytes: usize,
}

// SAFETY: the book (and its `Rc` fences) is only touched under the mutex.
unsafe impl Sync for PagedAllocator {}
unsafe impl Send for PagedAllocator {}

impl PagedAllocator {
    pub fn new(
        stream: &std::sync::Arc<cudarc::driver::CudaStream>,
        min_bytes: usize,
        max_bytes: u64,
    ) -> CudaResult<PagedAllocator> {
        let driver = VmmDriver::new(stream)?;
        let max_pages = (max_bytes / driver.page_bytes()) as usize;
        Ok(PagedAllocator {
            book: std::sync::Mutex::new(PagedBook::new(driver, max_pages)),
            min_bytes,
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, PagedBook<VmmDriver>> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn alloc(&self, bytes: u64) -> CudaResult<u64> {
        self.book().alloc(bytes)
    }

    pub fn free(&self, va: u64) {
        self.book().free(va)
    }

    pub fn trim(&self) -> CudaResult<()> {
        self.book().trim()
    }

    pub fn stats(&self) -> PagedStats {
        self.book().stats()
    }

    pub fn page_bytes(&self) -> u64 {
        self.book().page_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashSet;
    use std::rc::Rc;

    const PB: u64 = 1 << 20;

    /// Records mappings: which page each mapped virtual page shows, and fences that pass when
    /// told to.
    #[derive(Default)]
    struct FakeDriver {
        next_page: u32,
        next_va: u64,
        released: Vec<u32>,
        mapped: HashMap<u64, u32>,
        map_calls: usize,
        fences_passed: Rc<Cell<u64>>,
        fences_made: u64,
    }

    impl PageDriver for FakeDriver {
        type Page = u32;
        type Fence = u64;
        fn page_bytes(&self) -> u64 {
            PB
        }
        fn create_page(&mut self) -> CudaResult<u32> {
            self.next_page += 1;
            Ok(self.next_page)
        }
        fn release_page(&mut self, page: u32) -> CudaResult<()> {
            self.released.push(page);
            Ok(())
        }
        fn reserve(&mut self, bytes: u64) -> CudaResult<u64> {
            self.next_va += 1 << 40;
            let va = self.next_va;
            self.next_va += bytes;
            Ok(va)
        }
        fn free_range(&mut self, _va: u64, _bytes: u64) -> CudaResult<()> {
            Ok(())
        }
        fn map(&mut self, va: u64, pages: &[u32]) -> CudaResult<()> {
            self.map_calls += 1;
            for (i, &p) in pages.iter().enumerate() {
                let at = va + i as u64 * PB;
                assert!(self.mapped.insert(at, p).is_none(), "{at:#x} mapped twice");
            }
            Ok(())
        }
        fn unmap(&mut self, va: u64, pages: usize) -> CudaResult<()> {
            for i in 0..pages as u64 {
                assert!(self.mapped.remove(&(va + i * PB)).is_some());
            }
            Ok(())
        }
        fn fence(&mut self) -> CudaResult<u64> {
            self.fences_made += 1;
            Ok(self.fences_made)
        }
        fn passed(&mut self, fence: &u64, wait: bool) -> CudaResult<bool> {
            if wait {
                self.fences_passed.set(self.fences_passed.get().max(*fence));
            }
            Ok(*fence <= self.fences_passed.get())
        }
    }

    fn book(max_pages: usize) -> PagedBook<FakeDriver> {
        PagedBook::new(FakeDriver::default(), max_pages)
    }

    /// The physical pages behind the live block at `va`.
    fn pages_of(b: &PagedBook<FakeDriver>, va: u64) -> Vec<u32> {
        b.live[&va].pages.clone()
    }

    #[test]
    fn sizes_round_up_to_whole_pages() {
        let mut b = book(100);
        let va = b.alloc(PB + 1).unwrap();
        assert_eq!(pages_of(&b, va).len(), 2);
        assert_eq!(b.stats().live_pages, 2);
        assert_eq!(b.driver.mapped.len(), 2);
        assert_eq!(b.pages_for(0), 1);
    }

    #[test]
    fn a_freed_block_serves_the_next_request_of_its_size_without_driver_calls() {
        let mut b = book(100);
        let va = b.alloc(3 * PB).unwrap();
        b.free(va);
        assert_eq!(b.alloc(3 * PB).unwrap(), va);
        assert_eq!(b.driver.map_calls, 1);
        assert_eq!(b.stats().cache_hits, 1);
        assert_eq!(b.stats().pages, 3);
    }

    #[test]
    fn another_size_takes_the_cached_pages_instead_of_creating_pages() {
        let mut b = book(100);
        let small = b.alloc(2 * PB).unwrap();
        let medium = b.alloc(3 * PB).unwrap();
        b.free(small);
        b.free(medium);
        // Five pages are cached in blocks of 2 and 3; a block of 4 takes both blocks' pages.
        let big = b.alloc(4 * PB).unwrap();
        assert_eq!(b.stats().pages, 5, "no page created");
        assert_eq!(b.stats().taken, 2);
        assert_eq!(b.free_pages.len(), 1);
        let pages: HashSet<u32> = pages_of(&b, big).into_iter().collect();
        assert_eq!(pages.len(), 4);
        // The old ranges still map their pages until the fence passes.
        assert_eq!(b.stale.len(), 2);
        assert_eq!(b.driver.mapped.len(), 5 + 4);
        assert!(b.cached.is_empty() && b.cached_by_pages.values().all(|k| k.is_empty()));
    }

    #[test]
    fn the_least_recently_freed_block_is_taken_first() {
        let mut b = book(100);
        let first = b.alloc(2 * PB).unwrap();
        let second = b.alloc(2 * PB).unwrap();
        b.free(first);
        b.free(second);
        let other = b.alloc(PB).unwrap();
        assert_eq!(b.stats().taken, 1);
        // `second` is still cached and comes back for a 2-page request.
        assert_eq!(b.alloc(2 * PB).unwrap(), second);
        assert_ne!(other, first);
    }

    #[test]
    fn stale_ranges_are_unmapped_once_their_fence_passed_and_reused() {
        let mut b = book(100);
        let a = b.alloc(2 * PB).unwrap();
        b.free(a);
        let c = b.alloc(PB).unwrap();
        assert_eq!(b.stale.len(), 1);
        // The fence has not passed: a slow-path request leaves the stale range mapped.
        b.free(c);
        let _d = b.alloc(3 * PB).unwrap();
        assert_eq!(b.stale.len(), 2);
        b.driver.fences_passed.set(u64::MAX);
        let e = b.alloc(5 * PB).unwrap();
        assert!(b.stale.len() <= 1);
        assert!(b.driver.mapped.contains_key(&e));
        // A 2-page request reuses the unmapped range of `a`.
        let f = b.alloc(2 * PB).unwrap();
        assert_eq!(f, a);
    }

    #[test]
    fn live_blocks_never_share_a_page() {
        let mut b = book(1000);
        let mut live: Vec<u64> = Vec::new();
        // A deterministic mix of sizes, frees and allocations.
        let mut state = 12345u64;
        for step in 0..2000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pages = 1 + (state >> 33) % 9;
            if live.len() > 12 || (step % 3 == 2 && !live.is_empty()) {
                let i = (state >> 20) as usize % live.len();
                b.free(live.swap_remove(i));
            } else {
                live.push(b.alloc(pages * PB).unwrap());
            }
            if step % 97 == 0 {
                b.driver.fences_passed.set(b.driver.fences_made);
            }
            let mut seen = HashSet::new();
            let mut live_pages = 0;
            for va in &live {
                for p in pages_of(&b, *va) {
                    assert!(seen.insert(p), "page {p} in two live blocks");
                    live_pages += 1;
                }
            }
            assert_eq!(b.stats().live_pages, live_pages);
            // Every page held is in exactly one of: a live block, a cached block, the free list.
            let cached: usize = b.cached.values().map(|c| c.pages.len()).sum();
            assert_eq!(live_pages + cached + b.free_pages.len(), b.stats().pages);
        }
        // Pages are created only when the cache and free list cannot serve: never above the
        // live high water plus one request.
        assert!(b.stats().pages_high <= b.stats().live_pages_high + 9);
    }

    #[test]
    fn the_page_limit_is_an_out_of_memory_error() {
        let mut b = book(4);
        let a = b.alloc(3 * PB).unwrap();
        assert!(b.alloc(2 * PB).unwrap_err().is_out_of_memory());
        // The failed request created one page and keeps it free for later.
        assert_eq!(b.stats().pages, 4);
        b.free(a);
        assert!(b.alloc(4 * PB).is_ok());
    }

    #[test]
    fn trim_releases_cached_and_free_pages_and_keeps_live_ones() {
        let mut b = book(100);
        let keep = b.alloc(2 * PB).unwrap();
        let gone = b.alloc(3 * PB).unwrap();
        b.free(gone);
        b.trim().unwrap();
        assert_eq!(b.stats().pages, 2);
        assert_eq!(b.driver.released.len(), 3);
        assert_eq!(b.driver.mapped.len(), 2, "only the live block stays mapped");
        assert!(b.driver.mapped.contains_key(&keep));
    }
}
