//! The page-level model of what the kernel reads (the `page-model` row of
//! kernel-replay): the refined `linux` lists ([`SplitLru`]) over the pages of the laid-out
//! file instead of over experts, plus the mmap readahead that an expert-level policy
//! cannot express. Under llama.cpp's advice the kernel reads readahead windows, not
//! experts (docs/kernel.md), so this model reports bytes (expert-equivalents), not
//! whole misses.
//!
//! Rules, and the kernel code each stands for (classic split LRU, order-0 accounting):
//! - **Faults** (a touch of a page that is not cached): with a window of W pages
//!   (`--advice sequential`: 2 x read_ahead_kb, `normal`: 1 x), the mmap read-around of
//!   `do_sync_mmap_readahead` reads the missing pages of `[p - W/2, p - W/2 + W)` as
//!   order-0 folios and marks (PG_readahead) the page W/4 before its end, if this read
//!   brought it in; with no window one page is read.
//! - **Marked folios**: a fault on a cached page of a marked folio starts async
//!   readahead (`page_cache_async_ra` via `do_async_mmap_readahead`): if the page is
//!   where the current window expects its mark (rounded down to the folio), the next
//!   window of `get_next_ra_size` pages after the current one; else (interleaved reads)
//!   a window from the first page missing within W after it, nothing if none is missing.
//!   Each async window raises the folio order by 2 (kernel 6.16+, `ra->order`) and its
//!   end is rounded down to that order (at most `ffs(W) - 1`); `page_cache_ra_order`
//!   reads it in aligned folios of up to that order (and within the window), the folio
//!   holding the window's first page marked, and reads the rest page by page from the
//!   first folio that would overlap a cached page. A window reaching the end of the file
//!   marks nothing.
//! - **References**: pages read ahead start unreferenced; a touched page is referenced
//!   (its PTE young). `--advice random` (VM_RAND_READ): no readahead and no
//!   references at all (`vma_has_recency`), so the lists are FIFO.
//! - **Fault-around** (`do_fault_around`, 64 KiB): a fault first maps the cached pages of
//!   the aligned 16-page block around it that are not in a marked folio, with young PTEs
//!   (x86 maps them accessed): up to 15 pages of a neighbouring expert count as used.
//! - **`--advice willneed`** reads exactly the missing pages of each routed expert's
//!   extents before the touches (`madvise(MADV_WILLNEED)`, order-0 pages), at most
//!   max(io_pages, ra_pages) pages of each (`force_page_cache_ra`: the device's
//!   max_sectors_kb, 4 MiB on the machine of docs/kernel.md, 128-1280 KiB on many NVMe
//!   drives); the faults read the rest of a longer extent with read-around.
//! - **Large folios**: a folio is one LRU entry, and `folio_referenced` counts one
//!   reference per mapping that has any of its PTEs young (`folio_referenced_one`), so
//!   `folio_check_references` sees `referenced_ptes == 1` for a folio mapped by this one
//!   process however many of its pages were touched: it looks twice, as an order-0 page.
//!   Modelled per page: a young PTE references every cached page of its folio.
//! - **Reclaim**: before a page is added to a full cache, `batch` pages are freed
//!   (memcg limit reclaim frees at least SWAP_CLUSTER_MAX = 32) as the kernel scans
//!   (`Sim::reclaim`): passes at falling priority, each scanning `size >> priority` of
//!   the inactive list and, when `may_deactivate`, of the active list. The active list
//!   is scanned whenever a refault was activated since the last reclaim (mm/workingset.c
//!   activates a refault whose distance is within the active list), not only when it
//!   outgrows `ratio` x the inactive one; the ratio is the kernel's for the budget.
//! - **Flushed statistics**: those three tests read the memcg's per-lruvec counters
//!   (`lruvec_page_state`: WORKINGSET_ACTIVATE_FILE and NR_{IN,}ACTIVE_FILE), which are
//!   the rstat-flushed sums, not the live lists. Reclaim only flushes them rate-limited
//!   (`mem_cgroup_flush_stats_ratelimited` in `prepare_scan_control` and
//!   `workingset_test_recent`, mm/memcontrol.c: only when the 2 s periodic flusher is a
//!   full cycle late), so they change when something else flushes: kernel-replay's child
//!   reads memory.stat after every token (`memory_stat_show` -> `mem_cgroup_flush_stats`).
//!   The model takes them at the start of each token ([`Flushed`]): within a token only
//!   the first reclaim sees the previous token's refault activations (`snapshot_refaults`
//!   then stores the same flushed count), `inactive_is_low` compares the token's
//!   starting list sizes, and a refault is activated if its distance is within the
//!   token's starting active list. The live list sizes still set how much each pass
//!   scans (`get_scan_count` reads the exact `lru_zone_size`), and the refault distance
//!   is live (`nonresident_age` is an atomic). Left out: the periodic flush every 2 s,
//!   which falls inside a token only when tokens are slow.
//!
//! Left out: large folios as units of eviction (a folio's pages share their references
//! here, so they leave the lists together, but a reclaim batch may split one),
//! `mmap_miss` (read-around stops after 100 more misses than hits; with experts' many
//! cached pages it stays near 0), the memcg's per-CPU charge batches.
//!
//! With the `linux` policy's eviction instead (`kernel_reclaim: false`), no window,
//! exact reads, one page per expert and a batch of 1 this is exactly the `linux` policy
//! (a test checks it).

use moe_spill_policies::linux::kernel_inactive_ratio;
use moe_spill_policies::SplitLru;

use super::layout::ExpertFileLayout;
use super::Advice;

/// Page size of the model (and of the machines it models).
pub const PAGE: u64 = 4096;

/// The kernel's default fault_around_bytes (64 KiB) in pages.
pub const FAULT_AROUND_PAGES: u32 = 16;

/// memcg limit reclaim frees at least SWAP_CLUSTER_MAX pages at a time.
pub const RECLAIM_BATCH: usize = 32;

/// How the model reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PageModelConfig {
    pub layout: ExpertFileLayout,
    /// Read-around window in pages for a fault (0: only the faulting page).
    pub window_pages: u32,
    /// Read each routed expert's missing pages before touching it (MADV_WILLNEED).
    pub willneed: bool,
    /// MADV_WILLNEED reads at most this many pages of each extent (0: all of it).
    pub willneed_max_pages: u32,
    /// Pages a fault maps around itself (`fault_around_bytes` / 4 KiB, a power of two;
    /// 0: only the faulting page).
    pub fault_around_pages: u32,
    /// Whether touches count as references (false under MADV_RANDOM).
    pub recency: bool,
    /// Readahead builds large folios: a reference to a page references its whole folio.
    /// Without, each page is its own folio.
    pub large_folios: bool,
    /// Pages evicted per reclaim.
    pub batch: usize,
    /// The active:inactive ratio (None: the kernel's for the budget's bytes).
    pub ratio: Option<u32>,
    /// Reclaim as the kernel's limit reclaim scans the lists (see `Sim::reclaim`); false:
    /// the `linux` policy's eviction, one page at a time.
    pub kernel_reclaim: bool,
}

impl PageModelConfig {
    /// What the kernel does with `advice` and a read-around window of `window_kb` (the
    /// one kernel-replay reports for its run: read_ahead_kb times 2, 1 or 0).
    pub fn for_advice(layout: ExpertFileLayout, advice: Advice, window_kb: u64) -> PageModelConfig {
        let window_pages = match advice {
            Advice::Random => 0,
            _ => (window_kb * 1024 / PAGE) as u32,
        };
        let willneed = advice == Advice::Willneed;
        PageModelConfig {
            layout,
            window_pages,
            willneed,
            willneed_max_pages: 0,
            fault_around_pages: FAULT_AROUND_PAGES,
            recency: advice != Advice::Random,
            large_folios: !willneed && window_pages > 0,
            batch: RECLAIM_BATCH,
            ratio: None,
            kernel_reclaim: true,
        }
    }

    /// MADV_WILLNEED's limit on a device whose max_sectors_kb is `max_io_kb` (0:
    /// unknown, no limit), for a file opened with `read_ahead_kb`: `force_page_cache_ra`
    /// reads at most max(io_pages, ra_pages) pages of the range, the rest is left to the
    /// faults.
    pub fn with_io_limit(mut self, max_io_kb: u64, read_ahead_kb: u64) -> PageModelConfig {
        self.willneed_max_pages = if max_io_kb == 0 {
            0
        } else {
            (max_io_kb.max(read_ahead_kb) * 1024 / PAGE) as u32
        };
        self
    }
}

/// What the model read.
#[derive(Clone, Debug, PartialEq)]
pub struct PageModelRun {
    pub expert_bytes: u64,
    /// Pages read per token.
    pub read_pages: Vec<u64>,
    /// Read requests per token: runs of consecutive pages one readahead, fault or
    /// WILLNEED call brings in.
    pub read_requests: Vec<u64>,
    /// Cached pages of every expert at the end (a page shared by two experts' slices
    /// counts for both, as mincore does in kernel-replay).
    pub resident_pages: Vec<u32>,
    pub pages_per_expert: u32,
    pub ratio: u32,
}

impl PageModelRun {
    /// The run with its first `w` tokens left out of the per-token figures.
    pub fn counted_from(&self, w: usize) -> PageModelRun {
        let w_of = |n: usize| w.min(n);
        PageModelRun {
            read_pages: self.read_pages[w_of(self.read_pages.len())..].to_vec(),
            read_requests: self.read_requests[w_of(self.read_requests.len())..].to_vec(),
            ..self.clone()
        }
    }

    pub fn total_read_bytes(&self) -> u64 {
        self.read_pages.iter().sum::<u64>() * PAGE
    }

    /// Bytes read / expert bytes.
    pub fn expert_misses(&self) -> f64 {
        self.total_read_bytes() as f64 / self.expert_bytes as f64
    }

    pub fn misses_per_token(&self) -> Vec<f64> {
        let eb = self.expert_bytes as f64;
        self.read_pages
            .iter()
            .map(|&p| (p * PAGE) as f64 / eb)
            .collect()
    }

    /// Experts' worth of cached pages at the end.
    pub fn resident_experts(&self) -> f64 {
        super::resident_experts(&self.resident_pages, self.pages_per_expert)
    }

    /// Ids with at least half of their pages cached at the end.
    pub fn resident_ids(&self) -> Vec<bool> {
        super::resident_ids(&self.resident_pages, self.pages_per_expert)
    }
}

/// The file's pages [first, end) of every extent of every id.
fn page_ranges(layout: &ExpertFileLayout) -> Vec<[(u32, u32); 3]> {
    (0..layout.n_ids)
        .map(|id| {
            let mut r = [(0, 0); 3];
            for (i, (off, len)) in layout.extents(id).enumerate() {
                r[i] = ((off / PAGE) as u32, (off + len).div_ceil(PAGE) as u32);
            }
            r
        })
        .collect()
}

/// The largest page-cache folio on x86-64 with 4 KiB pages (MAX_PAGECACHE_ORDER: a PMD).
const MAX_FOLIO_ORDER: u32 = 9;

/// `get_next_ra_size` in pages of `u32` (io_engine.rs has it for bytes' pages).
fn next_ra_size(cur: u32, max: u32) -> u32 {
    crate::io_engine::next_ra_size(cur as u64, max as u64) as u32
}

/// The memcg statistics reclaim reads, as of the last flush (see the module's
/// "Flushed statistics"): refault activations (WORKINGSET_ACTIVATE_FILE) and the
/// active and inactive file lists' sizes.
#[derive(Clone, Copy, Default)]
struct Flushed {
    refaults: u64,
    active: usize,
    inactive: usize,
}

struct Sim {
    lru: SplitLru,
    /// PG_readahead, on the first page of a folio.
    marked: Vec<bool>,
    /// A PTE maps the page (touched or mapped by fault-around since it was read).
    mapped: Vec<bool>,
    /// Pages of the fault-around block (0: none).
    fault_around: u32,
    /// References count per folio (see [`PageModelConfig::large_folios`]).
    large_folios: bool,
    /// The first page of the folio a cached page was read in (valid while cached).
    head: Vec<u32>,
    /// The order of the folio that starts at a page.
    order: Vec<u8>,
    budget: usize,
    n_pages: u32,
    window: u32,
    recency: bool,
    batch: usize,
    /// The file's readahead state (`file_ra_state`): start, size, async size, order.
    ra_start: u32,
    ra_size: u32,
    ra_async: u32,
    ra_order: u32,
    read: u64,
    /// Requests so far, and the page the current one last brought in (`NO_PAGE` when
    /// the next page starts a new one).
    requests: u64,
    last_read: u32,
    kernel_reclaim: bool,
    /// The flushed refault activations at the end of the last reclaim
    /// (`snapshot_refaults`).
    refaults_seen: u64,
    /// The memcg statistics as of the last flush (with `kernel_reclaim`).
    flushed: Flushed,
}

/// No page: the next page read starts a request.
const NO_PAGE: u32 = u32::MAX;

impl Sim {
    /// Read page `p` into the cache (unreferenced), reclaiming first when it is full.
    fn bring_in(&mut self, p: u32) {
        self.read += 1;
        if self.last_read == NO_PAGE || p != self.last_read + 1 {
            self.requests += 1;
        }
        self.last_read = p;
        if self.budget == 0 {
            return;
        }
        if self.lru.len() >= self.budget {
            let n = (self.lru.len() + 1 - self.budget)
                .max(self.batch)
                .min(self.lru.len());
            if self.kernel_reclaim {
                self.reclaim(n);
            } else {
                for _ in 0..n {
                    let v = self.lru.evict();
                    self.forget(v);
                }
            }
        }
        if self.kernel_reclaim {
            // workingset_refault -> workingset_test_recent: the distance against the
            // flushed NR_ACTIVE_FILE.
            self.lru.insert_within(p, false, self.flushed.active);
        } else {
            self.lru.insert(p, false);
        }
    }

    /// A flush of the memcg statistics (`mem_cgroup_flush_stats`, as the child's read
    /// of memory.stat after each token does).
    fn flush_stats(&mut self) {
        self.flushed = Flushed {
            refaults: self.lru.refault_activations(),
            active: self.lru.n_active(),
            inactive: self.lru.n_inactive(),
        };
    }

    /// An evicted page takes its mark and its PTE with it.
    fn forget(&mut self, v: u32) {
        self.marked[v as usize] = false;
        self.mapped[v as usize] = false;
    }

    /// Memcg limit reclaim of at least `n` pages (`try_to_free_mem_cgroup_pages`): passes
    /// at falling priority from DEF_PRIORITY (12), each scanning `size >> priority` of
    /// the inactive list and, when `may_deactivate`, of the active one, in chunks of
    /// SWAP_CLUSTER_MAX alternating between them (`shrink_lruvec`; no swap, so only the
    /// file lists, `get_scan_count`'s SCAN_FILE), until `n` are freed. The active list
    /// is scanned if refaults were activated since the last reclaim ("a new workingset
    /// is being established", `prepare_scan_control`) or the inactive list is low, both
    /// judged on the flushed statistics ([`Flushed`]); the flushed refault count is
    /// snapshot when a reclaim ends (`snapshot_refaults`). If even the last pass frees
    /// too little, it starts over, as the charge retries.
    fn reclaim(&mut self, n: usize) {
        let mut freed = 0;
        'retry: loop {
            for priority in (0..=12u32).rev() {
                // prepare_scan_control: refaults != target_lruvec->refaults[WORKINGSET_FILE]
                // || inactive_is_low(), on lruvec_page_state's flushed counters.
                let f = self.flushed;
                let may_deactivate = f.refaults != self.refaults_seen
                    || self.lru.inactive_is_low_at(f.active, f.inactive);
                let mut nr_inactive = self.lru.n_inactive() >> priority;
                let mut nr_active = if may_deactivate {
                    self.lru.n_active() >> priority
                } else {
                    0
                };
                while nr_inactive > 0 || nr_active > 0 {
                    let k = nr_inactive.min(RECLAIM_BATCH);
                    nr_inactive -= k;
                    for _ in 0..k.min(self.lru.n_inactive()) {
                        if let Some(v) = self.lru.scan_inactive_tail() {
                            self.forget(v);
                            freed += 1;
                        }
                    }
                    let k = nr_active.min(RECLAIM_BATCH);
                    nr_active -= k;
                    for _ in 0..k.min(self.lru.n_active()) {
                        self.lru.deactivate_tail();
                    }
                    if freed >= n {
                        break 'retry;
                    }
                }
            }
            if self.lru.is_empty() {
                break;
            }
        }
        self.refaults_seen = self.flushed.refaults;
    }

    /// Read the folio of `1 << order` pages at `index` (all of them missing), marked
    /// PG_readahead if `mark`.
    fn add_folio(&mut self, index: u32, order: u32, mark: bool) {
        for q in index..index + (1 << order) {
            self.bring_in(q);
            self.head[q as usize] = index;
        }
        self.order[index as usize] = order as u8;
        self.marked[index as usize] = mark && self.lru.is_resident(index);
    }

    /// Read the missing pages of [start, start + size), marking `mark` if this read
    /// brings it in, one page per folio (WILLNEED's `force_page_cache_ra`, and the
    /// fallback of `page_cache_ra_order`).
    fn read_range(&mut self, start: u32, size: u32, mark: Option<u32>) {
        self.last_read = NO_PAGE;
        let end = start.saturating_add(size).min(self.n_pages);
        for p in start..end {
            if !self.lru.is_resident(p) {
                self.add_folio(p, 0, Some(p) == mark);
            }
        }
    }

    /// `page_cache_ra_order`: read the window [start, start + size) with its last
    /// `async_size` pages as the lookahead, in folios of up to `order` (aligned, within
    /// the window), the folio holding the lookahead's first page marked. At the first
    /// folio that would overlap a cached page, the rest of the window is read page by
    /// page (`do_page_cache_ra`). Nothing is marked in a window that reaches the end of
    /// the file.
    fn read_window(&mut self, start: u32, size: u32, async_size: u32, order: u32) {
        let last = self.n_pages - 1;
        if start > last || size == 0 {
            return;
        }
        let window_last = start.saturating_add(size - 1);
        let (limit, mark) = if last > window_last {
            (window_last, Some(start + size - async_size))
        } else {
            (last, None)
        };
        let new_order = order.min(MAX_FOLIO_ORDER).min(size.ilog2());
        self.ra_order = new_order;
        self.last_read = NO_PAGE;
        let mut index = start;
        while index <= limit {
            let mut o = new_order.min(index.trailing_zeros());
            while o > 0 && index + (1 << o) - 1 > limit {
                o -= 1;
            }
            if (index..index + (1 << o)).any(|q| self.lru.is_resident(q)) {
                // do_page_cache_ra of the rest; a lookahead reaching the end of the
                // file, or longer than the rest, is dropped.
                let rest = size - (index - start);
                let mark = if rest > last - index || async_size > rest {
                    None
                } else {
                    mark
                };
                self.read_range(index, rest, mark);
                return;
            }
            let m = mark.is_some_and(|m| index == m & !((1 << o) - 1));
            self.add_folio(index, o, m);
            index += 1 << o;
        }
    }

    /// A young PTE on page `p` (`fault`: one just mapped). With large folios reclaim
    /// sees the whole folio referenced (`folio_referenced` walks the PTEs of all its
    /// pages, one LRU entry). It counts one reference per mapping, however many of the
    /// folio's PTEs are young (`folio_referenced_one`), so a folio mapped by this one
    /// process looks twice like an order-0 page. Between faults the folio's mapped pages
    /// do not change, so a page already referenced since its last scan needs nothing more.
    fn reference(&mut self, p: u32, fault: bool) {
        if !self.recency {
            return;
        }
        let h = self.head[p as usize];
        let n = 1u32 << self.order[h as usize];
        if !self.large_folios || n == 1 {
            self.lru.reference(p);
            return;
        }
        if !fault && self.lru.bits(p).0 {
            return;
        }
        for q in h..(h + n).min(self.n_pages) {
            if self.head[q as usize] == h {
                self.lru.reference(q);
            }
        }
    }

    /// A read of page `p` through the mapping: a fault unless a PTE maps it.
    fn touch(&mut self, p: u32) {
        if self.mapped[p as usize] {
            self.reference(p, false);
            return;
        }
        // do_read_fault: fault-around first maps the cached pages of the block around
        // `p` that are not in a marked folio (young PTEs), `p` itself if it is one.
        if self.fault_around > 1 {
            let from = p & !(self.fault_around - 1);
            for q in from..(from + self.fault_around).min(self.n_pages) {
                if self.lru.is_resident(q)
                    && !self.mapped[q as usize]
                    && !self.marked[self.head[q as usize] as usize]
                {
                    self.mapped[q as usize] = true;
                    self.reference(q, true);
                }
            }
            if self.mapped[p as usize] {
                return;
            }
        }
        if self.lru.is_resident(p) {
            // filemap_fault on a cached page: async readahead if its folio is marked.
            let h = self.head[p as usize];
            if self.marked[h as usize] {
                self.marked[h as usize] = false;
                self.async_readahead(p, h);
            }
        } else {
            if self.window > 0 {
                // do_sync_mmap_readahead: the read-around, order-0 folios.
                let w = self.window;
                let start = p.saturating_sub(w / 2);
                self.ra_start = start;
                self.ra_size = w;
                self.ra_async = w / 4;
                self.read_window(start, w, w / 4, 0);
            }
            // With no window, or if a tiny cache lost it during the read-around.
            if !self.lru.is_resident(p) {
                self.add_folio(p, 0, false);
            }
        }
        if self.lru.is_resident(p) {
            self.mapped[p as usize] = true;
            self.reference(p, true);
        }
    }

    /// `page_cache_async_ra` for a fault on page `p` of the marked folio at `h`.
    fn async_readahead(&mut self, p: u32, h: u32) {
        let max = self.window;
        if max == 0 {
            return;
        }
        let nr = 1u32 << self.order[h as usize];
        let expected = (self.ra_start + self.ra_size - self.ra_async) & !(nr - 1);
        if p == expected {
            self.ra_start += self.ra_size;
            self.ra_size = self.ra_size.max(next_ra_size(self.ra_size, max));
        } else {
            // A mark of an earlier window (interleaved reads): from the first page
            // missing after it, if one is missing within a window.
            let start = (p + 1..(p + 1).saturating_add(max))
                .find(|&q| q >= self.n_pages || !self.lru.is_resident(q))
                .unwrap_or(p + 1 + max);
            if start - p > max {
                return;
            }
            self.ra_start = start;
            self.ra_size = next_ra_size(start - p + max, max);
        }
        // Folios grow by two orders per window; the window's end is aligned to them.
        self.ra_order += 2;
        let align = 1u32 << self.ra_order.min(max.trailing_zeros());
        let end = self.ra_start + self.ra_size;
        let aligned_end = end & !(align - 1);
        if aligned_end > self.ra_start {
            self.ra_size -= end - aligned_end;
        }
        self.ra_async = self.ra_size;
        self.read_window(self.ra_start, self.ra_size, self.ra_async, self.ra_order);
    }
}

/// Replay `stream` (`per_token` ids per token) through the page model with page cache
/// for `capacity` experts of the layout.
pub fn page_model(
    stream: &[u16],
    per_token: usize,
    capacity: usize,
    cfg: &PageModelConfig,
) -> PageModelRun {
    let layout = &cfg.layout;
    let n_pages = layout.file_len().div_ceil(PAGE) as u32;
    let budget_bytes = capacity as u64 * layout.expert_bytes;
    let ratio = cfg
        .ratio
        .unwrap_or_else(|| kernel_inactive_ratio(budget_bytes));
    let mut sim = Sim {
        lru: SplitLru::new(n_pages as usize, ratio),
        large_folios: cfg.large_folios,
        marked: vec![false; n_pages as usize],
        mapped: vec![false; n_pages as usize],
        fault_around: cfg.fault_around_pages,
        head: (0..n_pages).collect(),
        order: vec![0; n_pages as usize],
        budget: (budget_bytes / PAGE) as usize,
        n_pages,
        window: cfg.window_pages,
        recency: cfg.recency,
        batch: cfg.batch.max(1),
        ra_start: 0,
        ra_size: 0,
        ra_async: 0,
        ra_order: 0,
        read: 0,
        requests: 0,
        last_read: NO_PAGE,
        kernel_reclaim: cfg.kernel_reclaim,
        refaults_seen: 0,
        flushed: Flushed::default(),
    };
    let ranges = page_ranges(layout);
    let slices = layout.slices as usize;
    let n_tokens = stream.len().checked_div(per_token).unwrap_or(0);
    let mut read_pages = Vec::with_capacity(n_tokens);
    let mut read_requests = Vec::with_capacity(n_tokens);
    for token in stream.chunks_exact(per_token.max(1)).take(n_tokens) {
        let before = sim.read;
        let requests_before = sim.requests;
        sim.flush_stats();
        for &id in token {
            let ext = &ranges[id as usize][..slices];
            if cfg.willneed {
                for &(a, b) in ext {
                    let n = match cfg.willneed_max_pages {
                        0 => b - a,
                        m => (b - a).min(m),
                    };
                    sim.read_range(a, n, None);
                }
            }
            for &(a, b) in ext {
                for p in a..b {
                    sim.touch(p);
                }
            }
        }
        read_pages.push(sim.read - before);
        read_requests.push(sim.requests - requests_before);
    }
    let resident_pages = ranges
        .iter()
        .map(|r| {
            r[..slices]
                .iter()
                .map(|&(a, b)| (a..b).filter(|&p| sim.lru.is_resident(p)).count() as u32)
                .sum()
        })
        .collect();
    PageModelRun {
        expert_bytes: layout.expert_bytes,
        read_pages,
        read_requests,
        resident_pages,
        pages_per_expert: if layout.gguf.is_none() {
            ranges
                .first()
                .map_or(0, |r| r[..slices].iter().map(|&(a, b)| b - a).sum())
        } else {
            // Layers of different sizes: the mean over every expert.
            let all: u64 = ranges
                .iter()
                .flat_map(|r| r[..slices].iter().map(|&(a, b)| (b - a) as u64))
                .sum();
            (all as f64 / ranges.len().max(1) as f64).round() as u32
        },
        ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_spill_policies::registry::{BuildContext, PolicySpec};

    fn layout(n_ids: usize, expert_bytes: u64, slices: u32) -> ExpertFileLayout {
        ExpertFileLayout {
            gguf: None,
            n_ids,
            n_experts: n_ids.min(8),
            expert_bytes,
            slices,
        }
    }

    fn cfg(
        layout: ExpertFileLayout,
        window_pages: u32,
        willneed: bool,
        batch: usize,
    ) -> PageModelConfig {
        PageModelConfig {
            layout,
            window_pages,
            willneed,
            willneed_max_pages: 0,
            fault_around_pages: 0,
            recency: true,
            large_folios: false,
            batch,
            ratio: None,
            kernel_reclaim: false,
        }
    }

    /// Skewed, drifting ids: `tokens` tokens of `per_token` distinct ids below `n_ids`.
    fn stream(n_ids: usize, per_token: usize, tokens: usize, seed: u64) -> Vec<u16> {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as usize
        };
        let mut out = Vec::new();
        for t in 0..tokens {
            let mut tok: Vec<u16> = Vec::new();
            while tok.len() < per_token {
                let r = next() % n_ids * (next() % n_ids) / n_ids;
                let id = ((r + t / 7) % n_ids) as u16;
                if !tok.contains(&id) {
                    tok.push(id);
                }
            }
            out.extend(tok);
        }
        out
    }

    /// Misses per token of a policy spec over the same stream.
    fn policy(spec: &str, stream: &[u16], per_token: usize, n_ids: usize, cap: usize) -> Vec<u64> {
        let ctx = BuildContext {
            capacity: cap,
            n_ids,
            n_experts: 8,
            expert_bytes: Some(PAGE),
            ..Default::default()
        };
        let mut p = PolicySpec::parse(spec).unwrap().build(&ctx).unwrap();
        stream
            .chunks(per_token)
            .map(|t| {
                t.iter()
                    .filter(|&&id| !p.access(id as u32).is_hit())
                    .count() as u64
            })
            .collect()
    }

    #[test]
    fn one_page_experts_exact_reads_are_the_linux_policy() {
        for seed in 1..6u64 {
            let (n_ids, per_token) = (48, 6);
            let s = stream(n_ids, per_token, 400, seed);
            for cap in [0, 1, 5, 6, 12, 24, 40, 48] {
                // (With no room at all a WILLNEED read is dropped before the touch,
                // which then reads the page again.)
                for willneed in [false, cap > 0] {
                    for ratio in [None, Some(3)] {
                        let c = PageModelConfig {
                            ratio,
                            ..cfg(layout(n_ids, PAGE, 1), 0, willneed, 1)
                        };
                        let run = page_model(&s, per_token, cap, &c);
                        let spec = ratio.map_or("linux".into(), |r| format!("linux:ratio={r}"));
                        assert_eq!(
                            run.read_pages,
                            policy(&spec, &s, per_token, n_ids, cap),
                            "seed {seed} cap {cap} willneed {willneed} {spec}"
                        );
                        // Exactly the budget is cached at the end once it filled.
                        let cached = run.resident_experts();
                        assert!(cached <= cap as f64, "{cached} > {cap}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_advice_is_fifo_over_pages() {
        let (n_ids, per_token) = (40, 4);
        let s = stream(n_ids, per_token, 500, 9);
        for cap in [3, 10, 25] {
            let c = PageModelConfig {
                batch: 1,
                ..PageModelConfig::for_advice(layout(n_ids, PAGE, 1), Advice::Random, 512)
            };
            assert_eq!(c.window_pages, 0);
            let run = page_model(&s, per_token, cap, &c);
            assert_eq!(run.read_pages, policy("fifo", &s, per_token, n_ids, cap));
        }
    }

    #[test]
    fn read_around_and_async_readahead_by_hand() {
        // 8 experts of 4 pages after the header page (33 pages), window 4 (folios of at
        // most 4 pages, windows aligned to them), room for all.
        let c = cfg(layout(8, 4 * PAGE, 1), 4, false, 32);
        // Expert 1 (pages 5-8): the fault on 5 reads [3, 7) page by page and marks 6.
        // Touching 6 (the expected mark): the next window [7, 11) ends aligned to the
        // order-2 folios of the next step: [7, 8), marked. Touching 7: [8, 10), one
        // order-1 folio, marked. Touching 8 (its folio's first page, expected): [10, 12)
        // (aligned down from 14), marked: 9 pages for a 4-page expert. Expert 2 (9-12):
        // the mark on 10 reads [12, 16) as one folio, marked, and touching 12 [16, 20):
        // 8. Expert 0 (1-4): the fault on 1 reads [0, 4) but 3 is cached: 3 pages, and
        // no mark (3 was not read now).
        let run = page_model(&[1, 2, 0], 1, 8, &c);
        assert_eq!(run.read_pages, vec![9, 8, 3]);
        // One request per window, [0, 4) without the cached 3 one.
        assert_eq!(run.read_requests, vec![4, 2, 1]);
        assert_eq!(run.expert_misses(), 20.0 / 4.0);
        // Expert 0: [0, 4) marking 3, then the folios [4, 8) and [8, 12), each marked.
        // Expert 5 (21-24): [19, 23), [23, 24), [24, 26), [26, 28). Expert 1 (5-8): 8
        // heads the marked folio [8, 12), but the current window expects 26: interleaved,
        // so a window from the first page missing after 8 (12): [12, 16).
        let run = page_model(&[0, 5, 1], 1, 8, &c);
        assert_eq!(run.read_pages, vec![12, 9, 4]);
        // Expert 2 (9-12) first touches the marked folio [8, 12) at 9, not at its first
        // page: interleaved, from 12: [12, 16), then [16, 20) from that window's mark.
        // Expert 1 is then all cached.
        let run = page_model(&[0, 2, 1], 1, 8, &c);
        assert_eq!(run.read_pages, vec![12, 8, 0]);
        // At the end of the file (expert 7 is pages 29-32): [27, 31), [31, 32), and the
        // last page, unmarked.
        let run = page_model(&[7], 1, 8, &c);
        assert_eq!(run.read_pages, vec![6]);
    }

    #[test]
    fn an_isolated_1mib_expert_under_a_256kib_window() {
        // Expert 5 is pages 1281-1536. Read-around [1249, 1313), then async windows of
        // 63, 64, 32, 64, 64 and 64 pages (ends aligned to order-2, -4, then -6 folios):
        // the fifth starts at 1536, the expert's last page, whose touch reads the sixth,
        // [1600, 1664). 415 pages, 256 of them the expert's, 127 the next one's.
        let c = cfg(layout(16, 1 << 20, 1), 64, false, 32);
        let run = page_model(&[5], 1, 16, &c);
        assert_eq!(run.read_pages, vec![415]);
        assert_eq!(run.resident_pages[5], 256);
        assert_eq!(run.resident_pages[6], 127);
    }

    #[test]
    fn willneed_reads_at_most_io_pages_then_faults_read_around() {
        // 2 experts of 8 pages (expert 0: pages 1-8), window 4. WILLNEED with a limit of
        // 4 pages reads 1-4; the fault on 5 reads [3, 7) (5 and 6, marking 6), then the
        // async windows [7, 8), [8, 10) and [10, 12): 11 pages. Without the limit, the 8.
        let c = PageModelConfig {
            willneed_max_pages: 4,
            ..cfg(layout(2, 8 * PAGE, 1), 4, true, 32)
        };
        assert_eq!(page_model(&[0], 1, 2, &c).read_pages, vec![11]);
        // WILLNEED's 4 pages, the fault's window and three async windows.
        assert_eq!(page_model(&[0], 1, 2, &c).read_requests, vec![5]);
        let c = PageModelConfig {
            willneed_max_pages: 0,
            ..c
        };
        assert_eq!(page_model(&[0], 1, 2, &c).read_pages, vec![8]);
        // The limit is max(io_pages, ra_pages), and none when the device's is unknown.
        let c = c.with_io_limit(128, 512);
        assert_eq!(c.willneed_max_pages, 128);
        assert_eq!(c.with_io_limit(0, 512).willneed_max_pages, 0);
    }

    #[test]
    fn reclaim_frees_a_batch() {
        // Experts of 2 pages, 3 experts of cache (6 pages), exact reads. Experts 0, 1, 2
        // fill it; the first page of 3 needs room: a batch of 4 evicts pages 1-4 (after
        // each gets its second trip), a batch of 1 only page 1 (and page 2 for the
        // second page), so expert 1 is read again only with the batch of 4.
        let s = [0, 1, 2, 3, 1];
        let run = |batch| page_model(&s, 1, 3, &cfg(layout(8, 2 * PAGE, 1), 0, true, batch));
        assert_eq!(run(4).read_pages, vec![2, 2, 2, 2, 2]);
        assert_eq!(run(1).read_pages, vec![2, 2, 2, 2, 0]);
        assert_eq!(run(1).resident_pages[..4], [0, 2, 2, 2]);
    }

    #[test]
    fn slices_share_pages() {
        // 4 experts of 3 slices of 6144 B (1.5 pages): each tensor is 6 pages. Expert
        // 0's slices are pages 1-2, 7-8 and 13-14; expert 1's are 2-3, 8-9, 14-15, so it
        // shares a page with expert 0 in every tensor and reads only 3 new ones.
        let c = cfg(layout(4, 18432, 3), 0, true, 1);
        let run = page_model(&[0, 1, 0], 1, 4, &c);
        assert_eq!(run.read_pages, vec![6, 3, 0]);
        assert_eq!(run.pages_per_expert, 6);
        assert_eq!(run.resident_pages[..2], [6, 6]);
    }
}
