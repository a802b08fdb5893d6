//! The architectures we run and their hyperparameters, read from the GGUF
//! metadata and checked against each other and the tensor shapes.

use candle_core::quantized::gguf_file::Content;

use super::error::{Error, Result};
use super::gguf::shape_of;
use super::kv_cache::KvPrecision;
use super::layers::rope::RopeStyle;
use super::weights;

/// Upper bound on a context we accept from a file, far above any model we
/// can run but low enough that position tables cannot exhaust memory.
const MAX_CONTEXT: usize = 1 << 20;
/// candle's quantized llama precomputes rotary tables for 4096 positions,
/// which the tests and apps have relied on so far.
const LLAMA_MAX_CONTEXT: usize = 4096;
/// Upper bound on a hidden/feed-forward size or head count in the metadata.
const MAX_DIM: usize = 1 << 24;

/// Transformer hyperparameters, checked against each other and against the
/// tensor shapes, so a file whose metadata lies fails here rather than deep
/// inside a matmul.
pub(crate) struct Hyper {
    pub context_length: usize,
    /// Rows of the embedding: the largest token id the model accepts + 1.
    pub vocab_rows: usize,
    hidden: usize,
    pub layers: usize,
    ff: usize,
    heads: usize,
    kv_heads: usize,
    eps: f64,
    /// Elements of each head that rotate (Phi-4-mini: 96 of 128).
    rot_dim: usize,
    rope_base: f32,
    /// Linear rope scaling: positions are multiplied by this (1: none).
    rope_freq_scale: f32,
    /// Multiplies rotary cos and sin (`rope.scaling.attn_factor`).
    rope_scale: f32,
    /// LongRoPE (`rope_factors_short/long.weight`): the original context.
    rope_original_context: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Family {
    /// Fused `attn_qkv` and `ffn_up` (gate|up), neox rope (maybe partial),
    /// optional LongRoPE factors and tied output.
    Phi3,
    /// Separate q/k/v and gate/up, interleaved rope, optional tied output.
    Llama,
}

impl Family {
    /// The family of a GGUF `general.architecture`.
    pub fn of(arch: &str) -> Result<Self> {
        match arch {
            "phi3" => Ok(Family::Phi3),
            "llama" => Ok(Family::Llama),
            other => Err(Error::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The longest context our implementation of the family runs.
    pub fn max_context(self, hp: &Hyper) -> usize {
        match self {
            Family::Phi3 => hp.context_length,
            Family::Llama => LLAMA_MAX_CONTEXT,
        }
    }

    /// The decoder's configuration for `hp` at `context` positions.
    pub fn weights_config(self, hp: &Hyper, context: usize, kv_precision: KvPrecision) -> weights::Config {
        weights::Config {
            family: self,
            rope: match self {
                Family::Phi3 => RopeStyle::Neox,
                Family::Llama => RopeStyle::Interleaved,
            },
            n_head: hp.heads,
            n_kv_head: hp.kv_heads,
            head_dim: hp.hidden / hp.heads,
            eps: hp.eps,
            rot_dim: hp.rot_dim,
            rope_base: hp.rope_base,
            rope_freq_scale: hp.rope_freq_scale,
            rope_scale: hp.rope_scale,
            rope_original_context: hp.rope_original_context,
            max_positions: context,
            kv_precision,
        }
    }
}

impl Hyper {
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn feed_forward(&self) -> usize {
        self.ff
    }

    pub fn read(c: &Content, arch: &str, family: Family) -> Result<Self> {
        let get = |key: &str| -> Result<usize> {
            let full = format!("{arch}.{key}");
            let v = c.metadata.get(&full).ok_or_else(|| Error::invalid_model(format!("missing metadata {full}")))?;
            let n = v
                .to_u32()
                .map(|n| n as u64)
                .or_else(|_| v.to_u64())
                .map_err(|_| Error::invalid_model(format!("metadata {full} is not an unsigned integer")))?;
            usize::try_from(n).map_err(|_| Error::invalid_model(format!("metadata {full} is too large")))
        };
        let hidden = get("embedding_length")?;
        let layers = get("block_count")?;
        let heads = get("attention.head_count")?;
        let kv_heads = get("attention.head_count_kv")?;
        let ff = get("feed_forward_length")?;
        let ctx = get("context_length")?;
        let rope_dim = get("rope.dimension_count")?;
        let eps_key = format!("{arch}.attention.layer_norm_rms_epsilon");
        let eps = c
            .metadata
            .get(&eps_key)
            .and_then(|v| v.to_f32().ok())
            .ok_or_else(|| Error::invalid_model(format!("missing metadata {eps_key} (RMS-norm epsilon)")))?;

        let bad = |why: String| Err(Error::invalid_model(why));
        if hidden == 0 || layers == 0 || heads == 0 || kv_heads == 0 || ff == 0 {
            return bad(format!("a {arch} dimension in the metadata is zero"));
        }
        // Bounds before any arithmetic or allocation sized by them: a layer
        // is several tensors, and no real dimension nears 2^24.
        if [hidden, heads, kv_heads, ff].iter().any(|&d| d > MAX_DIM) {
            return bad(format!("a {arch} dimension in the metadata exceeds {MAX_DIM}"));
        }
        if layers > c.tensor_infos.len() {
            return bad(format!("{layers} layers declared but the file has only {} tensors", c.tensor_infos.len()));
        }
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return bad(format!("{heads} heads / {kv_heads} KV heads do not divide the hidden size {hidden}"));
        }
        let head_dim = hidden / heads;
        // Partial rotary (Phi-4-mini) turns the first `rope_dim` of a head.
        let rot_fits = if family == Family::Phi3 { rope_dim <= head_dim } else { rope_dim == head_dim };
        if !rot_fits || rope_dim == 0 || rope_dim % 2 != 0 {
            let most = if family == Family::Phi3 { "at most" } else { "equal to" };
            return bad(format!("rope dimension {rope_dim} must be even and {most} the head size {head_dim}"));
        }
        if ctx == 0 || ctx > MAX_CONTEXT {
            return bad(format!("context length {ctx} is out of range"));
        }
        if !eps.is_finite() || eps <= 0.0 {
            return bad(format!("RMS-norm epsilon {eps} is not a positive number"));
        }
        let freq_base = c.metadata.get(&format!("{arch}.rope.freq_base")).and_then(|v| v.to_f32().ok());
        if freq_base.is_some_and(|b| !b.is_finite() || b <= 1.0) {
            return bad(format!("rope base {freq_base:?} is out of range"));
        }
        if family == Family::Llama
            && c.metadata.get(&format!("{arch}.expert_count")).is_some_and(|v| v.to_u32().is_ok_and(|n| n > 1))
        {
            return Err(Error::UnsupportedArchitecture(format!("{arch} mixture-of-experts")));
        }
        let rope_original_context = long_rope(c, arch, family, ctx)?;
        let rope_freq_scale = rope_scaling(c, arch, rope_original_context.is_some())?;
        let rope_scale = rope_attn_factor(c, arch, ctx, rope_original_context)?;
        refuse_unimplemented_math(c, arch, head_dim)?;

        let vocab = shape_of(c, "token_embd.weight")?.first().copied().unwrap_or(0);
        let kv = kv_heads * head_dim;
        let mut expect: Vec<(String, Vec<usize>)> =
            vec![("token_embd.weight".into(), vec![vocab, hidden]), ("output_norm.weight".into(), vec![hidden])];
        // Without `output.weight` the output is tied to the embedding.
        if c.tensor_infos.contains_key("output.weight") {
            expect.push(("output.weight".into(), vec![vocab, hidden]));
        }
        // One divisor per rotated pair: Llama 3's rope scaling, LongRoPE's.
        let factors = if rope_original_context.is_some() {
            &["rope_factors_short.weight", "rope_factors_long.weight"][..]
        } else {
            &["rope_freqs.weight"][..]
        };
        for name in factors.iter().filter(|n| c.tensor_infos.contains_key(**n)) {
            expect.push((name.to_string(), vec![rope_dim / 2]));
        }
        for i in 0..layers {
            let b = |t: &str| format!("blk.{i}.{t}.weight");
            expect.extend([
                (b("attn_norm"), vec![hidden]),
                (b("attn_output"), vec![hidden, hidden]),
                (b("ffn_norm"), vec![hidden]),
                (b("ffn_down"), vec![hidden, ff]),
            ]);
            match family {
                Family::Phi3 => {
                    expect.extend([(b("attn_qkv"), vec![hidden + 2 * kv, hidden]), (b("ffn_up"), vec![2 * ff, hidden])])
                    // (hidden + 2·kv: grouped-query attention, Phi-3-medium and Phi-4-mini)
                }
                Family::Llama => expect.extend([
                    (b("attn_q"), vec![hidden, hidden]),
                    (b("attn_k"), vec![kv, hidden]),
                    (b("attn_v"), vec![kv, hidden]),
                    (b("ffn_gate"), vec![ff, hidden]),
                    (b("ffn_up"), vec![ff, hidden]),
                ]),
            }
        }
        for (name, want) in &expect {
            let got = shape_of(c, name)?;
            if got != want.as_slice() {
                return bad(format!("tensor {name} has shape {got:?}, the metadata implies {want:?}"));
            }
        }
        // Any other tensor (q/k norms, biases, …) is math this decoder would
        // skip: refused by name.
        let mut names: Vec<&String> = c.tensor_infos.keys().collect();
        names.sort();
        if let Some(extra) = names.into_iter().find(|n| !expect.iter().any(|(name, _)| name == *n)) {
            return Err(Error::UnsupportedArchitecture(format!(
                "{arch} with tensor {extra}, which this implementation does not use"
            )));
        }
        Ok(Self {
            context_length: ctx,
            vocab_rows: vocab,
            hidden,
            layers,
            ff,
            heads,
            kv_heads,
            eps: eps as f64,
            rot_dim: rope_dim,
            rope_base: freq_base.unwrap_or(10_000.0),
            rope_freq_scale,
            rope_scale,
            rope_original_context,
        })
    }
}

/// The position scale of the file's rope scaling, as llama.cpp reads it:
/// linear unless the type says otherwise, `1/factor` (no factor: 1). Llama
/// 3's scaling is the `rope_freqs.weight` tensor, which the decoder applies.
/// LongRoPE is its factor tensors (`long_rope`). Any other kind (YaRN, …) is
/// refused by name, never ignored.
fn rope_scaling(c: &Content, arch: &str, long_rope: bool) -> Result<f32> {
    let meta = |key: &str| c.metadata.get(&format!("{arch}.{key}"));
    let kind = match meta("rope.scaling.type") {
        None => "linear".to_string(),
        Some(v) => v.to_string().map_err(|_| Error::invalid_model("rope.scaling.type is not a string"))?.clone(),
    };
    let factor = meta("rope.scaling.factor").or_else(|| meta("rope.scale_linear")).and_then(|v| v.to_f32().ok());
    match kind.as_str() {
        "none" => Ok(1.0),
        "linear" => linear(factor.filter(|f| *f != 0.0).unwrap_or(1.0)),
        "longrope" | "su" if long_rope => Ok(1.0),
        other => Err(Error::UnsupportedArchitecture(format!("{arch} with {other} rope scaling"))),
    }
}

/// LongRoPE (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini): the original
/// context when the file has both factor tensors, as llama.cpp's converter
/// writes them. Only phi3 files have them (elsewhere they are unknown
/// tensors, refused by name).
fn long_rope(c: &Content, arch: &str, family: Family, ctx: usize) -> Result<Option<usize>> {
    let has = |name: &str| c.tensor_infos.contains_key(name);
    match (has("rope_factors_short.weight"), has("rope_factors_long.weight")) {
        _ if family != Family::Phi3 => return Ok(None),
        (false, false) => return Ok(None),
        (true, true) => {}
        _ => return Err(Error::invalid_model("LongRoPE needs both rope_factors_short and rope_factors_long")),
    }
    let key = format!("{arch}.rope.scaling.original_context_length");
    let original = c
        .metadata
        .get(&key)
        .and_then(|v| v.to_u32().ok())
        .ok_or_else(|| Error::invalid_model(format!("LongRoPE factors without {key}")))? as usize;
    if original == 0 || original > ctx {
        return Err(Error::invalid_model(format!("original context {original} is not within the context {ctx}")));
    }
    Ok(Some(original))
}

/// The factor on rotary cos and sin: the file's `rope.scaling.attn_factor`,
/// else for LongRoPE what transformers (and the converter) derive from the
/// context growth, `sqrt(1 + ln(ctx / original) / ln(original))`, else 1.
fn rope_attn_factor(c: &Content, arch: &str, ctx: usize, original: Option<usize>) -> Result<f32> {
    let key = format!("{arch}.rope.scaling.attn_factor");
    let factor = match c.metadata.get(&key) {
        Some(v) => v.to_f32().map_err(|_| Error::invalid_model(format!("{key} is not a number")))?,
        None => match original {
            Some(o) if ctx > o && o > 1 => (1.0 + (ctx as f64 / o as f64).ln() / (o as f64).ln()).sqrt() as f32,
            _ => 1.0,
        },
    };
    if !(factor.is_finite() && factor > 0.0 && factor <= 16.0) {
        return Err(Error::invalid_model(format!("{key} {factor} is out of range")));
    }
    Ok(factor)
}

fn linear(factor: f32) -> Result<f32> {
    if !(1.0..=1024.0).contains(&factor) {
        return Err(Error::invalid_model(format!("linear rope scaling factor {factor} is out of range")));
    }
    Ok(1.0 / factor)
}

/// Metadata keys that change the math in ways this decoder does not
/// compute: a file that has them is refused by name, so it never gives
/// answers that quietly differ from the model's (unknown tensors are refused
/// beside the shape checks in `Hyper::read`).
fn refuse_unimplemented_math(c: &Content, arch: &str, head_dim: usize) -> Result<()> {
    let unsupported = |what: String| Err(Error::UnsupportedArchitecture(format!("{arch} with {what}")));
    // `attention.sliding_window` is not among them: Phi-3 files declare one
    // (2047 for mini-4k) that no layer list says where to apply, and
    // llama.cpp, the reference here, attends to the whole context for phi3
    // and llama (llama.cpp#13676), as this decoder does.
    for (key, what) in [
        ("attn_logit_softcapping", "attention logit soft-capping"),
        ("final_logit_softcapping", "final logit soft-capping"),
        ("attention.clamp_kqv", "clamped q/k/v"),
    ] {
        if c.metadata.contains_key(&format!("{arch}.{key}")) {
            return unsupported(format!("{what} ({arch}.{key})"));
        }
    }
    for key in ["attention.key_length", "attention.value_length"] {
        let v = c.metadata.get(&format!("{arch}.{key}")).and_then(|v| v.to_u32().ok());
        if v.is_some_and(|v| v as usize != head_dim) {
            return unsupported(format!("{arch}.{key} {} not the head size {head_dim}", v.unwrap_or(0)));
        }
    }
    Ok(())
}
