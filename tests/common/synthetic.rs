//! Synthetic Phi-3 GGUF files: Microsoft's tensor names and metadata layout
//! with deterministic random weights. Shared by the tests, the
//! `synthetic_gguf` example (which the reference script reads) and the
//! benchmark, so all of them see byte-identical files.
#![allow(dead_code)]

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arch {
    Phi3,
    /// Llama layout: separate q/k/v and gate/up, tied output embedding.
    Llama,
}

#[derive(Debug, Clone)]
pub struct Phi3Spec {
    pub arch: Arch,
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub layers: usize,
    pub ff: usize,
    pub context: usize,
    /// Type of the 2-D weights; norms stay F32 as in llama.cpp's files.
    pub dtype: GgmlDType,
    /// Type of `output.weight` when it differs (Microsoft's Phi-3 q4 file: Q6_K).
    pub output_dtype: Option<GgmlDType>,
    pub seed: u64,
    /// Metadata to add or override (for files that lie).
    pub extra_metadata: Vec<(String, Value)>,
    /// Tensors to leave out.
    pub omit: Vec<String>,
    /// Rotated elements per head when fewer than the head size (partial
    /// rotary, Phi-4-mini).
    pub rope_dim: Option<usize>,
    /// LongRoPE's original context: the file gets short and long factors
    /// and the metadata llama.cpp's converter writes with them.
    pub long_rope: Option<usize>,
    /// No `output.weight`: the output is the embedding (Phi-4-mini), kept
    /// small (see `write`). Llama files here never have one; for them the
    /// flag sets only the embedding's scale.
    pub tied: bool,
    /// F32 vectors to add (Llama 3's `rope_freqs.weight`).
    pub extra_tensors: Vec<(String, Vec<f32>)>,
}

impl Phi3Spec {
    /// The model the reference ids were computed on: F32 weights so candle and
    /// transformers run the same arithmetic; Phi-3's real 32064-row vocabulary.
    pub fn reference() -> Self {
        Self {
            arch: Arch::Phi3,
            vocab: 32064,
            hidden: 64,
            heads: 4,
            kv_heads: 4,
            layers: 2,
            ff: 128,
            context: 512,
            dtype: GgmlDType::F32,
            seed: 0x5eed_0001,
            extra_metadata: Vec::new(),
            output_dtype: None,
            omit: Vec::new(),
            rope_dim: None,
            long_rope: None,
            tied: false,
            extra_tensors: Vec::new(),
        }
    }

    /// A quantized model shaped so Q4_K blocks (256 wide) fit.
    pub fn quantized() -> Self {
        Self {
            hidden: 256,
            heads: 8,
            kv_heads: 8,
            ff: 512,
            dtype: GgmlDType::Q4K,
            seed: 0x5eed_0002,
            ..Self::reference()
        }
    }

    /// Phi-3-mini-4k's real dimensions (3.8 B parameters), for benchmarks.
    pub fn phi3_mini() -> Self {
        Self {
            arch: Arch::Phi3,
            vocab: 32064,
            hidden: 3072,
            heads: 32,
            kv_heads: 32,
            layers: 32,
            ff: 8192,
            context: 4096,
            dtype: GgmlDType::Q4K,
            seed: 0x5eed_0003,
            extra_metadata: Vec::new(),
            output_dtype: Some(GgmlDType::Q6K),
            omit: Vec::new(),
            rope_dim: None,
            long_rope: None,
            tied: false,
            extra_tensors: Vec::new(),
        }
    }

    /// Phi-3.5-mini's shape of rope, scaled down: LongRoPE factors with an
    /// original context of 48, so prompts on both sides of it are short.
    pub fn phi35_like() -> Self {
        Self { long_rope: Some(48), seed: 0x5eed_0005, ..Self::reference() }
    }

    /// Phi-4-mini's shape, scaled down: LongRoPE, 12 of 16 head elements
    /// rotated, 4 query heads over 2 KV heads, the output tied to the embedding.
    pub fn phi4_like() -> Self {
        Self { kv_heads: 2, rope_dim: Some(12), tied: true, seed: 0x5eed_0006, ..Self::phi35_like() }
    }

    /// Phi-4-mini-instruct's real dimensions (3.8 B parameters: 24 query
    /// over 8 KV heads of 128, 96 of them rotated, LongRoPE over 4096 of a
    /// 128k context, the output tied to a 200 064-row embedding), for
    /// benchmarks.
    pub fn phi4_mini() -> Self {
        Self {
            vocab: 200_064,
            heads: 24,
            kv_heads: 8,
            rope_dim: Some(96),
            context: 131_072,
            long_rope: Some(4096),
            tied: true,
            output_dtype: None,
            seed: 0x5eed_0008,
            // Not "…phi3…": llama.cpp gives a model so named Phi-3's token
            // attributes, and its `</s>` is not in o200k (the load fails).
            extra_metadata: vec![("general.name".into(), Value::String("synthetic Phi 4 Mini".into()))],
            ..Self::phi3_mini()
        }
    }

    /// A small Llama-architecture model with grouped-query attention.
    pub fn llama() -> Self {
        Self { arch: Arch::Llama, kv_heads: 2, seed: 0x5eed_0004, ..Self::reference() }
    }

    /// The Llama model with Llama 3.1's rope scaling (factor 8, low 1, high
    /// 4) over an original context of 32, so most of a 16-wide head's
    /// frequencies are scaled or blended.
    pub fn llama3_like() -> Self {
        let freqs = llama3_rope_freqs(16, 10_000.0, 8.0, 1.0, 4.0, 32.0);
        Self {
            extra_tensors: vec![("rope_freqs.weight".into(), freqs)],
            tied: true,
            seed: 0x5eed_0007,
            ..Self::llama()
        }
    }

    pub fn with_metadata(mut self, key: &str, value: Value) -> Self {
        self.extra_metadata.push((key.to_string(), value));
        self
    }

    /// The `tokenizer.*` metadata of the GGUF at `vocab` added (so llama.cpp,
    /// which reads a vocabulary only from the model file, can run it).
    pub fn with_vocab_of(mut self, vocab: &Path) -> candle_core::Result<Self> {
        let content = gguf_file::Content::read(&mut std::fs::File::open(vocab)?)?;
        let mut keys: Vec<&String> = content.metadata.keys().filter(|k| k.starts_with("tokenizer.")).collect();
        keys.sort();
        for key in keys {
            self.extra_metadata.push((key.clone(), content.metadata[key].clone()));
        }
        Ok(self)
    }

    pub fn without_tensor(mut self, name: &str) -> Self {
        self.omit.push(name.to_string());
        self
    }

    pub fn write(&self, path: &Path) -> candle_core::Result<()> {
        let mut rng = SplitMix64(self.seed);
        let head_dim = self.hidden / self.heads;
        let qkv_rows = self.hidden + 2 * self.kv_heads * head_dim;
        let h = self.hidden;
        let inv_sqrt = |n: usize| 1.0 / (n as f32).sqrt();

        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        let mut add = |name: String,
                       shape: &[usize],
                       std: f32,
                       mean: f32,
                       dtype: GgmlDType,
                       rng: &mut SplitMix64|
         -> candle_core::Result<()> {
            let n: usize = shape.iter().product();
            // Uniform with the requested standard deviation.
            let a = std * 3f32.sqrt();
            let data: Vec<f32> = (0..n).map(|_| mean + a * (2.0 * rng.next_f32() - 1.0)).collect();
            let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
            tensors.push((name, QTensor::quantize(&t, dtype)?));
            Ok(())
        };
        // A tied output scores each token by its embedding: kept small, so
        // the layers rather than the last input token decide, with a large
        // final norm for logits a few units apart.
        let (embd_std, out_norm_mean) = if self.tied { (0.1, 10.0) } else { (1.0, 1.0) };
        add("token_embd.weight".into(), &[self.vocab, h], embd_std, 0.0, self.dtype, &mut rng)?;
        for i in 0..self.layers {
            add(format!("blk.{i}.attn_norm.weight"), &[h], 0.1, 1.0, GgmlDType::F32, &mut rng)?;
            match self.arch {
                Arch::Phi3 => {
                    add(format!("blk.{i}.attn_qkv.weight"), &[qkv_rows, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?
                }
                Arch::Llama => {
                    let kv = self.kv_heads * head_dim;
                    add(format!("blk.{i}.attn_q.weight"), &[h, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?;
                    add(format!("blk.{i}.attn_k.weight"), &[kv, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?;
                    add(format!("blk.{i}.attn_v.weight"), &[kv, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?;
                }
            }
            add(format!("blk.{i}.attn_output.weight"), &[h, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?;
            add(format!("blk.{i}.ffn_norm.weight"), &[h], 0.1, 1.0, GgmlDType::F32, &mut rng)?;
            match self.arch {
                Arch::Phi3 => {
                    add(format!("blk.{i}.ffn_up.weight"), &[2 * self.ff, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?
                }
                Arch::Llama => {
                    add(format!("blk.{i}.ffn_gate.weight"), &[self.ff, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?;
                    add(format!("blk.{i}.ffn_up.weight"), &[self.ff, h], inv_sqrt(h), 0.0, self.dtype, &mut rng)?;
                }
            }
            add(format!("blk.{i}.ffn_down.weight"), &[h, self.ff], inv_sqrt(self.ff), 0.0, self.dtype, &mut rng)?;
        }
        add("output_norm.weight".into(), &[h], 0.1, out_norm_mean, GgmlDType::F32, &mut rng)?;
        // Logits with a spread of a few units, so greedy choices are clear-cut.
        // Llama files here tie the output to the embedding, as small models do.
        if self.arch == Arch::Phi3 && !self.tied {
            let dtype = self.output_dtype.unwrap_or(self.dtype);
            add("output.weight".into(), &[self.vocab, h], 3.0 * inv_sqrt(h), 0.0, dtype, &mut rng)?;
        }
        let rope_dim = self.rope_dim.unwrap_or(head_dim);
        if self.long_rope.is_some() {
            // Factors of the kind Phi-3.5 ships: short ones near 1, long ones
            // growing with the wavelength, here steeply so answers differ.
            let pairs = rope_dim / 2;
            let short: Vec<f32> = (0..pairs).map(|i| 1.0 + 0.05 * i as f32).collect();
            let long: Vec<f32> = (0..pairs).map(|i| 1.0 + 0.75 * (i * i) as f32).collect();
            for (name, f) in [("rope_factors_long.weight", long), ("rope_factors_short.weight", short)] {
                let t = Tensor::from_vec(f, pairs, &Device::Cpu)?;
                tensors.push((name.into(), QTensor::quantize(&t, GgmlDType::F32)?));
            }
        }
        for (name, data) in &self.extra_tensors {
            let t = Tensor::from_vec(data.clone(), data.len(), &Device::Cpu)?;
            tensors.push((name.clone(), QTensor::quantize(&t, GgmlDType::F32)?));
        }
        tensors.retain(|(name, _)| !self.omit.contains(name));

        let a = match self.arch {
            Arch::Phi3 => "phi3",
            Arch::Llama => "llama",
        };
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(a.into())),
            ("general.name".into(), Value::String(format!("synthetic-{a}"))),
            (format!("{a}.context_length"), Value::U32(self.context as u32)),
            (format!("{a}.embedding_length"), Value::U32(h as u32)),
            (format!("{a}.feed_forward_length"), Value::U32(self.ff as u32)),
            (format!("{a}.block_count"), Value::U32(self.layers as u32)),
            (format!("{a}.attention.head_count"), Value::U32(self.heads as u32)),
            (format!("{a}.attention.head_count_kv"), Value::U32(self.kv_heads as u32)),
            (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
            (format!("{a}.rope.dimension_count"), Value::U32(rope_dim as u32)),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(32000)),
        ];
        if self.arch == Arch::Llama {
            metadata.push(("llama.rope.freq_base".into(), Value::F32(10_000.0)));
        }
        if let Some(original) = self.long_rope {
            // As convert_hf_to_gguf.py's Phi3MiniModel writes them.
            let growth = self.context as f64 / original as f64;
            let attn_factor = (1.0 + growth.ln() / (original as f64).ln()).sqrt();
            metadata.push((format!("{a}.rope.scaling.original_context_length"), Value::U32(original as u32)));
            metadata.push((format!("{a}.rope.scaling.attn_factor"), Value::F32(attn_factor as f32)));
        }
        for (k, v) in &self.extra_metadata {
            metadata.retain(|(key, _)| key != k);
            metadata.push((k.clone(), v.clone()));
        }

        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tmp = path.with_extension("gguf.partial");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        gguf_file::write(&mut f, &md, &ts)?;
        std::io::Write::flush(&mut f)?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// A tiny fixed PRNG: the files must stay byte-identical across `rand`
/// versions, because committed reference ids were computed from them.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Llama 3's rope scaling as `convert_hf_to_gguf.py` writes it
/// (`rope_freqs.weight`): per frequency of a `head_dim` rope with `base`,
/// 1 for wavelengths under `original_context / high`, `factor` over
/// `original_context / low`, and a smooth blend between.
pub fn llama3_rope_freqs(
    head_dim: usize,
    base: f32,
    factor: f32,
    low: f32,
    high: f32,
    original_context: f32,
) -> Vec<f32> {
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / base.powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < original_context / high {
                1.0
            } else if wavelen > original_context / low {
                factor
            } else {
                let smooth = (original_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// `src` rewritten to `dst` with an F32 `rope_freqs.weight` added (the other
/// tensors and the metadata as they were, in name order).
pub fn with_rope_freqs(src: &Path, dst: &Path, freqs: &[f32]) -> candle_core::Result<()> {
    with_tensor(src, dst, "rope_freqs.weight", freqs)
}

/// `src` rewritten to `dst` with an F32 vector tensor `name` added.
pub fn with_tensor(src: &Path, dst: &Path, name: &str, data: &[f32]) -> candle_core::Result<()> {
    let mut input = std::fs::File::open(src)?;
    let content = gguf_file::Content::read(&mut input)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in names {
        tensors.push((name.clone(), content.tensor(&mut input, name, &Device::Cpu)?));
    }
    let t = Tensor::from_vec(data.to_vec(), data.len(), &Device::Cpu)?;
    tensors.push((name.into(), QTensor::quantize(&t, GgmlDType::F32)?));
    let mut keys: Vec<&String> = content.metadata.keys().collect();
    keys.sort();
    let metadata: Vec<(&str, &Value)> = keys.iter().map(|k| (k.as_str(), &content.metadata[*k])).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::fs::File::create(dst)?;
    gguf_file::write(&mut out, &metadata, &tensors)
}

/// The rope scaling the SmolLM2 reference applies (`tests/smollm2.rs`):
/// Llama 3.1's factors, with an original context short enough that most of
/// a 64-wide head's frequencies are scaled, so answers differ visibly from
/// the unscaled model's within a short chat.
pub fn smollm2_test_rope_freqs() -> Vec<f32> {
    llama3_rope_freqs(64, 100_000.0, 8.0, 1.0, 4.0, 256.0)
}
