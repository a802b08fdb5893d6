//! The keys and values of one sequence: its own, never shared, written in
//! place. Grows with use in `STEP`-position steps up to the context (a
//! whole-context buffer for Phi-3-mini at 4096 is 3.2 GB in f32, whatever the
//! conversation's length), and truncates for free: positions past `len` are
//! simply overwritten, so a turn that shares only part of the cached prompt
//! keeps that part, and a forward pass stopped half-way leaves the cache as
//! it was.

use super::error::{Error, Result};

/// Growth step, in positions. Linear steps: a doubling would allocate up to
/// twice what a long chat needs; the copies cost far less than a forward pass.
const STEP: usize = 256;

/// One layer's keys and values, each `[kv_heads, capacity, head_dim]`.
#[derive(Default)]
struct Layer {
    k: Vec<f32>,
    v: Vec<f32>,
}

pub(crate) struct KvCache {
    layers: Vec<Layer>,
    kv_heads: usize,
    head_dim: usize,
    /// Positions the buffers hold room for (the row stride of each head).
    capacity: usize,
    /// The context: the most positions the cache may hold.
    max: usize,
    /// Positions filled, in every layer.
    len: usize,
}

impl KvCache {
    /// An empty cache (nothing allocated until the first use).
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, max: usize) -> Self {
        Self { layers: (0..layers).map(|_| Layer::default()).collect(), kv_heads, head_dim, capacity: 0, max, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions `len..` (their memory stays for reuse).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for positions up to `needed`, keeping what is filled.
    pub fn reserve(&mut self, needed: usize) -> Result<()> {
        if needed > self.max {
            return Err(Error::ContextOverflow { needed, available: self.max });
        }
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed.next_multiple_of(STEP).min(self.max);
        let (hd, filled) = (self.head_dim, self.len * self.head_dim);
        let grow = |old: &[f32]| {
            let mut new = vec![0f32; self.kv_heads * capacity * hd];
            for h in 0..self.kv_heads {
                let from = h * self.capacity * hd;
                new[h * capacity * hd..][..filled].copy_from_slice(&old[from..from + filled]);
            }
            new
        };
        for layer in &mut self.layers {
            layer.k = grow(&layer.k);
            layer.v = grow(&layer.v);
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Writes `layer`'s keys and values for positions `start..start + seq`
    /// from rows `[seq, kv_heads · head_dim]` (room reserved beforehand).
    pub fn write(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let (hd, width) = (self.head_dim, self.kv_heads * self.head_dim);
        let seq = k.len() / width;
        assert!(start + seq <= self.capacity && k.len() == v.len() && k.len() == seq * width);
        let capacity = self.capacity;
        let Layer { k: ck, v: cv } = &mut self.layers[layer];
        for (t, (kr, vr)) in k.chunks_exact(width).zip(v.chunks_exact(width)).enumerate() {
            for h in 0..self.kv_heads {
                let at = (h * capacity + start + t) * hd;
                ck[at..at + hd].copy_from_slice(&kr[h * hd..(h + 1) * hd]);
                cv[at..at + hd].copy_from_slice(&vr[h * hd..(h + 1) * hd]);
            }
        }
    }

    /// `layer`'s key and value buffers, `[kv_heads, capacity, head_dim]`.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let l = &self.layers[layer];
        (&l.k, &l.v)
    }

    /// Marks positions up to `len` filled, once every layer has written them.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity);
        self.len = len;
    }

    /// Bytes the buffers hold.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.layers.iter().map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows `[seq, 2 heads · 4]` numbered from `first`.
    fn rows(seq: usize, first: f32) -> Vec<f32> {
        (0..seq * 8).map(|i| first + i as f32).collect()
    }

    /// Position `pos` of head `h` in layer 0's keys.
    fn key(c: &KvCache, h: usize, pos: usize) -> &[f32] {
        &c.layer(0).0[(h * c.capacity() + pos) * 4..][..4]
    }

    #[test]
    fn grows_in_steps_keeps_its_contents_truncates_and_stops_at_the_context() {
        let mut c = KvCache::new(2, 2, 4, 600);
        assert_eq!((c.capacity(), c.bytes()), (0, 0), "nothing is allocated before use");

        c.reserve(3).unwrap();
        c.write(0, 0, &rows(3, 0.0), &rows(3, 0.0));
        c.set_len(3);
        assert_eq!(c.capacity(), STEP);
        assert_eq!(key(&c, 1, 2), &[20.0, 21.0, 22.0, 23.0], "row 2, head 1");

        // Crossing a step grows linearly and keeps what was there, per head.
        c.reserve(3 + STEP).unwrap();
        c.write(0, 3, &rows(STEP, 1000.0), &rows(STEP, 1000.0));
        c.set_len(3 + STEP);
        assert_eq!(c.capacity(), 2 * STEP);
        assert_eq!(key(&c, 1, 2), &[20.0, 21.0, 22.0, 23.0]);
        assert_eq!(key(&c, 0, 3), &[1000.0, 1001.0, 1002.0, 1003.0]);
        assert_eq!(c.bytes(), 2 * 2 * (2 * 2 * STEP * 4) * 4);

        // Truncation keeps the buffers; later writes overwrite.
        c.truncate(2);
        assert_eq!((c.len(), c.capacity()), (2, 2 * STEP));
        c.write(0, 2, &rows(1, -8.0), &rows(1, -8.0));
        assert_eq!(key(&c, 1, 2), &[-4.0, -3.0, -2.0, -1.0]);

        // The last step is capped at the context; beyond it is an error.
        c.reserve(600).unwrap();
        assert_eq!(c.capacity(), 600);
        assert!(matches!(c.reserve(601), Err(Error::ContextOverflow { needed: 601, available: 600 })));
    }
}
