//! The matmul's driver: activations quantized once into a per-thread
//! buffer, weight rows split among candle's persistent worker pool (decode:
//! long runs per thread; a prompt: tiles of rows that stay in cache while
//! every activation row passes over them).

use super::blocks::{
    self, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_0, BlockQ8_1, QK, QK_K,
};
use super::Variant;

/// Weight rows per work item of a prompt: a tile that stays in L2 while
/// every activation row passes over it.
const ROWS_PER_TILE: usize = 16;

/// Bytes of weight rows a decode thread takes per grab from its share (see
/// [`Shares`]): the most a thread can be left waiting for at a matmul's end.
const DECODE_GRAB_BYTES: usize = 32 << 10;

/// Activation blocks: how a row is quantized, and a per-thread buffer of
/// them reused across calls (no allocation per matmul).
pub(super) trait Activations: blocks::Plain + Sync + 'static {
    /// Elements per block.
    const BLOCK: usize;
    fn quantize(row: &[f32], out: &mut [Self]);
    fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [Self]) -> T) -> T;
}

/// `f` on the first `len` blocks of this thread's buffer `key`.
fn with_buffer<A: Copy, T>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<A>>>,
    zero: A,
    len: usize,
    f: impl FnOnce(&mut [A]) -> T,
) -> T {
    key.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(len, zero);
        f(buf)
    })
}

impl Activations for BlockQ8K {
    const BLOCK: usize = QK_K;
    fn quantize(row: &[f32], out: &mut [Self]) {
        blocks::quantize_q8k(row, out)
    }
    fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [Self]) -> T) -> T {
        thread_local!(static BUF: std::cell::RefCell<Vec<BlockQ8K>> = const { std::cell::RefCell::new(Vec::new()) });
        with_buffer(&BUF, BlockQ8K::ZERO, len, f)
    }
}

impl Activations for BlockQ8_1 {
    const BLOCK: usize = QK;
    fn quantize(row: &[f32], out: &mut [Self]) {
        blocks::quantize_q8_1(row, out)
    }
    fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [Self]) -> T) -> T {
        thread_local!(static BUF: std::cell::RefCell<Vec<BlockQ8_1>> = const { std::cell::RefCell::new(Vec::new()) });
        with_buffer(&BUF, BlockQ8_1::ZERO, len, f)
    }
}

/// A weight type our kernels cover: its block, its activations' block (of
/// the same length), its dot product, and two weight rows' at once.
pub(super) trait Weights: blocks::Plain + Sync {
    type Act: Activations;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[Self::Act]; R]) -> [f32; R];
    fn dot_pair<const R: usize>(variant: Variant, w: [&[Self]; 2], x: [&[Self::Act]; R]) -> [[f32; R]; 2];
    /// Whether `variant` computes two of these weight rows in one call.
    fn pairs(variant: Variant) -> bool;
    /// Puts quantized activations in the order `variant`'s kernels for this
    /// type take them (`dot` and `dot_pair` expect it).
    fn arrange(variant: Variant, x: &mut [Self::Act]);
}

macro_rules! weights {
    ($($t:ty, $act:ty, $dot:ident, $pair:ident, $x86_pairs:literal $(, $arrange:ident)?;)*) => {$(
        impl Weights for $t {
            type Act = $act;
            fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[$act]; R]) -> [f32; R] {
                variant.$dot(w, x)
            }
            fn dot_pair<const R: usize>(variant: Variant, w: [&[Self]; 2], x: [&[$act]; R]) -> [[f32; R]; 2] {
                variant.$pair(w, x)
            }
            fn pairs(variant: Variant) -> bool {
                variant.pairs_weight_rows($x86_pairs)
            }
            fn arrange(_variant: Variant, _x: &mut [$act]) {
                $(_variant.$arrange(_x))?
            }
        }
    )*};
}
// The fifth column: whether the type's `pair!` in variant.rs has AVX2 and
// AVX-512 kernels; the last, if any: how its activations are arranged.
weights! {
    BlockQ2K, BlockQ8K, dot_q2k, dot_pair_q2k, false;
    BlockQ3K, BlockQ8K, dot_q3k, dot_pair_q3k, false;
    BlockQ4K, BlockQ8K, dot_q4k, dot_pair_q4k, true, arrange_q4k;
    BlockQ5K, BlockQ8K, dot_q5k, dot_pair_q5k, true, arrange_q4k;
    BlockQ6K, BlockQ8K, dot_q6k, dot_pair_q6k, false;
    BlockQ4_0, BlockQ8_1, dot_legacy, dot_pair_legacy, false;
    BlockQ4_1, BlockQ8_1, dot_legacy, dot_pair_legacy, false;
    BlockQ5_0, BlockQ8_1, dot_legacy, dot_pair_legacy, false;
    BlockQ5_1, BlockQ8_1, dot_legacy, dot_pair_legacy, false;
    BlockQ8_0, BlockQ8_1, dot_legacy, dot_pair_legacy, false;
}

/// `dst`, written from several threads at elements no two work items share.
pub(super) struct Output {
    pub(super) ptr: *mut f32,
    pub(super) len: usize,
}

// SAFETY: `Output` is only written through `set`, whose callers write
// disjoint elements (each (row, column) belongs to exactly one work item).
unsafe impl Sync for Output {}

impl Output {
    /// # Safety
    /// No other thread may write element `i` during the matmul.
    pub(super) unsafe fn set(&self, i: usize, v: f32) {
        assert!(i < self.len);
        // SAFETY: in bounds (checked); exclusive by the caller's promise; the
        // matmul borrows `dst` mutably for as long as `Output` lives.
        unsafe { *self.ptr.add(i) = v }
    }
}

/// Quantizes the activations once (into a per-thread buffer reused across
/// calls), then splits the weight rows of all `P` matrices (which share the
/// input: q, k and v, or gate and up) among candle's persistent worker pool
/// in one dispatch (the one its own ops use: a second pool would spin
/// against it). `None` if the shapes do not fit `W`'s blocks.
pub(super) fn run<W: Weights, const P: usize>(
    variant: Variant,
    (m, k): (usize, usize),
    lhs: &[f32],
    weights: [&[u8]; P],
    dsts: [&mut [f32]; P],
    stop: &(dyn Fn() -> bool + Sync),
) -> Option<()> {
    let block = W::Act::BLOCK;
    if m == 0 || !k.is_multiple_of(block) || lhs.len() != m.checked_mul(k)? {
        return None;
    }
    let per_row = k / block;
    let row_bytes = per_row * std::mem::size_of::<W>();
    // Each matrix: its blocks, its outputs (rows of weights) and where its
    // rows and tiles start in the concatenation of all of them.
    let ns: [usize; P] = std::array::from_fn(|p| dsts[p].len() / m);
    let mut w: [&[W]; P] = [&[]; P];
    for p in 0..P {
        if dsts[p].len() != m * ns[p] {
            return None;
        }
        w[p] = blocks::cast(weights[p], ns[p].checked_mul(per_row)?)?;
    }
    let outs: [Output; P] = dsts.map(|d| Output { ptr: d.as_mut_ptr(), len: d.len() });
    let starts = |size: &dyn Fn(usize) -> usize| -> [usize; P] {
        let mut at = 0;
        std::array::from_fn(|p| {
            let first = at;
            at += size(p);
            first
        })
    };
    let row_start = starts(&|p| ns[p]);
    let tile_start = starts(&|p| ns[p].div_ceil(ROWS_PER_TILE));
    let (rows_total, tiles_total) = (ns.iter().sum::<usize>(), ns.iter().map(|n| n.div_ceil(ROWS_PER_TILE)).sum());
    // The matrix that concatenated index `c` falls in, given where each starts.
    let part = |c: usize, start: &[usize; P]| (0..P).rev().find(|&p| start[p] <= c).unwrap_or(0);
    let pool = candle_core::utils::barrier_pool();
    let decode = if m == 1 { Some(Shares::new(rows_total, pool.n_workers() + 1)?) } else { None };
    W::Act::with_buffer(m * per_row, |x| {
        for (row, out) in lhs.chunks_exact(k).zip(x.chunks_exact_mut(per_row)) {
            W::Act::quantize(row, out);
        }
        W::arrange(variant, x);
        let x: &[W::Act] = x;
        let weight_row = |p: usize, j: usize| &w[p][j * per_row..(j + 1) * per_row];
        let act_row = |i: usize| &x[i * per_row..(i + 1) * per_row];
        if let Some(shares) = &decode {
            let grab = (DECODE_GRAB_BYTES / row_bytes).max(1);
            pool.execute(|id| {
                while let Some(rows) = shares.take(id, grab) {
                    for c in rows {
                        let p = part(c, &row_start);
                        let j = c - row_start[p];
                        let [v] = W::dot(variant, weight_row(p, j), [x]);
                        // SAFETY: output j of matrix p's only row belongs to this grab.
                        unsafe { outs[p].set(j, v) };
                    }
                }
            });
            return;
        }
        pool.execute_chunked(tiles_total, |tiles| {
            for tile in tiles {
                if stop() {
                    return;
                }
                let p = part(tile, &tile_start);
                let (n, out, tile) = (ns[p], &outs[p], tile - tile_start[p]);
                let cols = tile * ROWS_PER_TILE..((tile + 1) * ROWS_PER_TILE).min(n);
                // The next tile's weights, a slice per pass of activation
                // rows: with a short prompt (few passes per tile) the first
                // pass over a tile otherwise waits on memory, which the
                // hardware prefetcher did not hide (16 tokens: 0.83× the
                // time; long prompts unchanged).
                let next = cols.end..(cols.end + ROWS_PER_TILE).min(n);
                let ahead = &weights[p][next.start * row_bytes..next.end * row_bytes];
                let mut ahead = ahead.chunks(ahead.len().div_ceil(m.div_ceil(4)).max(1));
                let weights = |j: usize| weight_row(p, j);
                let mut i = 0;
                while i < m {
                    if let Some(bytes) = ahead.next() {
                        prefetch(bytes);
                    }
                    // Four activation rows at a time, then a pair (which i8mm
                    // still pairs with pairs of weight rows), then one.
                    i += match m - i {
                        4.. => tile_rows::<W, 4>(variant, &weights, act_row, i, cols.clone(), (n, out)),
                        2.. if W::pairs(variant) => {
                            tile_rows::<W, 2>(variant, &weights, act_row, i, cols.clone(), (n, out))
                        }
                        _ => tile_rows::<W, 1>(variant, &weights, act_row, i, cols.clone(), (n, out)),
                    };
                }
            }
        });
    });
    Some(())
}

/// Decode's split of a matmul's rows among threads. Each thread owns one
/// contiguous share and takes it front to back, so it streams its weights in
/// one long run, which the hardware prefetcher follows (small chunks from a
/// shared cursor interleaved the threads' reads: SmolLM2's decode was no
/// faster on two threads than on one). A thread done with its own share
/// takes grabs from the back of the share with most rows left, so a thread
/// slowed by the OS or by memory leaves the others at most one grab to wait
/// for. (Two runs per thread from a shared cursor, before, left 9% of
/// Phi-3-mini's decode samples waiting at the barrier; now 3%. SmolLM2's
/// decode median rose 1.10×; Phi-3-mini's, bound by memory, did not move.)
struct Shares {
    shares: [Share; Self::MAX],
    /// Shares in use: one per thread, up to `MAX`.
    n: usize,
}

/// A share's rows still to take, `front..back`, as one word (front in the
/// low half) so that both ends move by compare-and-swap; on a cache line of
/// its own so that its owner's grabs do not contend with the other shares'.
#[repr(align(128))]
struct Share(std::sync::atomic::AtomicU64);

impl Shares {
    /// On the stack, so a decode matmul allocates nothing: threads beyond
    /// this many own no share and only take from the backs of others'.
    const MAX: usize = 16;

    /// `None` if `rows` does not fit a share's ends.
    fn new(rows: usize, threads: usize) -> Option<Self> {
        u32::try_from(rows).ok()?;
        let n = threads.clamp(1, Self::MAX);
        let bound = |t: usize| (rows * t / n) as u64;
        Some(Self {
            shares: std::array::from_fn(|t| {
                Share(std::sync::atomic::AtomicU64::new(if t < n { bound(t) | bound(t + 1) << 32 } else { 0 }))
            }),
            n,
        })
    }

    /// The next rows for thread `id`: up to `grab` from the front of its own
    /// share, else from the back of the fullest; `None` when all are taken.
    fn take(&self, id: usize, grab: usize) -> Option<std::ops::Range<usize>> {
        if id < self.n {
            if let Some(rows) = self.shares[id].take(grab, true) {
                return Some(rows);
            }
        }
        loop {
            let fullest = self.shares[..self.n].iter().max_by_key(|s| s.left())?;
            if fullest.left() == 0 {
                return None;
            }
            // Lost a race for its last rows: look again.
            if let Some(rows) = fullest.take(grab, false) {
                return Some(rows);
            }
        }
    }
}

impl Share {
    fn ends(word: u64) -> (usize, usize) {
        ((word & u32::MAX as u64) as usize, (word >> 32) as usize)
    }

    fn left(&self) -> usize {
        let (front, back) = Self::ends(self.0.load(std::sync::atomic::Ordering::Relaxed));
        back - front
    }

    /// Up to `grab` rows from the front or the back; `None` if empty.
    fn take(&self, grab: usize, front_end: bool) -> Option<std::ops::Range<usize>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut word = self.0.load(Relaxed);
        loop {
            let (front, back) = Self::ends(word);
            if front >= back {
                return None;
            }
            let g = grab.min(back - front);
            let (rows, next) = if front_end {
                (front..front + g, (front + g) as u64 | (back as u64) << 32)
            } else {
                (back - g..back, front as u64 | ((back - g) as u64) << 32)
            };
            // Relaxed: the rows' outputs are published by the pool's barrier.
            match self.0.compare_exchange_weak(word, next, Relaxed, Relaxed) {
                Ok(_) => return Some(rows),
                Err(now) => word = now,
            }
        }
    }
}

/// Asks the CPU to bring `bytes` into its L2 cache, without waiting for them.
fn prefetch(bytes: &[u8]) {
    for line in bytes.chunks(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache; the address is in `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(line.as_ptr() as *const i8)
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above (`prfm` reads no register but the address and
        // never faults).
        unsafe {
            std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) line.as_ptr(), options(nostack, readonly, preserves_flags))
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = line;
    }
}

/// Activation rows `i..i + R` against the weight rows `cols` of one tile
/// (`n` outputs per activation row), in pairs of weight rows where the
/// variant pairs them; returns `R`. One kernel call takes all `R` rows: the
/// weights' unpacking is shared by them.
fn tile_rows<'a, W: Weights + 'a, const R: usize>(
    variant: Variant,
    weights: &impl Fn(usize) -> &'a [W],
    act_row: impl Fn(usize) -> &'a [W::Act],
    i: usize,
    cols: std::ops::Range<usize>,
    (n, out): (usize, &Output),
) -> usize {
    let rows: [&[W::Act]; R] = std::array::from_fn(|r| act_row(i + r));
    let mut j = cols.start;
    if W::pairs(variant) && R.is_multiple_of(2) {
        while j + 2 <= cols.end {
            let v = W::dot_pair(variant, [weights(j), weights(j + 1)], rows);
            for (dj, v) in v.into_iter().enumerate() {
                for (r, v) in v.into_iter().enumerate() {
                    // SAFETY: the columns of this tile belong to this work item.
                    unsafe { out.set((i + r) * n + j + dj, v) };
                }
            }
            j += 2;
        }
    }
    for j in j..cols.end {
        for (r, v) in W::dot(variant, weights(j), rows).into_iter().enumerate() {
            // SAFETY: as above.
            unsafe { out.set((i + r) * n + j, v) };
        }
    }
    R
}

#[cfg(test)]
mod tests {
    use super::Shares;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Every row is handed out exactly once, whichever threads take them.
    fn each_row_once(rows: usize, threads: usize, grab: usize, slow: Option<usize>) {
        let shares = Shares::new(rows, threads).unwrap();
        let taken: Vec<AtomicU8> = (0..rows).map(|_| AtomicU8::new(0)).collect();
        let by_thread: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|id| {
                    let (shares, taken) = (&shares, &taken);
                    s.spawn(move || {
                        let mut n = 0;
                        while let Some(r) = shares.take(id, grab) {
                            assert!(!r.is_empty() && r.len() <= grab, "{r:?}");
                            if slow == Some(id) {
                                std::thread::sleep(std::time::Duration::from_millis(1));
                            }
                            for i in r {
                                taken[i].fetch_add(1, Ordering::Relaxed);
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let counts: Vec<u8> = taken.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        assert!(counts.iter().all(|&c| c == 1), "rows {rows}, threads {threads}, grab {grab}: {counts:?}");
        if let Some(slow) = slow {
            // The others took over most of the slow thread's share.
            assert!(by_thread[slow] < rows / threads / 2, "{by_thread:?}");
        }
    }

    #[test]
    fn shares_hand_out_every_row_once() {
        for (rows, threads, grab) in [(1, 1, 1), (1, 2, 4), (7, 3, 2), (1000, 2, 16), (999, 5, 7), (300, 20, 3)] {
            each_row_once(rows, threads, grab, None);
        }
    }

    #[test]
    fn a_slow_thread_share_is_taken_from_its_back() {
        each_row_once(2000, 2, 10, Some(1));
        each_row_once(3000, 3, 10, Some(0));
    }

    #[test]
    fn one_thread_takes_its_share_in_order_then_the_others_from_their_backs() {
        let shares = Shares::new(10, 2).unwrap();
        let mut got = Vec::new();
        while let Some(r) = shares.take(0, 3) {
            got.push(r);
        }
        assert_eq!(got, [0..3, 3..5, 7..10, 5..7]);
    }
}
