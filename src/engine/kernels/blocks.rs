//! The GGUF block layouts the kernels read, byte for byte as in the file
//! (ggml's `block_q4_K`, `block_q6_K`, `block_q8_K`), and the Q8_K
//! quantization of activations.

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

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl BlockQ8K {
    pub const ZERO: Self = Self { d: 0.0, qs: [0; QK_K], bsums: [0; 16] };
}

/// Blocks a marker trait allows to be read from any bytes: plain integers
/// and arrays of them, no padding, every bit pattern valid.
pub trait Plain: Copy {}
impl Plain for BlockQ4K {}
impl Plain for BlockQ6K {}
impl Plain for BlockQ8K {}

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
