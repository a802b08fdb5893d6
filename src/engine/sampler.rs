//! Token sampling: repeat penalty, temperature, top-k, top-p and min-p, with a
//! seeded RNG so the same seed and parameters give the same tokens.
//!
//! Written here rather than using candle's `LogitsProcessor` because that has
//! no min-p and applies its filters in a fixed combination.
//!
//! Only ids the tokenizer knows are candidates: the logits of the embedding's
//! padding rows (and of gaps in the vocabulary) are never sampled.

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax); so does anything below [`GREEDY_BELOW`].
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the penalty.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// `None` draws a seed from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || !(0.0..=100.0).contains(&t) {
            return Err(Error::param("temperature", format!("must be in [0, 100], got {t}")));
        }
        let p = self.top_p;
        if !p.is_finite() || p <= 0.0 || p > 1.0 {
            return Err(Error::param("top_p", format!("must be in (0, 1], got {p}")));
        }
        let m = self.min_p;
        if !m.is_finite() || !(0.0..1.0).contains(&m) {
            return Err(Error::param("min_p", format!("must be in [0, 1), got {m}")));
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 || r > 100.0 {
            return Err(Error::param("repeat_penalty", format!("must be in (0, 100], got {r}")));
        }
        Ok(())
    }
}

/// Temperatures below this sample as greedy. At 1e-3 a logit lead of 0.01
/// already makes the runner-up e^-10 times less likely, and far below it
/// `logit / temperature` overflows (1e-45 gives inf and NaN probabilities).
pub const GREEDY_BELOW: f32 = 1e-3;

pub(crate) struct Sampler {
    cfg: SamplingConfig,
    rng: StdRng,
    candidates: Vec<(f32, u32)>,
    /// Ids from here on are the embedding's padding rows.
    vocab_end: usize,
    /// Unknown ids below `vocab_end`.
    gaps: Vec<u32>,
}

impl Sampler {
    /// A sampler over every logit it is given (for tests of the arithmetic).
    #[cfg(test)]
    pub fn new(cfg: SamplingConfig) -> Self {
        Self::for_vocabulary(cfg, usize::MAX, &[])
    }

    /// Samples only ids below `vocab_end` that are not in `gaps`.
    pub fn for_vocabulary(cfg: SamplingConfig, vocab_end: usize, gaps: &[u32]) -> Self {
        let rng = match cfg.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { cfg, rng, candidates: Vec::new(), vocab_end, gaps: gaps.to_vec() }
    }

    /// Picks the next token from `logits` (modified in place by the penalty);
    /// `context` is every token so far, the penalty reads its tail.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> Result<u32> {
        // Padding rows are cut off, not masked: no pass over them at all.
        let end = logits.len().min(self.vocab_end);
        let logits = &mut logits[..end];
        for &id in &self.gaps {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if logits.is_empty() {
            return Err(Error::Inference("the model returned no logits".into()));
        }
        if logits.iter().any(|l| l.is_nan()) {
            return Err(Error::Inference("the model produced NaN logits; its weights are probably corrupt".into()));
        }
        self.apply_repeat_penalty(logits, context);
        let best = argmax(logits);
        if logits[best as usize] == f32::NEG_INFINITY {
            return Err(Error::Inference("every token has -inf logit".into()));
        }
        // An infinite logit is certain at any temperature (and would make the
        // softmax below inf - inf = NaN).
        if self.cfg.temperature < GREEDY_BELOW || logits[best as usize] == f32::INFINITY {
            return Ok(best);
        }

        let cands = &mut self.candidates;
        cands.clear();
        // -inf (a gap, or a model's own mask) can never be drawn.
        cands.extend(logits.iter().enumerate().filter(|(_, &l)| l > f32::NEG_INFINITY).map(|(i, &l)| (l, i as u32)));
        let by_logit_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
        if self.cfg.top_k > 0 && self.cfg.top_k < cands.len() {
            cands.select_nth_unstable_by(self.cfg.top_k - 1, by_logit_desc);
            cands.truncate(self.cfg.top_k);
        }
        // Sorting is only needed for top-p's cumulative cut.
        if self.cfg.top_p < 1.0 {
            cands.sort_unstable_by(by_logit_desc);
        }

        // Softmax at the temperature, in place: .0 becomes the probability.
        // The maximum is finite (checked above) and 1 / temperature at most
        // 1 / GREEDY_BELOW, so no term is NaN and the largest is exp(0) = 1.
        let max = logits[best as usize];
        let inv_t = 1.0 / self.cfg.temperature;
        let mut sum = 0f64;
        for c in cands.iter_mut() {
            c.0 = ((c.0 - max) * inv_t).exp();
            sum += c.0 as f64;
        }
        for c in cands.iter_mut() {
            c.0 = (c.0 as f64 / sum) as f32;
        }

        if self.cfg.top_p < 1.0 {
            let mut cum = 0f32;
            let mut keep = cands.len();
            for (i, c) in cands.iter().enumerate() {
                cum += c.0;
                if cum >= self.cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep);
        }
        if self.cfg.min_p > 0.0 {
            let p_max = cands.iter().map(|c| c.0).fold(0f32, f32::max);
            let floor = self.cfg.min_p * p_max;
            cands.retain(|c| c.0 >= floor);
        }

        let total: f64 = cands.iter().map(|c| c.0 as f64).sum();
        let mut r = self.rng.random::<f64>() * total;
        // Probabilities that underflowed to 0 are skipped: never drawn.
        let mut last = best;
        for c in cands.iter().filter(|c| c.0 > 0.0) {
            last = c.1;
            r -= c.0 as f64;
            if r <= 0.0 {
                return Ok(c.1);
            }
        }
        // Rounding left a sliver: the last possible candidate takes it.
        Ok(last)
    }

    fn apply_repeat_penalty(&self, logits: &mut [f32], context: &[u32]) {
        let penalty = self.cfg.repeat_penalty;
        if penalty == 1.0 || self.cfg.repeat_last_n == 0 {
            return;
        }
        let start = context.len().saturating_sub(self.cfg.repeat_last_n);
        let mut seen = std::collections::HashSet::new();
        for &id in &context[start..] {
            if !seen.insert(id) {
                continue;
            }
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l >= 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
}

/// First index of the largest value, like `torch.argmax`.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SamplingConfig {
        SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: Some(7),
        }
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = Sampler::new(SamplingConfig { temperature: 0.0, ..cfg() });
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingConfig { top_k: 1, ..cfg() });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.5, 0.2, 0.9, 0.89], &[]).unwrap(), 2);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities ~0.84, 0.11, 0.04, ...: top_p 0.5 leaves one token.
        let mut s = Sampler::new(SamplingConfig { top_p: 0.5, ..cfg() });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [1.0, 3.0, 1.0, 0.0, 5.0], &[]).unwrap(), 4);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = Sampler::new(SamplingConfig { min_p: 0.5, ..cfg() });
        for _ in 0..50 {
            let t = s.sample(&mut [5.0, 4.9, -3.0, -3.0], &[]).unwrap();
            assert!(t == 0 || t == 1, "{t}");
        }
    }

    #[test]
    fn repeat_penalty_changes_the_argmax() {
        let mut s = Sampler::new(SamplingConfig { temperature: 0.0, repeat_penalty: 2.0, repeat_last_n: 4, ..cfg() });
        assert_eq!(s.sample(&mut [1.0, 1.5, 0.0], &[1]).unwrap(), 0);
        // Outside the window the penalty does not apply.
        assert_eq!(s.sample(&mut [1.0, 1.5, 0.0], &[1, 2, 2, 2, 2]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let draw = |seed| {
            let mut s = Sampler::new(SamplingConfig { seed: Some(seed), ..cfg() });
            (0..32).map(|_| s.sample(&mut vec![0.0; 100], &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    /// Ids 4 and 5 are padding rows (vocabulary end 4) with the largest logits; 2 is a gap.
    fn padded() -> [f32; 6] {
        [0.5, 1.0, 9.0, 0.9, 50.0, 40.0]
    }

    #[test]
    fn padding_rows_and_gaps_are_never_sampled() {
        let configs = [
            SamplingConfig { temperature: 0.0, ..cfg() },
            SamplingConfig { temperature: 1e-45, ..cfg() },
            cfg(),
            SamplingConfig { temperature: 100.0, ..cfg() },
            SamplingConfig { temperature: 100.0, top_k: 5, ..cfg() },
            SamplingConfig { temperature: 100.0, top_p: 0.99, ..cfg() },
            SamplingConfig { temperature: 100.0, min_p: 0.01, ..cfg() },
            SamplingConfig { temperature: 100.0, repeat_penalty: 0.01, repeat_last_n: 8, ..cfg() },
        ];
        for c in configs {
            let mut s = Sampler::for_vocabulary(c.clone(), 4, &[2]);
            let mut seen = [false; 6];
            for _ in 0..200 {
                seen[s.sample(&mut padded(), &[4, 5, 2, 3]).unwrap() as usize] = true;
            }
            assert!(!seen[2] && !seen[4] && !seen[5], "{c:?}: {seen:?}");
        }
    }

    #[test]
    fn vanishing_temperatures_are_greedy() {
        for t in [1e-45, f32::MIN_POSITIVE, 1e-20, 1e-4, GREEDY_BELOW / 2.0] {
            let mut s = Sampler::for_vocabulary(SamplingConfig { temperature: t, ..cfg() }, 4, &[]);
            for _ in 0..20 {
                // Huge logits: at these temperatures logit / t overflows.
                assert_eq!(s.sample(&mut [3e38, 3.1e38, 3.0e38, -3e38, 9.0, 9.0], &[]).unwrap(), 1, "{t}");
            }
        }
    }

    #[test]
    fn infinite_logits_are_handled() {
        let mut s = Sampler::new(cfg());
        // +inf is certain; the first of several wins, as in greedy.
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, f32::INFINITY, 1.0, f32::INFINITY], &[]).unwrap(), 1);
        }
        // -inf is impossible, even after a penalty and at a high temperature.
        let mut s = Sampler::new(SamplingConfig { temperature: 100.0, repeat_penalty: 2.0, repeat_last_n: 4, ..cfg() });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY], &[0, 1]).unwrap(), 1);
        }
        let all_masked = s.sample(&mut [f32::NEG_INFINITY; 3], &[]);
        assert!(matches!(all_masked, Err(Error::Inference(_))), "{all_masked:?}");
        // Only padding rows left: nothing to sample is an error, not a padding id.
        let mut s = Sampler::for_vocabulary(cfg(), 2, &[0, 1]);
        assert!(matches!(s.sample(&mut padded(), &[]), Err(Error::Inference(_))));
    }

    #[test]
    fn nan_in_padding_rows_is_ignored() {
        let mut s = Sampler::for_vocabulary(cfg(), 2, &[]);
        for _ in 0..20 {
            let t = s.sample(&mut [0.0, 1.0, f32::NAN, f32::NAN], &[]).unwrap();
            assert!(t < 2, "{t}");
        }
    }

    #[test]
    fn nan_logits_are_an_error() {
        let mut s = Sampler::new(cfg());
        assert!(matches!(s.sample(&mut [0.0, f32::NAN], &[]), Err(Error::Inference(_))));
    }

    #[test]
    fn invalid_values_are_rejected() {
        for bad in [
            SamplingConfig { temperature: -0.1, ..cfg() },
            SamplingConfig { temperature: f32::NAN, ..cfg() },
            SamplingConfig { top_p: 0.0, ..cfg() },
            SamplingConfig { top_p: 1.5, ..cfg() },
            SamplingConfig { min_p: 1.0, ..cfg() },
            SamplingConfig { min_p: f32::INFINITY, ..cfg() },
            SamplingConfig { repeat_penalty: 0.0, ..cfg() },
            SamplingConfig { repeat_penalty: f32::NAN, ..cfg() },
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidParameter { .. })), "{bad:?}");
        }
        assert!(cfg().validate().is_ok());
    }
}
