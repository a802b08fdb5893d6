//! Rotary position embedding, in the two layouts GGUF files use, over all
//! of a head or its first `rot_dim` elements (partial rotary: Phi-4-mini
//! turns 96 of 128), with candle's arithmetic (equal to candle's
//! `rope`/`rope_i` bit for bit, tested).
//!
//! The angles are computed for the positions of each forward pass rather
//! than tabled for the whole context: a 128k-context Phi-3.5 would need
//! 50 MB of tables per factor set, a pass needs a few KB.

/// How a head's elements pair up for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// Element `i` with `i + rot_dim/2` (GPT-NeoX; Phi-3).
    Neox,
    /// Element `2i` with `2i + 1` (GGUF stores Llama's q/k rows permuted so).
    Interleaved,
}

/// How positions turn into angles; `Rope::new`'s input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeSpec<'a> {
    pub style: RopeStyle,
    pub head_dim: usize,
    /// Elements of each head that rotate (the rest pass through).
    pub rot_dim: usize,
    pub base: f32,
    /// Multiplies every angle (linear scaling: 1/factor).
    pub freq_scale: f32,
    /// One divisor per frequency (Llama 3's `rope_freqs`, LongRoPE's factors).
    pub freq_factors: Option<&'a [f32]>,
    /// Multiplies cos and sin (LongRoPE's attention factor; else 1).
    pub scale: f32,
}

pub(crate) struct Rope {
    style: RopeStyle,
    head_dim: usize,
    rot_dim: usize,
    /// The angle per position of each rotated pair.
    theta: Vec<f32>,
    scale: f32,
}

/// The cos and sin of one forward pass's positions, `[seq, rot_dim / 2]`
/// each, in buffers the sequence owns.
#[derive(Default)]
pub(crate) struct Angles {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Factors divide their own frequency and the scale multiplies every
    /// angle, as llama.cpp applies them.
    pub fn new(spec: RopeSpec<'_>) -> Self {
        let d = spec.rot_dim;
        let mut theta: Vec<f32> = (0..d).step_by(2).map(|i| 1f32 / spec.base.powf(i as f32 / d as f32)).collect();
        if let Some(factors) = spec.freq_factors {
            theta.iter_mut().zip(factors).for_each(|(t, f)| *t /= f);
        }
        if spec.freq_scale != 1.0 {
            theta.iter_mut().for_each(|t| *t *= spec.freq_scale);
        }
        Self { style: spec.style, head_dim: spec.head_dim, rot_dim: d, theta, scale: spec.scale }
    }

    /// The angles of positions `start..start + seq` into `out`.
    pub fn angles(&self, start: usize, seq: usize, out: &mut Angles) {
        let angles = || (start..start + seq).flat_map(|p| self.theta.iter().map(move |t| p as f32 * t));
        let scaled = |v: f32| if self.scale == 1.0 { v } else { v * self.scale };
        out.cos.clear();
        out.cos.extend(angles().map(|a| scaled(a.cos())));
        out.sin.clear();
        out.sin.extend(angles().map(|a| scaled(a.sin())));
    }

    /// Rotates rows `[seq, heads · head_dim]` in place, row `t` by the
    /// angles' row `t`. `None` if the shapes disagree.
    pub fn apply(&self, x: &mut [f32], seq: usize, angles: &Angles) -> Option<()> {
        let (d, half) = (self.head_dim, self.rot_dim / 2);
        if seq == 0 || !x.len().is_multiple_of(seq * d) || angles.cos.len() != seq * half {
            return None;
        }
        for (t, row) in x.chunks_exact_mut(x.len() / seq).enumerate() {
            let cos = &angles.cos[t * half..][..half];
            let sin = &angles.sin[t * half..][..half];
            for head in row.chunks_exact_mut(d) {
                let turned = &mut head[..self.rot_dim];
                match self.style {
                    RopeStyle::Neox => {
                        let (a, b) = turned.split_at_mut(half);
                        for i in 0..half {
                            let (x1, x2) = (a[i], b[i]);
                            a[i] = x1 * cos[i] - x2 * sin[i];
                            b[i] = x1 * sin[i] + x2 * cos[i];
                        }
                    }
                    RopeStyle::Interleaved => {
                        for (i, pair) in turned.chunks_exact_mut(2).enumerate() {
                            let (x1, x2) = (pair[0], pair[1]);
                            pair[0] = x1 * cos[i] - x2 * sin[i];
                            pair[1] = x1 * sin[i] + x2 * cos[i];
                        }
                    }
                }
            }
        }
        Some(())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    fn spec(style: RopeStyle, head_dim: usize) -> RopeSpec<'static> {
        RopeSpec { style, head_dim, rot_dim: head_dim, base: 10_000.0, freq_scale: 1.0, freq_factors: None, scale: 1.0 }
    }

    /// `x` (rows of `seq`) rotated for positions `start..`.
    fn turned(rope: &Rope, x: &[f32], start: usize, seq: usize) -> Vec<f32> {
        let mut angles = Angles::default();
        rope.angles(start, seq, &mut angles);
        let mut y = x.to_vec();
        rope.apply(&mut y, seq, &angles).unwrap();
        y
    }

    /// candle's tables, as the decoder built them before.
    fn candle_tables(head_dim: usize, positions: usize, base: f32) -> (Tensor, Tensor) {
        let dev = &Device::Cpu;
        let theta: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / head_dim as f32)).collect();
        let theta = Tensor::new(theta.as_slice(), dev).unwrap();
        let idx = Tensor::arange(0, positions as u32, dev).unwrap().to_dtype(DType::F32).unwrap();
        let angles = idx.reshape((positions, 1)).unwrap().matmul(&theta.reshape((1, head_dim / 2)).unwrap()).unwrap();
        (angles.cos().unwrap(), angles.sin().unwrap())
    }

    #[test]
    fn both_styles_equal_candles_rope() {
        let (heads, seq, d, start) = (3, 5, 16, 7);
        let x: Vec<f32> = (0..seq * heads * d).map(|i| ((i * 31) % 97) as f32 / 24.0 - 2.0).collect();
        let (cos, sin) = candle_tables(d, 64, 10_000.0);
        let (cos, sin) = (cos.narrow(0, start, seq).unwrap(), sin.narrow(0, start, seq).unwrap());
        // candle's layout is [batch, heads, seq, d].
        let t = Tensor::from_vec(x.clone(), (1, seq, heads, d), &Device::Cpu)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        for (style, theirs) in [
            (RopeStyle::Neox, candle_nn::rotary_emb::rope(&t, &cos, &sin).unwrap()),
            (RopeStyle::Interleaved, candle_nn::rotary_emb::rope_i(&t, &cos, &sin).unwrap()),
        ] {
            let theirs: Vec<f32> = theirs.transpose(1, 2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(turned(&Rope::new(spec(style, d)), &x, start, seq), theirs, "{style:?}");
        }
        let mut angles = Angles::default();
        Rope::new(spec(RopeStyle::Neox, d)).angles(start, seq - 1, &mut angles);
        assert!(Rope::new(spec(RopeStyle::Neox, d)).apply(&mut x.clone(), seq, &angles).is_none(), "too few angles");
    }

    #[test]
    fn linear_scaling_and_llama3_factors_slow_the_rotation() {
        let d = 16;
        let x: Vec<f32> = (0..2 * d).map(|i| i as f32 / 7.0 - 1.0).collect();
        let plain = Rope::new(spec(RopeStyle::Interleaved, d));
        // Scaling by 1/4 (exact in binary): position 4p turns as far as p did.
        let linear = Rope::new(RopeSpec { freq_scale: 0.25, ..spec(RopeStyle::Interleaved, d) });
        assert_eq!(turned(&linear, &x, 40, 1), turned(&plain, &x, 10, 1));
        // Factors divide their own frequency only.
        let mut factors = vec![1.0; d / 2];
        factors[5] = 2.0;
        let llama3 = Rope::new(RopeSpec { freq_factors: Some(&factors), ..spec(RopeStyle::Interleaved, d) });
        let half = Rope::new(RopeSpec { freq_scale: 0.5, ..spec(RopeStyle::Interleaved, d) });
        let (ours, slow, fast) = (turned(&llama3, &x, 20, 1), turned(&half, &x, 20, 1), turned(&plain, &x, 20, 1));
        for pair in 0..d / 2 {
            let want = if pair == 5 { &slow } else { &fast };
            for i in [2 * pair, 2 * pair + 1, d + 2 * pair, d + 2 * pair + 1] {
                assert_eq!(ours[i], want[i], "element {i}");
            }
        }
    }

    #[test]
    fn partial_rotary_turns_the_first_elements_of_each_head_as_a_head_of_that_size() {
        // Phi-4-mini's shape, scaled down: 12 of a 16-wide head turn, with
        // the frequencies of a 12-wide rope; the last 4 pass through.
        let (d, rot, heads, seq, start) = (16, 12, 3, 4, 9);
        let x: Vec<f32> = (0..seq * heads * d).map(|i| ((i * 13) % 29) as f32 / 9.0 - 1.5).collect();
        let partial = Rope::new(RopeSpec { rot_dim: rot, ..spec(RopeStyle::Neox, d) });
        let whole = Rope::new(spec(RopeStyle::Neox, rot));
        let ours = turned(&partial, &x, start, seq);
        let firsts: Vec<f32> = x.chunks(d).flat_map(|h| h[..rot].to_vec()).collect();
        let want = turned(&whole, &firsts, start, seq);
        for (h, (got, orig)) in ours.chunks(d).zip(x.chunks(d)).enumerate() {
            assert_eq!(got[..rot], want[h * rot..][..rot], "head row {h}: the turned part");
            assert_eq!(got[rot..], orig[rot..], "head row {h}: the rest is untouched");
        }
    }

    #[test]
    fn the_attention_factor_scales_cos_and_sin() {
        let d = 8;
        let x: Vec<f32> = (0..d).map(|i| i as f32 - 3.0).collect();
        let plain = turned(&Rope::new(spec(RopeStyle::Neox, d)), &x, 5, 1);
        // 2 is exact: the product rounds as the unscaled one did.
        let scaled = turned(&Rope::new(RopeSpec { scale: 2.0, ..spec(RopeStyle::Neox, d) }), &x, 5, 1);
        assert_eq!(scaled, plain.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    }
}
