//! `CancellationToken`: stops one call from any thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Stops one call from any thread: `LanguageModel.generate`, `ChatSession.send`,
/// `download_model`. One token per call; once cancelled it stays cancelled,
/// so a cancel that lands before the call starts is never forgotten.
#[derive(Debug, Default, uniffi::Object)]
pub struct CancellationToken {
    /// Shared with a download's socket, which checks it between reads.
    pub(crate) flag: Arc<AtomicBool>,
}

#[uniffi::export]
impl CancellationToken {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}
