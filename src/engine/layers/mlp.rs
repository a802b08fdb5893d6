//! The gated feed-forward block: `down(silu(gate(x)) · up(x))`.

use super::super::error::Result;
use super::linear::Linear;
use super::{sized, StopCheck};

/// How the file stores the gate and up projections.
pub(crate) enum Mlp {
    /// One `ffn_up` matrix, its outputs gate | up (Phi-3).
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

/// The buffers the MLP works in, owned by the sequence.
#[derive(Default)]
pub(crate) struct Scratch {
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}

/// candle's SiLU, `x / (1 + e^-x)`.
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl Mlp {
    /// The hidden width (the down projection's inputs).
    pub fn width(&self) -> usize {
        match self {
            Mlp::Fused { down, .. } | Mlp::Split { down, .. } => down.inputs(),
        }
    }

    /// `out[seq, hidden]` for the normed rows `x`.
    pub fn forward(&self, x: &[f32], s: &mut Scratch, out: &mut [f32], stop: StopCheck<'_>) -> Result<()> {
        let down = match self {
            Mlp::Fused { down, .. } | Mlp::Split { down, .. } => down,
        };
        let ff = self.width();
        let seq = out.len() / down.outputs();
        let act = sized(&mut s.act, seq * ff);
        match self {
            Mlp::Fused { gate_up, .. } => {
                let both = sized(&mut s.gate, seq * 2 * ff);
                gate_up.forward(x, both, stop)?;
                for (row, a) in both.chunks_exact(2 * ff).zip(act.chunks_exact_mut(ff)) {
                    let (g, u) = row.split_at(ff);
                    for ((a, g), u) in a.iter_mut().zip(g).zip(u) {
                        *a = u * silu(*g);
                    }
                }
            }
            Mlp::Split { gate, up, .. } => {
                let (g, u) = (sized(&mut s.gate, seq * ff), sized(&mut s.up, seq * ff));
                Linear::forward_shared([gate, up], x, [&mut *g, &mut *u], stop)?;
                for ((a, g), u) in act.iter_mut().zip(g.iter()).zip(u.iter()) {
                    *a = silu(*g) * u;
                }
            }
        }
        down.forward(act, out, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn silu_equals_candles() {
        let x: Vec<f32> = (0..200).map(|i| i as f32 / 10.0 - 10.0).collect();
        let theirs: Vec<f32> = Tensor::new(x.as_slice(), &Device::Cpu).unwrap().silu().unwrap().to_vec1().unwrap();
        assert_eq!(x.iter().map(|&v| silu(v)).collect::<Vec<_>>(), theirs);
    }
}
