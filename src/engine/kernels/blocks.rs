//! The GGUF block layouts the kernels read, byte for byte as in the file
//! (ggml's `block_q2_K` … `block_q6_K`, `block_q8_K`, and the 32-element
//! `block_q4_0` … `block_q8_1`), and the quantization of activations (Q8_K
//! for the K-quants, Q8_1 for the 32-element types).

/// Elements in a K-quant super-block.
pub const QK_K: usize = 256;

/// 4.5 bits per weight: 8 sub-blocks of 32 with 6-bit scales and mins.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    /// f16 bits of the super-block scale, and of the scale of the mins.
    pub d: u16,
    pub dmin: u16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; 12],
    /// Nibbles: byte `32j + l` holds element `64j + l` (low) and `64j + 32 + l` (high).
    pub qs: [u8; 128],
}

/// 5.5 bits per weight: Q4_K's layout plus a fifth bit per element.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    /// Fifth bits: bit `2j` of byte `l` belongs to element `64j + l`, bit
    /// `2j + 1` to element `64j + 32 + l`.
    pub qh: [u8; 32],
    /// Low nibbles, as in Q4_K.
    pub qs: [u8; 128],
}

/// Q4_K and Q5_K: eight sub-blocks of 32 with 6-bit scales and mins, the
/// low four bits of each element in the same nibble layout; Q5_K adds a
/// fifth bit (`qh`).
pub trait KQuant45: Plain + Sync {
    const FIFTH_BIT: bool;
    fn d(&self) -> u16;
    fn dmin(&self) -> u16;
    fn scales(&self) -> &[u8; 12];
    fn qs(&self) -> &[u8; 128];
    /// Zeros for Q4_K.
    fn qh(&self) -> &[u8; 32];
}

/// The shared fields of Q4_K and Q5_K; `qh` is what tells them apart.
macro_rules! kquant45 {
    ($t:ty, $fifth:expr, |$b:ident| $qh:expr) => {
        impl KQuant45 for $t {
            const FIFTH_BIT: bool = $fifth;
            fn d(&self) -> u16 {
                self.d
            }
            fn dmin(&self) -> u16 {
                self.dmin
            }
            fn scales(&self) -> &[u8; 12] {
                &self.scales
            }
            fn qs(&self) -> &[u8; 128] {
                &self.qs
            }
            fn qh(&self) -> &[u8; 32] {
                let $b = self;
                $qh
            }
        }
    };
}
kquant45!(BlockQ4K, false, |_b| &[0; 32]);
kquant45!(BlockQ5K, true, |b| &b.qh);

/// 2.625 bits per weight: 16 groups of 16, each `d · s · q − dmin · m`
/// with 4-bit `s` and `m`, 2-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ2K {
    /// Group `g`'s scale (low nibble) and min (high nibble).
    pub scales: [u8; 16],
    /// Byte `32n + l` holds, in bits `2j, 2j + 1`, element `128n + 32j + l`.
    pub qs: [u8; 64],
    /// f16 bits of the super-block scale, and of the scale of the mins.
    pub d: u16,
    pub dmin: u16,
}

/// 3.4375 bits per weight: 16 groups of 16, `d · (s − 32) · q` with 6-bit
/// `s` and 3-bit `q` in -4..=3.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ3K {
    /// Bit `4n + j` of byte `l`: the high bit of element `128n + 32j + l`
    /// (set: `q` as stored; clear: `q − 4`).
    pub hmask: [u8; 32],
    /// Low two bits, in Q2_K's layout.
    pub qs: [u8; 64],
    /// Sixteen 6-bit scales, packed.
    pub scales: [u8; 12],
    /// f16 bits of the super-block scale.
    pub d: u16,
}

/// 6.5625 bits per weight: 16 groups of 16 with 8-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    /// Low 4 bits of each 6-bit quant.
    pub ql: [u8; 128],
    /// High 2 bits, four quants per byte.
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    /// f16 bits of the super-block scale.
    pub d: u16,
}

/// Activations: 8-bit quants, one f32 scale, and the sums of each 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl BlockQ8K {
    pub const ZERO: Self = Self { d: 0.0, qs: [0; QK_K], bsums: [0; 16] };
}

/// Elements in a block of the 32-element ("legacy") types.
pub const QK: usize = 32;

/// 4.5 bits per weight: `d · (q − 8)`. Byte `l` holds element `l` (low
/// nibble) and `l + 16` (high).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; 16],
}

/// 5 bits per weight: `d · q + m`, nibbles as in Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; 16],
}

/// 5.5 bits per weight: `d · (q − 16)`, bit `l` of `qh` (little-endian)
/// the fifth bit of element `l`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// 6 bits per weight: `d · q + m`, bits as in Q5_0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// 8.5 bits per weight: `d · q`, `q` the bytes read as i8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [u8; QK],
}

/// Activations for the 32-element types: `d · q`, and `s = d · Σq` for the
/// types with a min.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_1 {
    pub d: u16,
    pub s: u16,
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl BlockQ8_1 {
    pub const ZERO: Self = Self { d: 0, s: 0, qs: [0; QK] };
}

/// How a 32-element type stores its quants.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// 16 bytes of nibbles (Q4_0, Q4_1).
    Nibbles,
    /// Nibbles and 32 fifth bits (Q5_0, Q5_1).
    Nibbles5,
    /// 32 signed bytes (Q8_0).
    Bytes,
}

/// A 32-element weight type: element `e` is `d · (stored(e) − OFFSET)`
/// (`+ m` for the types with a min).
pub trait Legacy: Plain {
    const PACKING: Packing;
    /// 8 for Q4_0, 16 for Q5_0, 0 for the rest.
    const OFFSET: i8;
    /// Whether the block has a min `m` (Q4_1, Q5_1).
    const HAS_MIN: bool;
    fn d(&self) -> u16;
    /// f16 bits of the min (0 without one).
    fn m(&self) -> u16 {
        0
    }
    /// The 16 nibble bytes, or Q8_0's 32 bytes.
    fn qs(&self) -> &[u8];
    /// The fifth bits, little-endian (0 without them).
    fn qh(&self) -> u32 {
        0
    }
}

/// `impl Legacy` for a block type, with its extra accessors.
macro_rules! legacy {
    ($t:ty, $packing:ident, offset $offset:expr, min $has_min:expr $(, $extra:item)*) => {
        impl Legacy for $t {
            const PACKING: Packing = Packing::$packing;
            const OFFSET: i8 = $offset;
            const HAS_MIN: bool = $has_min;
            fn d(&self) -> u16 {
                self.d
            }
            fn qs(&self) -> &[u8] {
                &self.qs
            }
            $($extra)*
        }
    };
}
legacy!(BlockQ4_0, Nibbles, offset 8, min false);
legacy!(BlockQ4_1, Nibbles, offset 0, min true, fn m(&self) -> u16 { self.m });
legacy!(BlockQ5_0, Nibbles5, offset 16, min false, fn qh(&self) -> u32 { u32::from_le_bytes(self.qh) });
legacy!(BlockQ5_1, Nibbles5, offset 0, min true, fn m(&self) -> u16 { self.m }, fn qh(&self) -> u32 {
    u32::from_le_bytes(self.qh)
});
legacy!(BlockQ8_0, Bytes, offset 0, min false);

/// A block's 32 values `stored(e) − OFFSET`, in element order.
pub fn legacy_values<W: Legacy>(w: &W) -> [i8; QK] {
    let qs = w.qs();
    std::array::from_fn(|e| {
        let stored = match W::PACKING {
            Packing::Bytes => qs[e],
            _ => {
                let nibble = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
                let fifth = if W::PACKING == Packing::Nibbles5 { ((w.qh() >> e) & 1) as u8 } else { 0 };
                nibble | (fifth << 4)
            }
        };
        (stored as i8).wrapping_sub(W::OFFSET)
    })
}

/// Blocks a marker trait allows to be read from any bytes: plain integers
/// and arrays of them, no padding, every bit pattern valid.
pub trait Plain: Copy {}
impl Plain for BlockQ2K {}
impl Plain for BlockQ3K {}
impl Plain for BlockQ4K {}
impl Plain for BlockQ5K {}
impl Plain for BlockQ6K {}
impl Plain for BlockQ8K {}
impl Plain for BlockQ4_0 {}
impl Plain for BlockQ4_1 {}
impl Plain for BlockQ5_0 {}
impl Plain for BlockQ5_1 {}
impl Plain for BlockQ8_0 {}
impl Plain for BlockQ8_1 {}
// Every bit pattern is a value of the float types (NaNs included).
impl Plain for f32 {}
impl Plain for half::f16 {}
impl Plain for half::bf16 {}

/// `bytes` as exactly `count` blocks, if its size and alignment allow.
pub fn cast<T: Plain>(bytes: &[u8], count: usize) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if bytes.len() != count.checked_mul(size)? || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return None;
    }
    // SAFETY: size and alignment are checked above; `T: Plain` is a
    // `repr(C)` block of integers without padding, valid for any bytes;
    // the slice borrows `bytes`, so it cannot outlive them.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, count) })
}

pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Quantizes `xs` (a multiple of 256 long) to Q8_K as candle and ggml do:
/// per block, scale by -127 / the value of largest magnitude, round half
/// away from zero.
pub fn quantize_q8k(xs: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(xs.len(), out.len() * QK_K);
    for (x, y) in xs.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *y = BlockQ8K::ZERO;
            continue;
        }
        let iscale = -127f32 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = (iscale * v).round().clamp(-128.0, 127.0) as i8;
        }
        for (s, group) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
}

/// Quantizes `xs` (a multiple of 32 long) to Q8_1 as ggml does
/// (`quantize_row_q8_1`): per block, `d` = the largest magnitude / 127, each
/// value rounded half away from zero (so within ±127), `s = d · Σq` from the
/// unrounded `d`.
pub fn quantize_q8_1(xs: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(xs.len(), out.len() * QK);
    for (x, y) in xs.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = (v * id).round().clamp(-127.0, 127.0) as i8;
            sum += *q as i32;
        }
        y.d = half::f16::from_f32(d).to_bits();
        y.s = half::f16::from_f32(sum as f32 * d).to_bits();
    }
}

/// A Q4_K block's eight 6-bit scales then eight 6-bit mins, unpacked from
/// their 12 packed bytes (four at a time, as words).
#[inline]
pub fn q4k_scales_mins(s: &[u8; 12]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let (low6, low4, low2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let words =
        [a & low6, (c & low4) | (((a >> 6) & low2) << 4), b & low6, ((c >> 4) & low4) | (((b >> 6) & low2) << 4)];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// A Q3_K block's sixteen 6-bit scales (as stored: `s`, not `s − 32`),
/// four per little-endian word, unpacked from their 12 packed bytes: the
/// low four bits of scales 0..8 and 8..16 are the nibbles of bytes 0..8,
/// their high two bits the bit pairs of bytes 8..12.
#[inline]
pub fn q3k_scale_words(s: &[u8; 12]) -> [u32; 4] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, high) = (word(0), word(1), word(2));
    let (low4, low2) = (0x0f0f_0f0f, 0x0303_0303);
    [
        (a & low4) | ((high & low2) << 4),
        (b & low4) | (((high >> 2) & low2) << 4),
        ((a >> 4) & low4) | (((high >> 4) & low2) << 4),
        ((b >> 4) & low4) | (((high >> 6) & low2) << 4),
    ]
}

/// A Q3_K block's sixteen scales as multiplied: `s − 32`.
#[inline]
pub fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(q3k_scale_words(s)) {
        for (o, byte) in o.iter_mut().zip(w.to_le_bytes()) {
            *o = byte as i8 - 32;
        }
    }
    out
}
