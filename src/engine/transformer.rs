//! The decoder both supported families run on (Phi-3 and Llama-family),
//! adapted from candle-transformers 0.11.1's `quantized_phi3` and
//! `quantized_llama` (MIT OR Apache-2.0, as this crate) for a phone's memory:
//!
//! - The KV cache grows with use, in 256-position steps, instead of being
//!   allocated for the whole context up front (3.2 GB for Phi-3-mini at 4096
//!   in f32, whatever the conversation's length).
//! - Token embeddings stay quantized; only the rows a prompt uses are
//!   dequantized (candle dequantizes the whole table to f32: 0.4 GB for Phi-3).
//! - Quantized matmuls run on the weights as loaded: our kernels (`kernels/`)
//!   where they cover the type, candle's plain kernels otherwise (or for
//!   every type with `PHI_MOBILE_KERNELS=candle`).
//!   candle's `QMatMul` builds a repacked second copy of each weight on first
//!   use on x86 (Q4_K, and Q6_K for batches) and on aarch64 CPUs with dotprod
//!   (every recent phone), keeping both copies: up to twice the weights' memory.
//!
//! - Attention is ours (`kernels::attention`): each query row over the KV
//!   cache in place, grouped-query heads without `repeat_kv` copies.
//!
//! Outside the matmuls and attention the arithmetic is candle's, row by row.
//! The matmul kernels and attention compute each row on its own, so a prompt
//! processed in one batch gives exactly the logits it gives token by token:
//! a chat turn served from the cache equals a fresh run. (candle's attention
//! did not: its `gemm` sums in an order that depends on the rows.) (A measured
//! alternative for prefill — dequantizing weight tiles to f32 and running
//! gemm — was 25 % faster but changed greedy ids between the two; see
//! docs/PERFORMANCE.md.)

use std::sync::Arc;

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor, D};
use candle_nn::RmsNorm;

use super::kernels;

/// Growth step of the KV cache, in positions.
const KV_STEP: usize = 256;

/// What the forward pass needs from the GGUF metadata (validated in model.rs).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Phi-3: fused `attn_qkv` and gate|up `ffn_up`, neox rope.
    /// Llama: separate projections, interleaved rope.
    pub fused: bool,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ff: usize,
    pub eps: f64,
    pub rope_base: f32,
    /// Positions the rotary tables cover: the context in use.
    pub max_positions: usize,
}

/// A weight matrix `[out, in]` applied as `x @ w^T`.
#[derive(Clone)]
enum Linear {
    /// Quantized, on the weights as loaded: our kernels where they cover the
    /// type, candle's plain (non-repacking) ones otherwise.
    Quantized(Arc<PlainQMatMul>),
    /// f32/f16/bf16 weights: candle's dense matmul, as before.
    Dense(QMatMul),
}

impl Linear {
    fn new(w: Arc<QTensor>) -> candle_core::Result<Self> {
        Ok(match w.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => Linear::Dense(QMatMul::from_arc(w)?),
            _ => Linear::Quantized(Arc::new(PlainQMatMul::new(w)?)),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Quantized(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref()),
            Linear::Dense(m) => m.forward(x),
        }
    }
}

/// `x @ w^T` for a quantized `w`: through `kernels::matmul` where our kernels
/// cover its type, else through `k_quants::matmul`, the kernels candle uses
/// when it does not repack (decode: column quads across threads; prefill:
/// row tiles kept hot in L1).
struct PlainQMatMul {
    w: Arc<QTensor>,
}

impl PlainQMatMul {
    fn new(w: Arc<QTensor>) -> candle_core::Result<Self> {
        if !w.device().is_cpu() {
            candle_core::bail!("plain quantized matmul runs on the CPU only");
        }
        w.shape().dims2()?;
        Ok(Self { w })
    }

    fn blocks<T: GgmlType>(&self) -> candle_core::Result<&[T]> {
        let data = self.w.data()?;
        let std::borrow::Cow::Borrowed(bytes) = data else {
            candle_core::bail!("quantized weights are not in CPU memory");
        };
        let size = std::mem::size_of::<T>();
        if !bytes.len().is_multiple_of(size) || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
            candle_core::bail!("quantized weights have an unexpected layout");
        }
        // SAFETY: candle stores a CPU QTensor of this dtype as a Vec<T>
        // (checked: size and alignment), and `self.w` keeps it alive.
        Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) })
    }
}

impl CustomOp1 for PlainQMatMul {
    fn name(&self) -> &'static str {
        "plain-qmatmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = self.w.shape().dims2()?;
        let dims = layout.shape().dims();
        let Some((&last, batch)) = dims.split_last() else {
            candle_core::bail!("plain-qmatmul: a scalar input");
        };
        if last != k || !layout.is_contiguous() {
            candle_core::bail!("plain-qmatmul: input {dims:?} does not match weight [{n}, {k}]");
        }
        let m: usize = batch.iter().product();
        let lhs = &storage.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
        let mut dst = vec![0f32; m * n];
        let mkn = (m, k, n);
        let mut out = batch.to_vec();
        out.push(n);
        // Our kernels (the default) where they cover the type, candle's otherwise.
        if let Ok(kernels::Kernels::Ours(variant)) = kernels::selected() {
            if let std::borrow::Cow::Borrowed(bytes) = self.w.data()? {
                if kernels::matmul(variant, self.w.dtype(), mkn, lhs, bytes, &mut dst).is_some() {
                    return Ok((CpuStorage::F32(dst), Shape::from(out)));
                }
            }
        }
        macro_rules! run {
            ($($dt:ident => $t:ty),* $(,)?) => {
                match self.w.dtype() {
                    $(GgmlDType::$dt => k_quants::matmul::<$t>(mkn, lhs, self.blocks::<$t>()?, &mut dst)?,)*
                    other => candle_core::bail!("plain-qmatmul: weight type {other:?} is not supported"),
                }
            };
        }
        use candle_core::quantized::k_quants::*;
        run!(
            Q4_0 => BlockQ4_0, Q4_1 => BlockQ4_1, Q5_0 => BlockQ5_0, Q5_1 => BlockQ5_1, Q8_0 => BlockQ8_0,
            Q2K => BlockQ2K, Q3K => BlockQ3K, Q4K => BlockQ4K, Q5K => BlockQ5K, Q6K => BlockQ6K,
        );
        Ok((CpuStorage::F32(dst), Shape::from(out)))
    }
}

/// One layer's keys and values, stored `[1, kv_heads, capacity, head_dim]`
/// and grown in `KV_STEP`s up to the context.
#[derive(Default)]
struct KvCache {
    kv: Option<(Tensor, Tensor)>,
    len: usize,
}

/// A clone starts empty: the cache is written in place, so two models must
/// never share one (each sequence clones the never-run loaded model).
impl Clone for KvCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl KvCache {
    fn append(&mut self, k: &Tensor, v: &Tensor, max: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, heads, seq, hd) = k.dims4()?;
        let needed = self.len + seq;
        if needed > max {
            candle_core::bail!("KV cache: {needed} positions exceed the context of {max}");
        }
        let capacity = self.kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0));
        if needed > capacity {
            // Linear steps: a doubling would allocate up to twice what a long
            // chat needs; the copies cost far less than a forward pass.
            let new_capacity = needed.next_multiple_of(KV_STEP).min(max);
            let grow = |old: Option<&Tensor>| -> candle_core::Result<Tensor> {
                let t = Tensor::zeros((b, heads, new_capacity, hd), k.dtype(), k.device())?;
                if let Some(old) = old {
                    if self.len > 0 {
                        t.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(t)
            };
            let old = self.kv.take();
            let nk = grow(old.as_ref().map(|(k, _)| k))?;
            let nv = grow(old.as_ref().map(|(_, v)| v))?;
            self.kv = Some((nk, nv));
        }
        let (ck, cv) = self.kv.as_ref().expect("allocated above");
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((ck.narrow(2, 0, needed)?, cv.narrow(2, 0, needed)?))
    }
}

#[derive(Clone)]
enum Attention {
    Fused { qkv: Linear },
    Split { q: Linear, k: Linear, v: Linear },
}

#[derive(Clone)]
enum Mlp {
    /// Phi-3: `ffn_up` holds gate|up.
    Fused {
        gate_up: Linear,
        down: Linear,
    },
    Split {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

#[derive(Clone)]
struct Layer {
    attn_norm: RmsNorm,
    attention: Attention,
    attn_output: Linear,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    cache: KvCache,
}

/// Weights (shared between clones) plus one KV cache per layer (each clone's
/// own: a clone of a fresh model has empty caches).
#[derive(Clone)]
pub(crate) struct Transformer {
    cfg: Arc<Config>,
    embedding: Arc<QTensor>,
    layers: Vec<Layer>,
    output_norm: RmsNorm,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// Reads tensors by name from the GGUF as the loader provides them.
pub(crate) trait TensorSource {
    fn tensor(&mut self, name: &str) -> candle_core::Result<QTensor>;
    fn has(&self, name: &str) -> bool;
}

fn norm(t: QTensor, eps: f64) -> candle_core::Result<RmsNorm> {
    Ok(RmsNorm::new(t.dequantize(&Device::Cpu)?, eps))
}

impl Transformer {
    pub(crate) fn load(cfg: Config, layers: usize, src: &mut dyn TensorSource) -> candle_core::Result<Self> {
        let embedding = Arc::new(src.tensor("token_embd.weight")?);
        let output_norm = norm(src.tensor("output_norm.weight")?, cfg.eps)?;
        // Llama-family files may tie the output projection to the embedding.
        let output = if cfg.fused || src.has("output.weight") {
            Linear::new(Arc::new(src.tensor("output.weight")?))?
        } else {
            Linear::new(embedding.clone())?
        };
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let mut w = |t: &str| -> candle_core::Result<Arc<QTensor>> {
                Ok(Arc::new(src.tensor(&format!("blk.{i}.{t}.weight"))?))
            };
            let attention = if cfg.fused {
                Attention::Fused { qkv: Linear::new(w("attn_qkv")?)? }
            } else {
                Attention::Split {
                    q: Linear::new(w("attn_q")?)?,
                    k: Linear::new(w("attn_k")?)?,
                    v: Linear::new(w("attn_v")?)?,
                }
            };
            let mlp = if cfg.fused {
                Mlp::Fused { gate_up: Linear::new(w("ffn_up")?)?, down: Linear::new(w("ffn_down")?)? }
            } else {
                Mlp::Split {
                    gate: Linear::new(w("ffn_gate")?)?,
                    up: Linear::new(w("ffn_up")?)?,
                    down: Linear::new(w("ffn_down")?)?,
                }
            };
            let attn_output = Linear::new(w("attn_output")?)?;
            blocks.push(Layer {
                attn_norm: norm(src.tensor(&format!("blk.{i}.attn_norm.weight"))?, cfg.eps)?,
                ffn_norm: norm(src.tensor(&format!("blk.{i}.ffn_norm.weight"))?, cfg.eps)?,
                attention,
                attn_output,
                mlp,
                cache: KvCache::default(),
            });
        }
        let (cos, sin) = rotary_tables(cfg.head_dim, cfg.max_positions, cfg.rope_base)?;
        Ok(Self { cfg: Arc::new(cfg), embedding, layers: blocks, output_norm, output, cos, sin })
    }

    /// Runs `ids` at positions `index_pos..`; returns the last position's
    /// logits `[vocab]`. `index_pos == 0` starts over (keeping the cache's
    /// memory for reuse).
    pub(crate) fn forward(&mut self, ids: &[u32], index_pos: usize) -> candle_core::Result<Tensor> {
        let seq_len = ids.len();
        if seq_len == 0 {
            candle_core::bail!("forward: no tokens");
        }
        if index_pos == 0 {
            for layer in &mut self.layers {
                layer.cache.len = 0;
            }
        }
        let ids_t = Tensor::new(ids, &Device::Cpu)?;
        let mut xs = self.embedding.embedding(&ids_t)?.unsqueeze(0)?;
        let cfg = self.cfg.clone();
        for layer in &mut self.layers {
            let residual = &xs;
            let ys = xs.apply(&layer.attn_norm)?;
            let ys = attention(&cfg, layer, &ys, index_pos, &self.cos, &self.sin)?;
            let ys = (ys + residual)?;
            let residual = &ys;
            let h = ys.apply(&layer.ffn_norm)?;
            let h = match &layer.mlp {
                Mlp::Fused { gate_up, down } => {
                    let up_states = gate_up.forward(&h)?;
                    let gate = up_states.narrow(D::Minus1, 0, cfg.ff)?;
                    let up = up_states.narrow(D::Minus1, cfg.ff, cfg.ff)?;
                    down.forward(&(up * gate.silu()?)?)?
                }
                Mlp::Split { gate, up, down } => {
                    let g = candle_nn::ops::silu(&gate.forward(&h)?)?;
                    down.forward(&(g * up.forward(&h)?)?)?
                }
            };
            xs = (h + residual)?;
        }
        let xs = xs.apply(&self.output_norm)?.narrow(1, seq_len - 1, 1)?.squeeze(1)?;
        self.output.forward(&xs)?.squeeze(0)
    }
}

fn attention(
    cfg: &Config,
    layer: &mut Layer,
    x: &Tensor,
    index_pos: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, seq_len, _) = x.dims3()?;
    let (q, k, v) = match &layer.attention {
        Attention::Fused { qkv } => {
            let qkv = qkv.forward(x)?;
            let q_size = cfg.n_head * cfg.head_dim;
            let kv_size = cfg.n_kv_head * cfg.head_dim;
            (
                qkv.narrow(D::Minus1, 0, q_size)?,
                qkv.narrow(D::Minus1, q_size, kv_size)?,
                qkv.narrow(D::Minus1, q_size + kv_size, kv_size)?,
            )
        }
        Attention::Split { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
    };
    let q = q.reshape((b, seq_len, cfg.n_head, cfg.head_dim))?.transpose(1, 2)?;
    let k = k.reshape((b, seq_len, cfg.n_kv_head, cfg.head_dim))?.transpose(1, 2)?;
    let v = v.reshape((b, seq_len, cfg.n_kv_head, cfg.head_dim))?.transpose(1, 2)?.contiguous()?;

    let cos = cos.narrow(0, index_pos, seq_len)?;
    let sin = sin.narrow(0, index_pos, seq_len)?;
    let rope = |t: &Tensor| -> candle_core::Result<Tensor> {
        let t = t.contiguous()?;
        if cfg.fused {
            candle_nn::rotary_emb::rope(&t, &cos, &sin)
        } else {
            // GGUF stores Llama's q/k rows permuted for interleaved rotation.
            candle_nn::rotary_emb::rope_i(&t, &cos, &sin)
        }
    };
    let q = rope(&q)?.contiguous()?;
    let k = rope(&k)?;

    let start = layer.cache.len;
    layer.cache.append(&k, &v, cfg.max_positions)?;
    let (ck, cv) = layer.cache.kv.as_ref().expect("appended above");
    let shape = kernels::attention::Shape {
        n_head: cfg.n_head,
        n_kv_head: cfg.n_kv_head,
        head_dim: cfg.head_dim,
        seq: seq_len,
        start,
        capacity: ck.dim(2)?,
    };
    let mut out = vec![0f32; seq_len * cfg.n_head * cfg.head_dim];
    let done =
        with_f32(&q, |q| with_f32(ck, |k| with_f32(cv, |v| kernels::attention::causal(shape, q, k, v, &mut out))))???;
    if done.is_none() {
        candle_core::bail!("attention: tensors do not match {shape:?}");
    }
    let y = Tensor::from_vec(out, (b, seq_len, cfg.n_head * cfg.head_dim), x.device())?;
    layer.attn_output.forward(&y)
}

/// `f` on a contiguous f32 CPU tensor's elements, borrowed in place.
fn with_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> candle_core::Result<T> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("attention runs on the CPU only");
    };
    let Some((from, to)) = layout.contiguous_offsets() else {
        candle_core::bail!("attention: a non-contiguous tensor");
    };
    Ok(f(&cpu.as_slice::<f32>()?[from..to]))
}

fn rotary_tables(head_dim: usize, positions: usize, base: f32) -> candle_core::Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / head_dim as f32)).collect();
    let theta = Tensor::new(theta.as_slice(), &Device::Cpu)?;
    let idx_theta = Tensor::arange(0, positions as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?
        .matmul(&theta.reshape((1, theta.elem_count()))?)?;
    Ok((idx_theta.cos()?, idx_theta.sin()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(seq: usize, start: f32) -> Tensor {
        let data: Vec<f32> = (0..2 * seq * 4).map(|i| start + i as f32).collect();
        Tensor::from_vec(data, (1, 2, seq, 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn kv_cache_grows_in_steps_keeps_its_contents_and_stops_at_the_context() {
        let mut cache = KvCache::default();
        let capacity = |c: &KvCache| c.kv.as_ref().map(|(k, _)| k.dim(2).unwrap());
        assert_eq!(capacity(&cache), None, "nothing is allocated before use");

        let a = filled(3, 0.0);
        let (k, _) = cache.append(&a, &a, 600).unwrap();
        assert_eq!(capacity(&cache), Some(KV_STEP));
        assert_eq!(k.dims(), &[1, 2, 3, 4]);

        // Crossing the step grows the buffer (linearly) and keeps what was there.
        let b = filled(KV_STEP, 1000.0);
        let (k, v) = cache.append(&b, &b, 600).unwrap();
        assert_eq!(capacity(&cache), Some(2 * KV_STEP));
        assert_eq!(k.dims(), &[1, 2, 3 + KV_STEP, 4]);
        let head0: Vec<Vec<f32>> = k.squeeze(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        let a0: Vec<Vec<f32>> = a.squeeze(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        let b0: Vec<Vec<f32>> = b.squeeze(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        assert_eq!(&head0[..3], &a0[..]);
        assert_eq!(&head0[3..], &b0[..]);
        assert_eq!(v.dims(), k.dims());

        // The last step is capped at the context; beyond it is an error.
        let c = filled(600 - 3 - KV_STEP, 5000.0);
        cache.append(&c, &c, 600).unwrap();
        assert_eq!(capacity(&cache), Some(600));
        assert!(cache.append(&filled(1, 0.0), &filled(1, 0.0), 600).is_err());

        // A clone never shares the buffer that is written in place.
        assert_eq!(capacity(&cache.clone()), None);
    }
}
