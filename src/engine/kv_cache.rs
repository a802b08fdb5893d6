//! The keys and values of one sequence: its own, never shared, written in
//! place. Grows with use in `STEP`-position steps up to the context (a
//! whole-context buffer for Phi-3-mini at 4096 is 1.6 GB in f16, whatever the
//! conversation's length), and truncates for free: positions past `len` are
//! simply overwritten, so a turn that shares only part of the cached prompt
//! keeps that part, and a forward pass stopped half-way leaves the cache as
//! it was.
//!
//! Stored in f16 by default (half the memory of f32, as llama.cpp's default
//! cache): a key or value is rounded once, when written, and attention reads
//! the rounded value for every query, so a batch still equals its tokens fed
//! one by one. f32 keeps them exact.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::error::{Error, Result};
use super::kernels::dense::Float;

/// Growth step, in positions. Linear steps: a doubling would allocate up to
/// twice what a long chat needs; the copies cost far less than a forward pass.
const STEP: usize = 256;

/// How the cache stores keys and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvPrecision {
    #[default]
    F16,
    F32,
}

impl KvPrecision {
    /// Bytes per stored element.
    pub fn bytes(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

/// Bytes one position takes in a cache of `layers` layers (keys and values
/// of `kv_heads` heads of `head_dim` each).
pub(crate) fn bytes_per_position(layers: usize, kv_heads: usize, head_dim: usize, precision: KvPrecision) -> usize {
    layers * 2 * kv_heads * head_dim * precision.bytes()
}

/// A cache element: narrowed from the f32 rows the projections give, widened
/// back (`dense::Float`) where a saved cache of the other precision loads.
pub(crate) trait Element: Float + Default + bytemuck::Pod {
    const PRECISION: KvPrecision;
    fn narrow(from: &[f32], to: &mut [Self]);
}

impl Element for f32 {
    const PRECISION: KvPrecision = KvPrecision::F32;

    fn narrow(from: &[f32], to: &mut [f32]) {
        to.copy_from_slice(from)
    }
}

impl Element for f16 {
    const PRECISION: KvPrecision = KvPrecision::F16;

    fn narrow(from: &[f32], to: &mut [f16]) {
        // Round to nearest even; half vectorizes it where the CPU converts.
        to.convert_from_f32_slice(from)
    }
}

// A saved cache is the buffers' bytes, little-endian, as every target this
// library builds for is (the GGUF blocks are read in place the same way).
const _: () = assert!(cfg!(target_endian = "little"));

/// One layer's keys and values, each `[kv_heads, capacity, head_dim]`.
#[derive(Default)]
struct Layer<T> {
    k: Vec<T>,
    v: Vec<T>,
}

impl<T: Element> Layer<T> {
    /// Moves each head's first `filled` positions into buffers of `new`
    /// positions per head (from `old`).
    fn regrow(&mut self, heads: usize, hd: usize, (old, new): (usize, usize), filled: usize) {
        let regrow = |buf: &[T]| {
            let mut out = vec![T::default(); heads * new * hd];
            for h in 0..heads {
                out[h * new * hd..][..filled * hd].copy_from_slice(&buf[h * old * hd..][..filled * hd]);
            }
            out
        };
        self.k = regrow(&self.k);
        self.v = regrow(&self.v);
    }

    /// Appends positions `..len` of every head, keys then values, as bytes.
    fn save(
        &self,
        (heads, hd, capacity): (usize, usize, usize),
        len: usize,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        for buf in [&self.k, &self.v] {
            for h in 0..heads {
                out.write_all(bytemuck::cast_slice(&buf[h * capacity * hd..][..len * hd]))?;
            }
        }
        Ok(())
    }

    /// Reads what `save` wrote (elements of `precision`) into positions `..len`.
    fn load(
        &mut self,
        shape: (usize, usize, usize),
        len: usize,
        precision: KvPrecision,
        input: &mut dyn std::io::Read,
    ) -> std::io::Result<()> {
        match precision {
            KvPrecision::F16 => self.load_from::<f16>(shape, len, input),
            KvPrecision::F32 => self.load_from::<f32>(shape, len, input),
        }
    }

    /// `load` from elements `S`: in place when they are `T`, else widened and narrowed.
    fn load_from<S: Element>(
        &mut self,
        (heads, hd, capacity): (usize, usize, usize),
        len: usize,
        input: &mut dyn std::io::Read,
    ) -> std::io::Result<()> {
        let (mut stored, mut row) = (Vec::new(), Vec::new());
        if S::PRECISION != T::PRECISION {
            (stored, row) = (vec![S::default(); len * hd], vec![0f32; len * hd]);
        }
        for buf in [&mut self.k, &mut self.v] {
            for h in 0..heads {
                let dst = &mut buf[h * capacity * hd..][..len * hd];
                if S::PRECISION == T::PRECISION {
                    input.read_exact(bytemuck::cast_slice_mut(dst))?;
                } else {
                    input.read_exact(bytemuck::cast_slice_mut(&mut stored))?;
                    S::widen(&stored, &mut row);
                    T::narrow(&row, dst);
                }
            }
        }
        Ok(())
    }

    /// Writes rows `[seq, heads · hd]` at positions `start..` of buffers
    /// with `capacity` positions per head.
    fn store(&mut self, (heads, hd, capacity): (usize, usize, usize), start: usize, k: &[f32], v: &[f32]) {
        for (t, (kr, vr)) in k.chunks_exact(heads * hd).zip(v.chunks_exact(heads * hd)).enumerate() {
            for h in 0..heads {
                let at = (h * capacity + start + t) * hd;
                T::narrow(&kr[h * hd..(h + 1) * hd], &mut self.k[at..at + hd]);
                T::narrow(&vr[h * hd..(h + 1) * hd], &mut self.v[at..at + hd]);
            }
        }
    }
}

enum Layers {
    F16(Vec<Layer<f16>>),
    F32(Vec<Layer<f32>>),
}

/// One layer's key and value buffers, `[kv_heads, capacity, head_dim]`, as stored.
pub(crate) enum LayerView<'a> {
    F16(&'a [f16], &'a [f16]),
    F32(&'a [f32], &'a [f32]),
}

pub(crate) struct KvCache {
    layers: Layers,
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
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, max: usize, precision: KvPrecision) -> Self {
        let layers = match precision {
            KvPrecision::F16 => Layers::F16((0..layers).map(|_| Layer::default()).collect()),
            KvPrecision::F32 => Layers::F32((0..layers).map(|_| Layer::default()).collect()),
        };
        Self { layers, kv_heads, head_dim, capacity: 0, max, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn precision(&self) -> KvPrecision {
        match self.layers {
            Layers::F16(_) => KvPrecision::F16,
            Layers::F32(_) => KvPrecision::F32,
        }
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
        self.resize(needed.next_multiple_of(STEP).min(self.max));
        Ok(())
    }

    fn resize(&mut self, capacity: usize) {
        let (heads, hd, sizes, filled) = (self.kv_heads, self.head_dim, (self.capacity, capacity), self.len);
        match &mut self.layers {
            Layers::F16(l) => l.iter_mut().for_each(|l| l.regrow(heads, hd, sizes, filled)),
            Layers::F32(l) => l.iter_mut().for_each(|l| l.regrow(heads, hd, sizes, filled)),
        }
        self.capacity = capacity;
    }

    /// Writes `layer`'s keys and values for positions `start..start + seq`
    /// from rows `[seq, kv_heads · head_dim]` (room reserved beforehand).
    pub fn write(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let width = self.kv_heads * self.head_dim;
        let seq = k.len() / width;
        assert!(start + seq <= self.capacity && k.len() == v.len() && k.len() == seq * width);
        let shape = (self.kv_heads, self.head_dim, self.capacity);
        match &mut self.layers {
            Layers::F16(l) => l[layer].store(shape, start, k, v),
            Layers::F32(l) => l[layer].store(shape, start, k, v),
        }
    }

    /// `layer`'s key and value buffers, `[kv_heads, capacity, head_dim]`.
    pub fn layer(&self, layer: usize) -> LayerView<'_> {
        match &self.layers {
            Layers::F16(l) => LayerView::F16(&l[layer].k, &l[layer].v),
            Layers::F32(l) => LayerView::F32(&l[layer].k, &l[layer].v),
        }
    }

    /// Marks positions up to `len` filled, once every layer has written them.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity);
        self.len = len;
    }

    /// Writes the filled positions: every layer's keys then values, per KV
    /// head, in the cache's precision, little-endian.
    pub fn save(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let shape = (self.kv_heads, self.head_dim, self.capacity);
        match &self.layers {
            Layers::F16(l) => l.iter().try_for_each(|l| l.save(shape, self.len, out)),
            Layers::F32(l) => l.iter().try_for_each(|l| l.save(shape, self.len, out)),
        }
    }

    /// Replaces the contents with `len` positions read as `save` wrote them
    /// in `precision` (converted to this cache's where they differ).
    pub fn load(&mut self, len: usize, precision: KvPrecision, input: &mut dyn std::io::Read) -> Result<()> {
        self.len = 0;
        self.reserve(len)?;
        let shape = (self.kv_heads, self.head_dim, self.capacity);
        let io = |e: std::io::Error| Error::SavedChat(format!("the saved cache is unreadable: {e}"));
        match &mut self.layers {
            Layers::F16(l) => l.iter_mut().try_for_each(|l| l.load(shape, len, precision, input)).map_err(io)?,
            Layers::F32(l) => l.iter_mut().try_for_each(|l| l.load(shape, len, precision, input)).map_err(io)?,
        }
        self.len = len;
        Ok(())
    }

    /// Bytes one position takes in every layer.
    pub fn bytes_per_position(&self) -> usize {
        let layers = match &self.layers {
            Layers::F16(l) => l.len(),
            Layers::F32(l) => l.len(),
        };
        bytes_per_position(layers, self.kv_heads, self.head_dim, self.precision())
    }

    /// Bytes the buffers hold.
    pub fn bytes(&self) -> usize {
        self.capacity * self.bytes_per_position()
    }

    /// Releases the room past the filled positions (rounded up to a step),
    /// for when the OS asks for memory back. The next turn grows it again.
    pub fn trim(&mut self) {
        let keep = self.len.next_multiple_of(STEP).min(self.max);
        if keep < self.capacity {
            self.resize(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows `[seq, 2 heads · 4]` numbered from `first`.
    fn rows(seq: usize, first: f32) -> Vec<f32> {
        (0..seq * 8).map(|i| first + i as f32).collect()
    }

    /// Position `pos` of head `h` in layer 0's keys, widened.
    fn key(c: &KvCache, h: usize, pos: usize) -> Vec<f32> {
        let at = (h * c.capacity() + pos) * 4;
        match c.layer(0) {
            LayerView::F32(k, _) => k[at..at + 4].to_vec(),
            LayerView::F16(k, _) => k[at..at + 4].iter().map(|x| x.to_f32()).collect(),
        }
    }

    #[test]
    fn grows_in_steps_keeps_its_contents_truncates_and_stops_at_the_context() {
        let mut c = KvCache::new(2, 2, 4, 600, KvPrecision::F32);
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
        assert_eq!(c.bytes_per_position(), 2 * 2 * 2 * 4 * 4, "layers · k and v · heads · head_dim · f32");

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

    #[test]
    fn f16_rounds_once_when_written_and_takes_half_the_bytes() {
        let mut c = KvCache::new(2, 2, 4, 600, KvPrecision::F16);
        c.reserve(1).unwrap();
        let row: Vec<f32> = (0..8).map(|i| 1.0 + i as f32 / 3.0).collect();
        c.write(0, 0, &row, &row);
        c.set_len(1);
        let rounded: Vec<f32> = row[4..].iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(key(&c, 1, 0), rounded);
        assert_ne!(key(&c, 1, 0), row[4..], "f16 is not exact for thirds");
        assert_eq!(c.bytes_per_position(), 2 * 2 * 2 * 4 * 2);
        assert_eq!(c.bytes(), STEP * c.bytes_per_position());
    }

    #[test]
    fn trim_releases_the_room_past_the_conversation_and_keeps_it() {
        let mut c = KvCache::new(1, 2, 4, 2000, KvPrecision::F16);
        c.reserve(3 * STEP + 1).unwrap();
        c.write(0, 0, &rows(10, 0.0), &rows(10, 0.0));
        c.set_len(10);
        assert_eq!(c.capacity(), 4 * STEP);
        c.trim();
        assert_eq!((c.capacity(), c.len()), (STEP, 10), "one step holds the 10 positions");
        assert_eq!(key(&c, 1, 9), [76.0, 77.0, 78.0, 79.0], "row 9, head 1 kept");
        c.truncate(0);
        c.trim();
        assert_eq!(c.bytes(), 0, "an empty conversation holds nothing");
    }

    #[test]
    fn saves_and_loads_in_either_precision() {
        let mut f32_cache = KvCache::new(2, 2, 4, 600, KvPrecision::F32);
        f32_cache.reserve(300).unwrap();
        for layer in 0..2 {
            f32_cache.write(layer, 0, &rows(300, layer as f32 / 3.0), &rows(300, -(layer as f32)));
        }
        f32_cache.set_len(300);
        let mut saved = Vec::new();
        f32_cache.save(&mut saved).unwrap();
        assert_eq!(saved.len(), 300 * f32_cache.bytes_per_position());

        let mut same = KvCache::new(2, 2, 4, 600, KvPrecision::F32);
        same.load(300, KvPrecision::F32, &mut &saved[..]).unwrap();
        assert_eq!((same.len(), key(&same, 1, 299)), (300, key(&f32_cache, 1, 299)));
        let mut again = Vec::new();
        same.save(&mut again).unwrap();
        assert_eq!(again, saved, "a round trip is exact");

        // Into f16: each value rounded, as if written there.
        let mut half = KvCache::new(2, 2, 4, 600, KvPrecision::F16);
        half.load(300, KvPrecision::F32, &mut &saved[..]).unwrap();
        let want: Vec<f32> = key(&f32_cache, 1, 7).iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(key(&half, 1, 7), want);
        let mut short = &saved[..saved.len() - 1];
        assert!(matches!(half.load(300, KvPrecision::F32, &mut short), Err(Error::SavedChat(_))), "truncated");
        assert!(matches!(half.load(601, KvPrecision::F32, &mut &saved[..]), Err(Error::ContextOverflow { .. })));
    }
}
