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

/// Runs of weight rows each thread takes in a decode matmul (see `run`).
const DECODE_RUNS_PER_THREAD: usize = 2;

/// Activation rows per kernel call: the weights' unpacking is shared by them.
const ROWS_PER_CALL: usize = 4;

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
/// the same length) and its dot product.
pub(super) trait Weights: blocks::Plain + Sync {
    type Act: Activations;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[Self::Act]; R]) -> [f32; R];
}

impl Weights for BlockQ2K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q2k(w, x)
    }
}

impl Weights for BlockQ3K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q3k(w, x)
    }
}

impl Weights for BlockQ4K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q4k(w, x)
    }
}

impl Weights for BlockQ5K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q5k(w, x)
    }
}

impl Weights for BlockQ6K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q6k(w, x)
    }
}

macro_rules! legacy_weights {
    ($($t:ty),*) => {$(
        impl Weights for $t {
            type Act = BlockQ8_1;
            fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8_1]; R]) -> [f32; R] {
                variant.dot_legacy(w, x)
            }
        }
    )*};
}
legacy_weights!(BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0);

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
    W::Act::with_buffer(m * per_row, |x| {
        for (row, out) in lhs.chunks_exact(k).zip(x.chunks_exact_mut(per_row)) {
            W::Act::quantize(row, out);
        }
        let x: &[W::Act] = x;
        let weight_row = |p: usize, j: usize| &w[p][j * per_row..(j + 1) * per_row];
        let act_row = |i: usize| &x[i * per_row..(i + 1) * per_row];
        let pool = candle_core::utils::barrier_pool();
        if m == 1 {
            // Two contiguous runs of rows per thread, from a shared cursor:
            // each thread streams its weights in long runs, which the
            // hardware prefetcher follows (the pool's default of eight small
            // chunks per thread interleaved the threads' reads, and SmolLM2's
            // decode was no faster on two threads than on one), and a thread
            // slowed by the OS still hands its second run to the other.
            let chunk = rows_total.div_ceil((pool.n_workers() + 1) * DECODE_RUNS_PER_THREAD);
            let cursor = std::sync::atomic::AtomicUsize::new(0);
            pool.execute(|_| loop {
                let first = cursor.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                if first >= rows_total {
                    break;
                }
                for c in first..(first + chunk).min(rows_total) {
                    let p = part(c, &row_start);
                    let j = c - row_start[p];
                    let [v] = W::dot(variant, weight_row(p, j), [x]);
                    // SAFETY: output j of matrix p's only row belongs to this item.
                    unsafe { outs[p].set(j, v) };
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
                let mut i = 0;
                while i + ROWS_PER_CALL <= m {
                    let rows: [&[W::Act]; ROWS_PER_CALL] = std::array::from_fn(|r| act_row(i + r));
                    for j in cols.clone() {
                        for (r, v) in W::dot(variant, weight_row(p, j), rows).into_iter().enumerate() {
                            // SAFETY: the columns of this tile belong to this item.
                            unsafe { out.set((i + r) * n + j, v) };
                        }
                    }
                    i += ROWS_PER_CALL;
                }
                for i in i..m {
                    for j in cols.clone() {
                        let [v] = W::dot(variant, weight_row(p, j), [act_row(i)]);
                        // SAFETY: as above.
                        unsafe { out.set(i * n + j, v) };
                    }
                }
            }
        });
    });
    Some(())
}
