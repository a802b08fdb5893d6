//! The decoder both supported families run on (Phi-3 and Llama-family), as
//! shared, immutable weights: every sequence brings its own [`State`] (KV
//! cache and buffers), so one loaded model serves any number of them.
//!
//! First written after candle-transformers 0.11.1's `quantized_phi3` and
//! `quantized_llama` (MIT OR Apache-2.0, as this crate); now our own pass
//! over plain `f32` rows (`layers/`), for a phone's memory and speed:
//!
//! - No allocation per token: the buffers belong to the sequence and only
//!   grow when a longer batch than before comes; the KV cache grows in steps
//!   with use instead of being allocated for the whole context.
//! - Token embeddings stay quantized; only the rows a prompt uses are
//!   dequantized (candle dequantizes the whole table: 0.4 GB for Phi-3).
//! - Matmuls run on the weights as loaded (`layers::linear`); candle's
//!   `QMatMul` builds a repacked second copy of each weight on x86 and on
//!   dotprod CPUs (every recent phone): up to twice the weights' memory.
//! - Every row is computed on its own, in a fixed order, so a prompt in one
//!   batch gives exactly the logits it gives token by token, and a chat turn
//!   served from the cache equals a fresh run. (candle's attention and dense
//!   matmul did not: `gemm` sums in an order that depends on the rows.)
//! - A stop is seen between operations and between a prompt matmul's weight
//!   tiles, and leaves the cache as it was.

use super::arch::Family;
use super::error::{Error, Result};
use super::gguf::map::TensorBytes;
use super::kernels;
use super::kv_cache::{self, KvCache, KvPrecision};
use super::layers::attention::{self, Attention, Projections};
use super::layers::linear::Linear;
use super::layers::mlp::{self, Mlp};
use super::layers::norm::RmsNorm;
use super::layers::rope::{Angles, Rope, RopeSpec, RopeStyle};
use super::layers::{add, check, sized, StopCheck};

/// What the forward pass needs from the GGUF metadata (validated in arch).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Which tensors a layer has (fused or split projections, tied output).
    pub family: Family,
    pub rope: RopeStyle,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub eps: f64,
    /// Elements of each head that rotate (partial rotary: fewer than `head_dim`).
    pub rot_dim: usize,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    /// Multiplies rotary cos and sin (LongRoPE's attention factor; else 1).
    pub rope_scale: f32,
    /// LongRoPE: the context the short factors serve; past it, the long ones.
    pub rope_original_context: Option<usize>,
    /// Positions the rotary tables and the cache cover: the context in use.
    pub max_positions: usize,
    pub kv_precision: KvPrecision,
}

struct Layer {
    attn_norm: RmsNorm,
    attention: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

pub(crate) struct Weights {
    cfg: Config,
    embedding: TensorBytes,
    hidden: usize,
    layers: Vec<Layer>,
    output_norm: RmsNorm,
    output: Linear,
    /// The rotation of a sequence no longer than `rope_original_context`
    /// (of every sequence without LongRoPE).
    rope: Rope,
    /// LongRoPE's rotation of a longer sequence.
    rope_long: Option<Rope>,
}

/// What one sequence owns: its KV cache and the buffers of the forward pass.
pub(crate) struct State {
    pub cache: KvCache,
    x: Vec<f32>,
    normed: Vec<f32>,
    branch: Vec<f32>,
    attention: attention::Scratch,
    mlp: mlp::Scratch,
    angles: Angles,
    logits: Vec<f32>,
    /// Whether the cache was computed with LongRoPE's long factors (the
    /// sequence, `Sequence` keeps this in step with its length).
    pub long_rope: bool,
}

/// Tensors by name, as views of the model file.
pub(crate) trait TensorSource {
    fn tensor(&mut self, name: &str) -> Result<TensorBytes>;
    fn has(&self, name: &str) -> bool;
}

/// A norm's weight vector, dequantized (it is small and read every token).
fn norm(t: TensorBytes, eps: f64) -> Result<RmsNorm> {
    let [n] = t.dims[..] else {
        return Err(Error::invalid_model(format!("a norm weight has shape {:?}, not a vector", t.dims)));
    };
    let mut weight = vec![0f32; n];
    kernels::candle::rows(t.dtype, t.bytes(), n, &[0], &mut weight)
        .map_err(|e| Error::invalid_model(format!("cannot load the weights: {e}")))?;
    Ok(RmsNorm::new(weight, eps as f32))
}

/// The forward pass's buffers for `seq` rows of a model with these widths
/// (`vocab`: the logits).
pub(crate) fn scratch_bytes(seq: usize, cfg: &Config, hidden: usize, ff: usize, vocab: usize) -> usize {
    let (q, kv) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
    4 * (seq * (3 * hidden + 3 * q + 4 * kv + 3 * ff) + vocab)
}

/// Rope frequency divisors (Llama 3's `rope_freqs`, LongRoPE's short and
/// long factors): one per rotated pair.
fn rope_factors(src: &mut dyn TensorSource, name: &str, rot_dim: usize) -> Result<Vec<f32>> {
    let t = src.tensor(name)?;
    let n = rot_dim / 2;
    if t.dims[..] != [n] {
        return Err(Error::invalid_model(format!("{name} has shape {:?}, not [{n}]", t.dims)));
    }
    let mut factors = vec![0f32; n];
    kernels::candle::rows(t.dtype, t.bytes(), n, &[0], &mut factors)
        .map_err(|e| Error::invalid_model(format!("cannot load {name}: {e}")))?;
    if factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
        return Err(Error::invalid_model(format!("{name} holds a factor that is not a positive number")));
    }
    Ok(factors)
}

impl Weights {
    pub fn load(cfg: Config, layers: usize, src: &mut dyn TensorSource) -> Result<Self> {
        let kernels = kernels::selected().map_err(|e| Error::param("PHI_MOBILE_KERNELS", e.0))?;
        let linear = |t: TensorBytes| Linear::new(t, kernels);
        let embedding = src.tensor("token_embd.weight")?;
        let hidden = embedding.dims2("token_embd.weight")?.1;
        let output_norm = norm(src.tensor("output_norm.weight")?, cfg.eps)?;
        // Without `output.weight` the output projection is the embedding
        // (tied: small Llamas, Phi-4-mini), still quantized.
        let output =
            if src.has("output.weight") { linear(src.tensor("output.weight")?)? } else { linear(embedding.clone())? };
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let mut w = |t: &str| -> Result<Linear> { linear(src.tensor(&format!("blk.{i}.{t}.weight"))?) };
            let (projections, mlp) = match cfg.family {
                Family::Phi3 => {
                    (Projections::Fused(w("attn_qkv")?), Mlp::Fused { gate_up: w("ffn_up")?, down: w("ffn_down")? })
                }
                Family::Llama => (
                    Projections::Split { q: w("attn_q")?, k: w("attn_k")?, v: w("attn_v")? },
                    Mlp::Split { gate: w("ffn_gate")?, up: w("ffn_up")?, down: w("ffn_down")? },
                ),
            };
            let attention = Attention {
                projections,
                output: w("attn_output")?,
                n_head: cfg.n_head,
                n_kv_head: cfg.n_kv_head,
                head_dim: cfg.head_dim,
            };
            blocks.push(Layer {
                attn_norm: norm(src.tensor(&format!("blk.{i}.attn_norm.weight"))?, cfg.eps)?,
                ffn_norm: norm(src.tensor(&format!("blk.{i}.ffn_norm.weight"))?, cfg.eps)?,
                attention,
                mlp,
            });
        }
        let spec = |freq_factors| RopeSpec {
            style: cfg.rope,
            head_dim: cfg.head_dim,
            rot_dim: cfg.rot_dim,
            base: cfg.rope_base,
            freq_scale: cfg.rope_freq_scale,
            freq_factors,
            scale: cfg.rope_scale,
        };
        let (rope, rope_long) = if cfg.rope_original_context.is_some() {
            let short = rope_factors(src, "rope_factors_short.weight", cfg.rot_dim)?;
            let long = rope_factors(src, "rope_factors_long.weight", cfg.rot_dim)?;
            (Rope::new(spec(Some(&short))), Some(Rope::new(spec(Some(&long)))))
        } else if src.has("rope_freqs.weight") {
            (Rope::new(spec(Some(&rope_factors(src, "rope_freqs.weight", cfg.rot_dim)?))), None)
        } else {
            (Rope::new(spec(None)), None)
        };
        Ok(Self { cfg, embedding, hidden, layers: blocks, output_norm, output, rope, rope_long })
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Whether a sequence of `len` tokens is rotated with LongRoPE's long
    /// factors: once it is longer than the original context, as in
    /// transformers' Phi-3 (whose generate then recomputes the whole cache).
    pub fn long_rope_for(&self, len: usize) -> bool {
        self.cfg.rope_original_context.is_some_and(|original| len > original)
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// KV-cache bytes per position, all layers.
    pub fn kv_bytes_per_token(&self) -> usize {
        kv_cache::bytes_per_position(self.layers.len(), self.cfg.n_kv_head, self.cfg.head_dim, self.cfg.kv_precision)
    }

    /// The forward pass's buffers for `seq` rows at once (a prompt chunk):
    /// the residual rows, q/k/v and attention outputs, the MLP's, and logits.
    pub fn scratch_bytes(&self, seq: usize) -> usize {
        let ff = self.layers.first().map_or(0, |l| l.mlp.width());
        scratch_bytes(seq, &self.cfg, self.hidden, ff, self.output.outputs())
    }

    /// A fresh sequence's state: nothing allocated until it runs.
    pub fn new_state(&self) -> State {
        State {
            cache: KvCache::new(
                self.layers.len(),
                self.cfg.n_kv_head,
                self.cfg.head_dim,
                self.cfg.max_positions,
                self.cfg.kv_precision,
            ),
            x: Vec::new(),
            normed: Vec::new(),
            branch: Vec::new(),
            attention: Default::default(),
            mlp: Default::default(),
            angles: Angles::default(),
            logits: Vec::new(),
            long_rope: false,
        }
    }

    /// Runs `ids` at positions `pos..` (forgetting any cached position at or
    /// past `pos`); returns the last position's logits. On `Err` — a stop
    /// (`Cancelled`) included — the cache holds what it held before, up to `pos`.
    pub fn forward<'s>(&self, state: &'s mut State, ids: &[u32], pos: usize, stop: StopCheck<'_>) -> Result<&'s [f32]> {
        let seq = ids.len();
        if seq == 0 {
            return Err(Error::Inference("forward: no tokens".into()));
        }
        if pos > state.cache.len() {
            return Err(Error::Inference(format!("forward at {pos}: only {} positions are cached", state.cache.len())));
        }
        state.cache.truncate(pos);
        state.cache.reserve(pos + seq)?;
        let h = self.hidden;
        let State { cache, x, normed, branch, attention, mlp, angles, logits, long_rope } = state;
        let rope = if *long_rope { self.rope_long.as_ref().unwrap_or(&self.rope) } else { &self.rope };
        rope.angles(pos, seq, angles);
        let x = sized(x, seq * h);
        kernels::candle::rows(self.embedding.dtype, self.embedding.bytes(), h, ids, x)?;
        let normed = sized(normed, seq * h);
        let branch = sized(branch, seq * h);
        for (i, layer) in self.layers.iter().enumerate() {
            check(stop)?;
            layer.attn_norm.forward(x, normed);
            layer.attention.forward(i, normed, pos, (rope, angles), cache, attention, branch, stop)?;
            add(x, branch);
            layer.ffn_norm.forward(x, normed);
            layer.mlp.forward(normed, mlp, branch, stop)?;
            add(x, branch);
        }
        let last = &mut normed[..h];
        self.output_norm.forward(&x[(seq - 1) * h..], last);
        let logits = sized(logits, self.output.outputs());
        self.output.forward(last, logits, stop)?;
        cache.set_len(pos + seq);
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::model::{LoadConfig, LoadedModel};
    use super::*;

    fn smollm2() -> LoadedModel {
        let cfg = LoadConfig {
            model_path: crate::engine::test_fixture("SmolLM2-135M-Instruct.Q4_1.gguf"),
            ..Default::default()
        };
        LoadedModel::load(&cfg, &mut |_, _| Ok(true)).unwrap()
    }

    /// A stop that says yes from its `n`th question on, counting them.
    fn stop_at(n: usize, asked: &AtomicUsize) -> impl Fn() -> bool + Sync + '_ {
        move || asked.fetch_add(1, Ordering::Relaxed) >= n
    }

    #[test]
    fn a_stop_anywhere_in_a_prompt_leaves_the_cache_as_it_was() {
        let model = smollm2();
        let weights = &model.weights;
        let (first, prompt): (Vec<u32>, Vec<u32>) = ((1..9).collect(), (100..140).collect());
        let mut fresh = weights.new_state();
        weights.forward(&mut fresh, &first, 0, &|| false).unwrap();
        let want = weights.forward(&mut fresh, &prompt, first.len(), &|| false).unwrap().to_vec();

        // Count the checks one uninterrupted pass makes, then stop at each
        // tenth of the way (between layers, operations and weight tiles).
        let asked = AtomicUsize::new(0);
        let mut state = weights.new_state();
        weights.forward(&mut state, &first, 0, &|| false).unwrap();
        weights.forward(&mut state, &prompt, first.len(), &stop_at(usize::MAX, &asked)).unwrap();
        let checks = asked.load(Ordering::Relaxed);
        assert!(checks > 30 * 8, "a stop is seen at least between the operations: {checks} checks");
        for n in (0..checks).step_by(checks / 10) {
            let asked = AtomicUsize::new(0);
            let r = weights.forward(&mut state, &prompt, first.len(), &stop_at(n, &asked));
            assert!(matches!(r, Err(Error::Cancelled)), "stopped at check {n}");
            assert_eq!(state.cache.len(), first.len(), "the cache is as it was");
            // The same state then runs the prompt as if nothing had happened.
            let got = weights.forward(&mut state, &prompt, first.len(), &|| false).unwrap();
            assert_eq!(got, &want[..], "after a stop at check {n}");
            state.cache.truncate(first.len());
        }
    }
}
