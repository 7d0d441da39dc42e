//! Large device blocks over the CUDA virtual memory API, made of fixed-size physical pages that
//! move between blocks, so that the memory held stays close to the blocks alive (the driver's
//! stream-ordered pool kept ~2 GiB more than it handed out at config A: a freed 264 MiB map
//! between live tensors serves only requests that fit in it).
//!
//! A block is a span of pages of a segment: a reserved virtual range with a physical page mapped at
//! each page. A freed block stays mapped, cached, and merges with cached neighbours of its segment;
//! a request takes the smallest cached span that holds it (the rest stays cached), without any
//! driver call — the pipeline repeats its sizes chunk after chunk. A request no cached span holds
//! maps pages into a new segment: free pages, new pages while the pages held stay within the live
//! high water plus a slack, else the pages of the least recently freed cached spans. Everything
//! runs on one stream, so a page may back a new block as soon as its old block is freed: the new
//! block's kernels are enqueued after the old one's. The old span keeps mapping the page until a
//! fence recorded when its pages were taken has passed; it is unmapped then, at a later request
//! that maps, and a segment with nothing mapped gives its range back.
//!
//! The bookkeeping ([`PagedBook`]) is generic over the driver calls ([`PageDriver`]) so that it is
//! tested without a GPU; [`VmmDriver`] makes the calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

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

/// A reserved virtual range; `pages[i]` is the physical page mapped at its page `i`, None once
/// that page went to another block (its mapping here is then stale until unmapped).
struct Segment<P> {
    va: u64,
    pages: Vec<Option<P>>,
    /// Pages mapped here, stale ones included; the range is freed when none is left.
    mapped: usize,
}

/// Pages `start..start + pages` of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    seg: u64,
    start: usize,
    pages: usize,
}

/// Pages of a segment that went to other blocks, still mapped there until `fence` passes.
struct Stale<F> {
    span: Span,
    fence: Rc<F>,
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
    /// Requests served by cached blocks (whole or split), and those that mapped pages.
    pub cache_hits: u64,
    pub mapped: u64,
    /// Cached blocks whose pages were taken for a mapping.
    pub taken: u64,
    /// Time spent creating and mapping pages, in microseconds.
    pub driver_us: u64,
}

pub(crate) struct PagedBook<D: PageDriver> {
    driver: D,
    segments: HashMap<u64, Segment<D::Page>>,
    next_segment: u64,
    free_pages: Vec<D::Page>,
    live: HashMap<u64, Span>,
    /// Cached (freed, still mapped) spans by `(pages, segment, start)`: the best fit first.
    cached_by_size: BTreeSet<(usize, u64, usize)>,
    /// The same spans by `(segment, start)`, for merging neighbours: `(pages, age)`.
    cached_at: BTreeMap<(u64, usize), (usize, u64)>,
    /// The same spans by age (when freed, oldest first), for taking pages.
    cached_by_age: BTreeMap<u64, (u64, usize)>,
    stale: Vec<Stale<D::Fence>>,
    /// Pages may not be created beyond this many.
    max_pages: usize,
    /// Pages are created, rather than taken from cached blocks, while the pages held stay within
    /// the live high water plus this many.
    slack_pages: usize,
    next_age: u64,
    stats: PagedStats,
}

impl<D: PageDriver> PagedBook<D> {
    pub fn new(driver: D, max_pages: usize, slack_pages: usize) -> Self {
        PagedBook {
            driver,
            segments: HashMap::new(),
            next_segment: 0,
            free_pages: Vec::new(),
            live: HashMap::new(),
            cached_by_size: BTreeSet::new(),
            cached_at: BTreeMap::new(),
            cached_by_age: BTreeMap::new(),
            stale: Vec::new(),
            max_pages,
            slack_pages,
            next_age: 0,
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

    fn va_of(&self, span: Span) -> u64 {
        self.segments[&span.seg].va + span.start as u64 * self.page_bytes()
    }

    /// A block of at least `bytes`, its device address.
    pub fn alloc(&mut self, bytes: u64) -> CudaResult<u64> {
        let n = self.pages_for(bytes);
        // The smallest cached span that holds `n` pages; the rest of it stays cached.
        if let Some(&(m, seg, start)) = self.cached_by_size.range((n, 0, 0)..).next() {
            let age = self.remove_cached(seg, start);
            if m > n {
                self.insert_cached(seg, start + n, m - n, age);
            }
            let span = Span {
                seg,
                start,
                pages: n,
            };
            let va = self.va_of(span);
            self.live.insert(va, span);
            self.stats.cache_hits += 1;
            self.note_live(n);
            return Ok(va);
        }
        flashvsr_tensor::host_stalls::timed("paged unmap stale", || {
            self.unmap_passed_stale(false)
        })?;
        let started = std::time::Instant::now();
        flashvsr_tensor::host_stalls::timed("paged gather pages", || self.gather_pages(n))?;
        let va = self.driver.reserve(n as u64 * self.page_bytes())?;
        let pages = self.free_pages.split_off(self.free_pages.len() - n);
        let mapped =
            flashvsr_tensor::host_stalls::timed("paged map", || self.driver.map(va, &pages));
        if let Err(e) = mapped {
            self.free_pages.extend(pages);
            let _ = self.driver.free_range(va, n as u64 * self.page_bytes());
            return Err(e);
        }
        self.stats.driver_us += started.elapsed().as_micros() as u64;
        let seg = self.next_segment;
        self.next_segment += 1;
        self.segments.insert(
            seg,
            Segment {
                va,
                pages: pages.into_iter().map(Some).collect(),
                mapped: n,
            },
        );
        self.live.insert(
            va,
            Span {
                seg,
                start: 0,
                pages: n,
            },
        );
        self.stats.mapped += 1;
        self.note_live(n);
        Ok(va)
    }

    /// Gives back the block at `va`; its memory is reused by requests enqueued after this call.
    pub fn free(&mut self, va: u64) {
        let Some(span) = self.live.remove(&va) else {
            debug_assert!(false, "freeing an unknown block {va:#x}");
            return;
        };
        self.stats.live_pages -= span.pages;
        let (mut start, mut pages) = (span.start, span.pages);
        // Merge with cached neighbours in the same segment (all of them mapped).
        let before = self
            .cached_at
            .range(..(span.seg, span.start))
            .next_back()
            .map(|(&k, &(p, _))| (k, p));
        if let Some(((seg, s), p)) = before {
            if seg == span.seg && s + p == start {
                self.remove_cached(seg, s);
                start = s;
                pages += p;
            }
        }
        let after_key = (span.seg, span.start + span.pages);
        if let Some(&(p, _)) = self.cached_at.get(&after_key) {
            self.remove_cached(after_key.0, after_key.1);
            pages += p;
        }
        let age = self.next_age;
        self.next_age += 1;
        self.insert_cached(span.seg, start, pages, age);
    }

    /// Hands every cached and free page back to the driver (waits for the device).
    pub fn trim(&mut self) -> CudaResult<()> {
        if !self.cached_by_age.is_empty() {
            let fence = Rc::new(self.driver.fence()?);
            while let Some((_, &(seg, start))) = self.cached_by_age.iter().next() {
                self.take_cached(seg, start, &fence);
            }
        }
        self.unmap_passed_stale(true)?;
        for page in std::mem::take(&mut self.free_pages) {
            self.driver.release_page(page)?;
            self.stats.pages -= 1;
        }
        Ok(())
    }

    fn insert_cached(&mut self, seg: u64, start: usize, pages: usize, age: u64) {
        self.cached_by_size.insert((pages, seg, start));
        self.cached_at.insert((seg, start), (pages, age));
        self.cached_by_age.insert(age, (seg, start));
    }

    /// Removes a cached span from the indexes; its age.
    fn remove_cached(&mut self, seg: u64, start: usize) -> u64 {
        let (pages, age) = self.cached_at.remove(&(seg, start)).expect("cached span");
        self.cached_by_size.remove(&(pages, seg, start));
        self.cached_by_age.remove(&age);
        age
    }

    fn note_live(&mut self, n: usize) {
        self.stats.live_pages += n;
        self.stats.live_pages_high = self.stats.live_pages_high.max(self.stats.live_pages);
    }

    /// At least `n` pages in `free_pages`: the free ones, then new ones while the pages held stay
    /// within the live high water (this request's included) plus the slack, then those of the
    /// least recently freed cached spans, then new ones up to the limit.
    fn gather_pages(&mut self, n: usize) -> CudaResult<()> {
        let live_high = self.stats.live_pages_high.max(self.stats.live_pages + n);
        let target = (live_high + self.slack_pages).min(self.max_pages);
        let mut fence = None;
        while self.free_pages.len() < n {
            let missing = n - self.free_pages.len();
            let oldest = self.cached_by_age.values().next().copied();
            if self.stats.pages + missing <= target || oldest.is_none() {
                self.create_page()?;
            } else if let Some((seg, start)) = oldest {
                let fence = match &fence {
                    Some(f) => Rc::clone(f),
                    None => fence.insert(Rc::new(self.driver.fence()?)).clone(),
                };
                self.take_cached(seg, start, &fence);
            }
        }
        Ok(())
    }

    fn create_page(&mut self) -> CudaResult<()> {
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
        Ok(())
    }

    /// Moves a cached span's pages to the free list; they stay mapped there until `fence`.
    fn take_cached(&mut self, seg: u64, start: usize, fence: &Rc<D::Fence>) {
        let (pages, _) = self.cached_at[&(seg, start)];
        self.remove_cached(seg, start);
        let segment = self
            .segments
            .get_mut(&seg)
            .expect("segment of a cached span");
        for page in &mut segment.pages[start..start + pages] {
            self.free_pages
                .push(page.take().expect("cached pages are mapped"));
        }
        self.stale.push(Stale {
            span: Span { seg, start, pages },
            fence: Rc::clone(fence),
        });
        self.stats.taken += 1;
    }

    /// Unmaps the stale spans whose fence passed (`wait`: all of them); frees the ranges left
    /// with nothing mapped.
    fn unmap_passed_stale(&mut self, wait: bool) -> CudaResult<()> {
        let mut i = 0;
        while i < self.stale.len() {
            if !self.driver.passed(&self.stale[i].fence, wait)? {
                i += 1;
                continue;
            }
            let Stale { span, .. } = self.stale.swap_remove(i);
            let pb = self.page_bytes();
            let segment = self
                .segments
                .get_mut(&span.seg)
                .expect("segment of a stale span");
            let va = segment.va;
            self.driver.unmap(va + span.start as u64 * pb, span.pages)?;
            segment.mapped -= span.pages;
            if segment.mapped == 0 {
                let len = segment.pages.len() as u64 * pb;
                self.segments.remove(&span.seg);
                self.driver.free_range(va, len)?;
            }
        }
        Ok(())
    }
}

impl<D: PageDriver> Drop for PagedBook<D> {
    fn drop(&mut self) {
        // Blocks still live (referenced past the backend) stay mapped; the rest is released.
        let _ = self.trim();
    }
}

/// The CUDA driver's virtual memory calls on one device, ordered by one stream.
pub(crate) struct VmmDriver {
    ctx: std::sync::Arc<cudarc::driver::CudaContext>,
    /// Held so that the stream outlives the fences recorded on it (the book may be dropped
    /// after the backend).
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
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
                stream: stream.clone(),
                prop,
                access,
                page_bytes: (granularity as u64)
                    .max(PAGE_BYTES)
                    .next_multiple_of(PAGE_BYTES),
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
            sys::cuEventRecord(event.0, self.stream.cu_stream()).result()?;
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
        slack_bytes: u64,
    ) -> CudaResult<PagedAllocator> {
        let driver = VmmDriver::new(stream)?;
        let max_pages = (max_bytes / driver.page_bytes()) as usize;
        let slack_pages = slack_bytes.div_ceil(driver.page_bytes()) as usize;
        Ok(PagedAllocator {
            book: std::sync::Mutex::new(PagedBook::new(driver, max_pages, slack_pages)),
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

    const PB: u64 = 1 << 20;

    /// Records which page each mapped virtual page shows; fences pass when told to.
    #[derive(Default)]
    struct FakeDriver {
        next_page: u32,
        next_va: u64,
        released: Vec<u32>,
        ranges: HashMap<u64, u64>,
        mapped: HashMap<u64, u32>,
        map_calls: usize,
        fences_passed: Cell<u64>,
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
            assert!(
                !self.mapped.values().any(|&p| p == page),
                "released while mapped"
            );
            self.released.push(page);
            Ok(())
        }
        fn reserve(&mut self, bytes: u64) -> CudaResult<u64> {
            self.next_va += 1 << 40;
            self.ranges.insert(self.next_va, bytes);
            Ok(self.next_va)
        }
        fn free_range(&mut self, va: u64, bytes: u64) -> CudaResult<()> {
            assert_eq!(self.ranges.remove(&va), Some(bytes));
            assert!(!self.mapped.keys().any(|&a| a >= va && a < va + bytes));
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

    fn book(max_pages: usize, slack_pages: usize) -> PagedBook<FakeDriver> {
        PagedBook::new(FakeDriver::default(), max_pages, slack_pages)
    }

    /// The physical pages the device sees behind the live block at `va`.
    fn pages_seen(b: &PagedBook<FakeDriver>, va: u64) -> Vec<u32> {
        let n = b.live[&va].pages as u64;
        (0..n).map(|i| b.driver.mapped[&(va + i * PB)]).collect()
    }

    #[test]
    fn sizes_round_up_to_whole_pages() {
        let mut b = book(100, 0);
        let va = b.alloc(PB + 1).unwrap();
        assert_eq!(pages_seen(&b, va).len(), 2);
        assert_eq!(b.stats().live_pages, 2);
        assert_eq!(b.pages_for(0), 1);
    }

    #[test]
    fn a_freed_block_serves_the_next_request_of_its_size_without_driver_calls() {
        let mut b = book(100, 0);
        let va = b.alloc(3 * PB).unwrap();
        b.free(va);
        assert_eq!(b.alloc(3 * PB).unwrap(), va);
        assert_eq!(b.driver.map_calls, 1);
        assert_eq!(b.stats().cache_hits, 1);
        assert_eq!(b.stats().pages, 3);
    }

    #[test]
    fn a_larger_cached_block_is_split_and_neighbours_merge_again() {
        let mut b = book(100, 0);
        let whole = b.alloc(5 * PB).unwrap();
        b.free(whole);
        let first = b.alloc(2 * PB).unwrap();
        let second = b.alloc(3 * PB).unwrap();
        assert_eq!((first, second), (whole, whole + 2 * PB));
        assert_eq!(b.driver.map_calls, 1, "split without driver calls");
        b.free(second);
        b.free(first);
        assert_eq!(b.cached_at.len(), 1, "merged back into one span");
        assert_eq!(b.alloc(5 * PB).unwrap(), whole);
        assert_eq!(b.driver.map_calls, 1);
    }

    #[test]
    fn the_smallest_cached_block_that_fits_is_used() {
        let mut b = book(100, 100);
        let big = b.alloc(6 * PB).unwrap();
        let _gap = b.alloc(PB).unwrap();
        let small = b.alloc(3 * PB).unwrap();
        b.free(big);
        b.free(small);
        assert_eq!(b.alloc(2 * PB).unwrap(), small);
    }

    #[test]
    fn over_the_slack_pages_of_cached_blocks_are_taken_instead_of_created() {
        let mut b = book(100, 0);
        let small = b.alloc(2 * PB).unwrap();
        let medium = b.alloc(3 * PB).unwrap();
        b.free(small);
        b.free(medium);
        // Five pages cached in two segments, none of four pages: a block of 4 takes both.
        let big = b.alloc(4 * PB).unwrap();
        assert_eq!(b.stats().pages, 5, "no page created");
        assert_eq!(b.stats().taken, 2);
        assert_eq!(b.free_pages.len(), 1);
        let distinct: HashSet<u32> = pages_seen(&b, big).into_iter().collect();
        assert_eq!(distinct.len(), 4);
        // The old ranges still map their pages until the fence passes.
        assert_eq!(b.stale.len(), 2);
        assert_eq!(b.driver.mapped.len(), 5 + 4);
        assert!(b.cached_at.is_empty() && b.cached_by_size.is_empty());
        assert!(b.cached_by_age.is_empty());
    }

    #[test]
    fn within_the_slack_pages_are_created_and_cached_blocks_kept() {
        let mut b = book(100, 4);
        let small = b.alloc(2 * PB).unwrap();
        b.free(small);
        b.alloc(4 * PB).unwrap();
        assert_eq!(b.stats().taken, 0);
        assert_eq!(b.stats().pages, 6);
        assert_eq!(b.alloc(2 * PB).unwrap(), small);
    }

    #[test]
    fn the_least_recently_freed_block_is_taken_first() {
        let mut b = book(100, 0);
        let first = b.alloc(2 * PB).unwrap();
        let _live = b.alloc(PB).unwrap();
        let second = b.alloc(2 * PB).unwrap();
        b.free(first);
        b.free(second);
        // No page free, none may be created (live high water 5, no slack): `first`'s two pages
        // are taken, then `second`'s.
        let three = b.alloc(3 * PB).unwrap();
        assert_eq!(b.stats().taken, 2);
        b.free(three);
        let mut b = book(100, 2);
        let first = b.alloc(2 * PB).unwrap();
        let second = b.alloc(2 * PB).unwrap();
        let _live = b.alloc(PB).unwrap();
        b.free(first);
        b.free(second);
        // No cached span fits 3 pages; one page may be created (5 held, 7 allowed), two are
        // taken: all of `first`, freed before `second`.
        let _three = b.alloc(3 * PB).unwrap();
        assert_eq!(b.stats().taken, 1, "only `first` taken");
        assert_eq!(b.stats().pages, 6);
        assert_eq!(b.alloc(2 * PB).unwrap(), second);
    }

    #[test]
    fn stale_spans_are_unmapped_once_their_fence_passed_and_empty_ranges_freed() {
        let mut b = book(100, 0);
        let a = b.alloc(2 * PB).unwrap();
        b.free(a);
        let _c = b.alloc(3 * PB).unwrap();
        assert_eq!(b.stale.len(), 1);
        assert!(
            b.driver.ranges.contains_key(&a),
            "still mapped, still reserved"
        );
        b.driver.fences_passed.set(u64::MAX);
        let _d = b.alloc(5 * PB).unwrap();
        assert!(b.stale.is_empty());
        assert!(!b.driver.ranges.contains_key(&a));
        assert_eq!(b.segments.len(), 2);
    }

    #[test]
    fn live_blocks_never_share_a_page_and_every_page_is_accounted_for() {
        for slack in [0, 3, 20] {
            let mut b = book(1000, slack);
            let mut live: Vec<u64> = Vec::new();
            let mut state = 12345u64;
            for step in 0..3000 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pages = 1 + (state >> 33) % 9;
                if live.len() > 12 || (step % 3 == 2 && !live.is_empty()) {
                    let i = (state >> 20) as usize % live.len();
                    b.free(live.swap_remove(i));
                } else {
                    live.push(b.alloc(pages * PB - 7).unwrap());
                }
                if step % 97 == 0 {
                    b.driver.fences_passed.set(b.driver.fences_made);
                }
                let mut seen = HashSet::new();
                let mut live_pages = 0;
                for va in &live {
                    for p in pages_seen(&b, *va) {
                        assert!(seen.insert(p), "page {p} in two live blocks");
                        live_pages += 1;
                    }
                }
                assert_eq!(b.stats().live_pages, live_pages);
                // Every page held is in exactly one of: a live block, a cached span, the free
                // list.
                let cached: usize = b.cached_at.values().map(|&(p, _)| p).sum();
                assert_eq!(live_pages + cached + b.free_pages.len(), b.stats().pages);
                assert_eq!(b.cached_by_size.len(), b.cached_at.len());
                assert_eq!(b.cached_by_age.len(), b.cached_at.len());
            }
            // Pages beyond the live high water plus the slack are never created.
            assert!(b.stats().pages_high <= b.stats().live_pages_high + slack);
            b.driver.fences_passed.set(u64::MAX);
            for va in live.drain(..) {
                b.free(va);
            }
            b.trim().unwrap();
            assert_eq!(b.stats().pages, 0);
            assert!(b.driver.mapped.is_empty() && b.driver.ranges.is_empty());
        }
    }

    #[test]
    fn the_page_limit_is_an_out_of_memory_error() {
        let mut b = book(4, 10);
        let a = b.alloc(3 * PB).unwrap();
        assert!(b.alloc(2 * PB).unwrap_err().is_out_of_memory());
        // The failed request created one page and keeps it free for later.
        assert_eq!(b.stats().pages, 4);
        b.free(a);
        assert!(b.alloc(4 * PB).is_ok());
    }

    #[test]
    fn trim_releases_cached_and_free_pages_and_keeps_live_ones() {
        let mut b = book(100, 0);
        let keep = b.alloc(2 * PB).unwrap();
        let gone = b.alloc(3 * PB).unwrap();
        b.free(gone);
        b.trim().unwrap();
        assert_eq!(b.stats().pages, 2);
        assert_eq!(b.driver.released.len(), 3);
        assert_eq!(b.driver.mapped.len(), 2, "only the live block stays mapped");
        assert!(b.driver.mapped.contains_key(&keep));
        assert!(!b.driver.ranges.contains_key(&gone));
    }
}
