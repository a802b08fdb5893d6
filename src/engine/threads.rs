//! Compute-thread count. candle sizes its worker pool once per process from
//! `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`, read on first use, so the first
//! model loaded decides for the whole process; later requests get that count.

use once_cell::sync::OnceCell;

static THREADS: OnceCell<usize> = OnceCell::new();

/// Fixes the process-wide thread count (first caller wins); returns the count
/// in force.
pub(crate) fn configure(requested: Option<usize>) -> usize {
    *THREADS.get_or_init(|| {
        // An explicit environment setting from the host app wins over our default.
        let from_env = ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok().filter(|n| *n > 0));
        let n = requested.or(from_env).unwrap_or_else(candle_core::utils::get_num_threads);
        // Set before candle's pool exists (it is created on the first matmul,
        // after this), inside the once-cell so no other thread of ours races it.
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        n
    })
}
