//! Rotary position embedding, in the two layouts GGUF files use, with
//! candle's tables and arithmetic (equal to candle's `rope`/`rope_i` bit for
//! bit, tested).

/// How a head's elements pair up for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// Element `i` with `i + d/2` (GPT-NeoX; Phi-3).
    Neox,
    /// Element `2i` with `2i + 1` (GGUF stores Llama's q/k rows permuted so).
    Interleaved,
}

pub(crate) struct Rope {
    style: RopeStyle,
    head_dim: usize,
    /// `[positions, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Tables for `positions` positions. `freq_scale` multiplies every angle
    /// (linear scaling: 1/factor) and `freq_factors`, one per frequency,
    /// divide each (Llama 3's `rope_freqs`), as llama.cpp applies them.
    pub fn new(
        style: RopeStyle,
        head_dim: usize,
        positions: usize,
        base: f32,
        freq_scale: f32,
        freq_factors: Option<&[f32]>,
    ) -> Self {
        let mut theta: Vec<f32> =
            (0..head_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / head_dim as f32)).collect();
        if let Some(factors) = freq_factors {
            theta.iter_mut().zip(factors).for_each(|(t, f)| *t /= f);
        }
        if freq_scale != 1.0 {
            theta.iter_mut().for_each(|t| *t *= freq_scale);
        }
        let angles = || (0..positions).flat_map(|p| theta.iter().map(move |t| p as f32 * t));
        Self { style, head_dim, cos: angles().map(f32::cos).collect(), sin: angles().map(f32::sin).collect() }
    }

    /// Rotates rows `[seq, heads · head_dim]` in place, row `t` at position
    /// `start + t`. `None` past the table's positions.
    pub fn apply(&self, x: &mut [f32], start: usize, seq: usize) -> Option<()> {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        if seq == 0 || !x.len().is_multiple_of(seq * d) || (start + seq) * half > self.cos.len() {
            return None;
        }
        for (t, row) in x.chunks_exact_mut(x.len() / seq).enumerate() {
            let cos = &self.cos[(start + t) * half..][..half];
            let sin = &self.sin[(start + t) * half..][..half];
            for head in row.chunks_exact_mut(d) {
                match self.style {
                    RopeStyle::Neox => {
                        let (a, b) = head.split_at_mut(half);
                        for i in 0..half {
                            let (x1, x2) = (a[i], b[i]);
                            a[i] = x1 * cos[i] - x2 * sin[i];
                            b[i] = x1 * sin[i] + x2 * cos[i];
                        }
                    }
                    RopeStyle::Interleaved => {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
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
            let mut ours = x.clone();
            Rope::new(style, d, 64, 10_000.0, 1.0, None).apply(&mut ours, start, seq).unwrap();
            assert_eq!(ours, theirs, "{style:?}");
        }
        assert!(
            Rope::new(RopeStyle::Neox, d, 64, 10_000.0, 1.0, None).apply(&mut x.clone(), 60, seq).is_none(),
            "past the table"
        );
    }

    #[test]
    fn linear_scaling_and_llama3_factors_slow_the_rotation() {
        let d = 16;
        let x: Vec<f32> = (0..2 * d).map(|i| i as f32 / 7.0 - 1.0).collect();
        let at = |rope: &Rope, pos: usize| {
            let mut y = x.clone();
            rope.apply(&mut y, pos, 1).unwrap();
            y
        };
        let plain = Rope::new(RopeStyle::Interleaved, d, 64, 10_000.0, 1.0, None);
        // Scaling by 1/4 (exact in binary): position 4p turns as far as p did.
        let linear = Rope::new(RopeStyle::Interleaved, d, 64, 10_000.0, 0.25, None);
        assert_eq!(at(&linear, 40), at(&plain, 10));
        // Factors divide their own frequency only.
        let mut factors = vec![1.0; d / 2];
        factors[5] = 2.0;
        let llama3 = Rope::new(RopeStyle::Interleaved, d, 64, 10_000.0, 1.0, Some(&factors));
        let half = Rope::new(RopeStyle::Interleaved, d, 64, 10_000.0, 0.5, None);
        let (ours, slow, fast) = (at(&llama3, 20), at(&half, 20), at(&plain, 20));
        for pair in 0..d / 2 {
            let want = if pair == 5 { &slow } else { &fast };
            for i in [2 * pair, 2 * pair + 1, d + 2 * pair, d + 2 * pair + 1] {
                assert_eq!(ours[i], want[i], "element {i}");
            }
        }
    }
}
