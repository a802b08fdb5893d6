//! The pieces of a decoder layer, on plain `f32` rows `[seq, width]` in
//! buffers the sequence owns (no allocation per token): the weight matrices
//! (`linear`), RMS norm, rotary embedding, attention and the gated MLP.
//! Each computes every row on its own, so a prompt processed in one batch
//! gives exactly the logits it gives token by token.

pub(crate) mod attention;
pub(crate) mod linear;
pub(crate) mod mlp;
pub(crate) mod norm;
pub(crate) mod rope;

use super::error::{Error, Result};

/// Whether to give up now: set from another thread (a cancel).
pub(crate) type StopCheck<'a> = &'a (dyn Fn() -> bool + Sync);

/// `Err(Cancelled)` once `stop` says so.
pub(crate) fn check(stop: StopCheck<'_>) -> Result<()> {
    if stop() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// `buf` resized to `len` elements: it only allocates when a longer batch
/// than any before comes.
pub(crate) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    buf
}

/// `x += y`, the residual connection.
pub(crate) fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}
