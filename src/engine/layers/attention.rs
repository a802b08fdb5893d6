//! Self-attention: the q/k/v projections, rotary embedding, the keys and
//! values written into the sequence's cache, attention over the cache in
//! place (`kernels::attention`: grouped-query heads read their shared KV
//! head, no copies) and the output projection.

use super::super::error::{Error, Result};
use super::super::kernels::attention::{causal, Shape};
use super::super::kv_cache::{KvCache, LayerView};
use super::linear::Linear;
use super::rope::{Angles, Rope};
use super::{check, sized, StopCheck};

/// How the file stores the q/k/v projections.
pub(crate) enum Projections {
    /// One `attn_qkv` matrix, its outputs q | k | v (Phi-3).
    Fused(Linear),
    Split {
        q: Linear,
        k: Linear,
        v: Linear,
    },
}

pub(crate) struct Attention {
    pub projections: Projections,
    pub output: Linear,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// The buffers attention works in, owned by the sequence.
#[derive(Default)]
pub(crate) struct Scratch {
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    heads: Vec<f32>,
}

impl Attention {
    /// `out[seq, hidden]` for the normed rows `x` at positions
    /// `start..start + seq`, writing layer `layer`'s keys and values into
    /// `cache` (room reserved by the caller); `angles` are those positions'.
    #[allow(clippy::too_many_arguments)] // one call site, each argument distinct
    pub fn forward(
        &self,
        layer: usize,
        x: &[f32],
        start: usize,
        (rope, angles): (&Rope, &Angles),
        cache: &mut KvCache,
        s: &mut Scratch,
        out: &mut [f32],
        stop: StopCheck<'_>,
    ) -> Result<()> {
        let (q_width, kv_width) = (self.n_head * self.head_dim, self.n_kv_head * self.head_dim);
        let seq = out.len() / self.output.outputs();
        let q = sized(&mut s.q, seq * q_width);
        let k = sized(&mut s.k, seq * kv_width);
        let v = sized(&mut s.v, seq * kv_width);
        match &self.projections {
            Projections::Fused(qkv) => {
                let all = sized(&mut s.qkv, seq * (q_width + 2 * kv_width));
                qkv.forward(x, all, stop)?;
                for (t, row) in all.chunks_exact(q_width + 2 * kv_width).enumerate() {
                    let (rq, rest) = row.split_at(q_width);
                    let (rk, rv) = rest.split_at(kv_width);
                    q[t * q_width..][..q_width].copy_from_slice(rq);
                    k[t * kv_width..][..kv_width].copy_from_slice(rk);
                    v[t * kv_width..][..kv_width].copy_from_slice(rv);
                }
            }
            Projections::Split { q: wq, k: wk, v: wv } => Linear::forward_shared([wq, wk, wv], x, [q, k, v], stop)?,
        }
        let mismatch = || Error::Inference(format!("rotary angles for {seq} rows do not fit the q/k rows"));
        rope.apply(q, seq, angles).ok_or_else(mismatch)?;
        rope.apply(k, seq, angles).ok_or_else(mismatch)?;
        cache.write(layer, start, k, v);
        let shape = Shape {
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            head_dim: self.head_dim,
            seq,
            start,
            capacity: cache.capacity(),
        };
        let heads = sized(&mut s.heads, seq * q_width);
        let done = match cache.layer(layer) {
            LayerView::F16(ck, cv) => causal(shape, q, ck, cv, heads),
            LayerView::F32(ck, cv) => causal(shape, q, ck, cv, heads),
        };
        if done.is_none() {
            return Err(Error::Inference(format!("attention: buffers do not match {shape:?}")));
        }
        check(stop)?;
        self.output.forward(heads, out, stop)
    }
}
