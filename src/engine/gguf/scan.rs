//! A light pass over a GGUF header that bounds what reading it will allocate,
//! before candle's `Content::read` allocates from the lengths the file
//! declares.
//!
//! candle already refuses a string or array longer than the rest of the file,
//! but memory can still be many times the file's size: each array element
//! becomes a 32-byte `Value` however small it is on disk (a 100 MB file of
//! `u8` arrays would become 3.2 GB), and version-1 files have 4-byte lengths.
//! This scan walks the same layout without keeping anything and checks the
//! totals against limits far above any real model's (Llama 3's vocabulary and
//! merges are about 0.4 M array elements and 20 MB in memory).

use std::io::{self, Read, Seek, SeekFrom};

use super::super::error::{Error, Result};

/// What the header may cost in memory once parsed: values and string bytes.
const MAX_METADATA_BYTES: u64 = 256 << 20;
/// Real models have a few hundred to a few thousand tensors.
const MAX_TENSORS: u64 = 1 << 16;
const MAX_METADATA_ENTRIES: u64 = 1 << 16;
/// Longer than any tensor name or metadata key; a chat template is a value.
const MAX_KEY_LEN: u64 = 1 << 16;
/// GGUF arrays hold scalars or strings; llama.cpp reads one level of nesting.
const MAX_DEPTH: u32 = 2;
const MAX_DIMS: u32 = 4;
/// In-memory size of one parsed `gguf_file::Value` (an enum over `String`
/// and `Vec`) plus allocator overhead for strings, as an estimate.
const VALUE_COST: u64 = 32;
const STRING_OVERHEAD: u64 = 16;

/// Checks the header of the GGUF `r` points at (from its start) and leaves
/// the reader back at the start.
pub(crate) fn check<R: Read + Seek>(r: &mut R, file_size: u64) -> Result<()> {
    r.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let result = Scan { r, file_size, pos: 0, cost: 0, wide: true }.header();
    r.seek(SeekFrom::Start(0)).map_err(io_err)?;
    result
}

fn io_err(e: io::Error) -> Error {
    Error::invalid_model(format!("cannot read the GGUF header: {e}"))
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::invalid_model(format!("not a readable GGUF file: {why}"))
}

struct Scan<'a, R> {
    r: &'a mut R,
    file_size: u64,
    pos: u64,
    /// Estimated bytes of memory the parsed metadata will take.
    cost: u64,
    /// Lengths are u64 (GGUF v2+) rather than u32 (v1).
    wide: bool,
}

impl<R: Read + Seek> Scan<'_, R> {
    fn header(&mut self) -> Result<()> {
        let mut magic = [0u8; 4];
        self.read(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(bad("no GGUF magic number (is this a model file?)"));
        }
        let version = self.u32()?;
        if !(1..=3).contains(&version) {
            return Err(bad(format!("unsupported GGUF version {version}")));
        }
        self.wide = version >= 2;
        let tensors = self.len()?;
        let entries = self.len()?;
        if tensors > MAX_TENSORS {
            return Err(bad(format!("{tensors} tensors declared (at most {MAX_TENSORS})")));
        }
        if entries > MAX_METADATA_ENTRIES {
            return Err(bad(format!("{entries} metadata entries declared (at most {MAX_METADATA_ENTRIES})")));
        }
        for _ in 0..entries {
            self.string(MAX_KEY_LEN, "metadata key")?;
            let ty = self.u32()?;
            self.value(ty, 0)?;
        }
        for _ in 0..tensors {
            self.string(MAX_KEY_LEN, "tensor name")?;
            let dims = self.u32()?;
            if dims > MAX_DIMS {
                return Err(bad(format!("a tensor has {dims} dimensions (at most {MAX_DIMS})")));
            }
            let mut elems: u64 = 1;
            for _ in 0..dims {
                let d = if self.wide { self.u64()? } else { self.u32()? as u64 };
                elems = elems
                    .checked_mul(d)
                    .filter(|&n| n <= self.file_size.saturating_mul(8))
                    .ok_or_else(|| bad("a tensor declares more elements than the file could hold"))?;
            }
            self.skip(4 + 8)?; // type, offset: checked against the file after parsing
            self.cost += 128; // the tensor-info map entry
        }
        Ok(())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<()> {
        self.charge(VALUE_COST)?;
        match ty {
            0 | 1 | 7 => self.skip(1), // u8, i8, bool
            2 | 3 => self.skip(2),     // u16, i16
            4..=6 => self.skip(4),     // u32, i32, f32
            10..=12 => self.skip(8),   // u64, i64, f64
            8 => self.string(self.file_size, "string value"),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(bad("arrays nested too deeply"));
                }
                let inner = self.u32()?;
                let n = self.len()?;
                let fixed = match inner {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    8 | 9 => None,
                    t => return Err(bad(format!("unknown metadata value type {t}"))),
                };
                match fixed {
                    // Scalars: check and skip the whole array at once.
                    Some(size) => {
                        let bytes = n.checked_mul(size).ok_or_else(|| bad("array length overflows"))?;
                        if bytes > self.file_size.saturating_sub(self.pos) {
                            return Err(bad(format!("an array of {n} elements runs past the end of the file")));
                        }
                        self.charge(n.saturating_mul(VALUE_COST))?;
                        self.skip(bytes)
                    }
                    None => {
                        // Each element has at least a length prefix on disk.
                        let min = if self.wide { 8 } else { 4 };
                        if n.saturating_mul(min) > self.file_size.saturating_sub(self.pos) {
                            return Err(bad(format!("an array of {n} elements runs past the end of the file")));
                        }
                        for _ in 0..n {
                            self.value(inner, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            t => Err(bad(format!("unknown metadata value type {t}"))),
        }
    }

    fn string(&mut self, max: u64, what: &str) -> Result<()> {
        let n = self.len()?;
        if n > max || n > self.file_size.saturating_sub(self.pos) {
            return Err(bad(format!("a {what} of {n} bytes runs past the end of the file or a sane limit")));
        }
        self.charge(n + STRING_OVERHEAD)?;
        self.skip(n)
    }

    fn charge(&mut self, bytes: u64) -> Result<()> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > MAX_METADATA_BYTES {
            return Err(bad(format!("its metadata would need over {} MiB of memory", MAX_METADATA_BYTES >> 20)));
        }
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        if self.wide {
            self.u64()
        } else {
            Ok(self.u32()? as u64)
        }
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("the header is truncated"),
            _ => io_err(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let to =
            self.pos.checked_add(n).filter(|&p| p <= self.file_size).ok_or_else(|| bad("the header is truncated"))?;
        // Relative seeks stay inside a BufReader's buffer (an absolute seek
        // would drop it: one read syscall per vocabulary token).
        self.r.seek_relative(n as i64).map_err(io_err)?;
        self.pos = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(version: u32, tensors: u64, entries: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(entries.to_le_bytes());
        b
    }

    fn kv(b: &mut Vec<u8>, key: &str, ty: u32, value: &[u8]) {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(value);
    }

    fn check_bytes(b: &[u8]) -> Result<()> {
        check(&mut Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn a_small_valid_header_passes() {
        let mut b = header(3, 0, 2);
        kv(&mut b, "general.architecture", 8, &[&5u64.to_le_bytes()[..], b"llama"].concat());
        let mut arr = 4u32.to_le_bytes().to_vec(); // u32 elements
        arr.extend(3u64.to_le_bytes());
        arr.extend([0u8; 12]);
        kv(&mut b, "xs", 9, &arr);
        check_bytes(&b).unwrap();
    }

    #[test]
    fn byte_arrays_that_would_blow_up_in_memory_are_refused() {
        // 12 MiB of u8s become 12 M × 32-byte values: over the budget.
        let n = 12u64 << 20;
        let mut b = header(3, 0, 1);
        let mut arr = 0u32.to_le_bytes().to_vec();
        arr.extend(n.to_le_bytes());
        arr.resize(arr.len() + n as usize, 0);
        kv(&mut b, "bytes", 9, &arr);
        let e = check_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("MiB of memory"), "{e}");
    }

    #[test]
    fn lengths_past_the_end_and_huge_counts_are_refused() {
        assert!(check_bytes(&header(3, u64::MAX, 0)).is_err());
        assert!(check_bytes(&header(3, 0, 1 << 40)).is_err());
        assert!(check_bytes(&header(4, 0, 0)).is_err());
        let mut b = header(3, 0, 1);
        b.extend(u64::MAX.to_le_bytes());
        assert!(check_bytes(&b).is_err());
        let mut b = header(3, 0, 1);
        let mut nested = 9u32.to_le_bytes().to_vec();
        nested.extend(1u64.to_le_bytes());
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        nested.extend([0u8; 64]); // room for the innermost array, so depth is what fails
        kv(&mut b, "deep", 9, &nested);
        assert!(check_bytes(&b).unwrap_err().to_string().contains("nested"));
    }
}
