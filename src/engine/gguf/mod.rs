//! The GGUF file: opening it, the structural scan that runs before candle
//! parses its header (`scan`), the tensor table's checks and summary, and
//! the tensors as views of the mapped (or read) file (`map`).

pub(crate) mod map;
pub(crate) mod scan;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, TensorInfo};
use candle_core::quantized::GgmlDType;

use super::error::{Error, Result};
use super::weights::TensorSource;
use map::{FileBytes, TensorBytes};

pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(path.to_path_buf()),
        _ => Error::Io { path: path.to_path_buf(), source },
    })
}

/// The bytes a tensor's blocks take, if its shape is sane.
fn byte_len(t: &TensorInfo) -> Option<u64> {
    let elems = t.shape.dims().iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n > 0)?;
    let block = t.ggml_dtype.block_size();
    elems.is_multiple_of(block).then(|| (elems / block) as u64 * t.ggml_dtype.type_size() as u64)
}

/// `general.alignment` as candle reads it (32 when absent).
fn alignment(content: &Content) -> Option<u64> {
    use candle_core::quantized::gguf_file::Value;
    match content.metadata.get("general.alignment") {
        None => Some(32),
        Some(Value::U8(v)) => Some(*v as u64),
        Some(Value::U16(v)) => Some(*v as u64),
        Some(Value::U32(v)) => Some(*v as u64),
        Some(Value::I8(v)) => u64::try_from(*v).ok(),
        Some(Value::I16(v)) => u64::try_from(*v).ok(),
        Some(Value::I32(v)) => u64::try_from(*v).ok(),
        Some(_) => None,
    }
}

/// The weights are read in place (mapped), so every tensor must have a sane
/// shape, lie inside the file, start on the file's alignment and on its
/// blocks' (4 bytes covers every type), and own its bytes: no two overlap.
pub(crate) fn check_tensor_table(content: &Content, file_size: u64) -> Result<()> {
    let align = alignment(content)
        .filter(|a| a.is_power_of_two())
        .ok_or_else(|| Error::invalid_model("general.alignment is not a power of two"))?;
    let mut extents = Vec::with_capacity(content.tensor_infos.len());
    for (name, t) in &content.tensor_infos {
        let bytes = byte_len(t).ok_or_else(|| {
            Error::invalid_model(format!(
                "tensor {name} has an impossible shape {:?} for {}-element blocks",
                t.shape,
                t.ggml_dtype.block_size()
            ))
        })?;
        let start = content.tensor_data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        let (Some(start), Some(end)) = (start, end.filter(|&e| e <= file_size)) else {
            return Err(Error::invalid_model(format!(
                "tensor {name} extends past the end of the file (truncated download?)"
            )));
        };
        if !t.offset.is_multiple_of(align) || !start.is_multiple_of(4) {
            return Err(Error::invalid_model(format!(
                "tensor {name} starts at byte {start}, off the file's {align}-byte alignment"
            )));
        }
        extents.push((start, end, name));
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        if start < end {
            return Err(Error::invalid_model(format!("tensors {a} and {b} overlap in the file")));
        }
    }
    Ok(())
}

pub(crate) fn summarize_weights(content: &Content) -> (u64, String) {
    let mut params = 0u64;
    let mut bytes_by_type: HashMap<GgmlDType, u64> = HashMap::new();
    for t in content.tensor_infos.values() {
        let n = t.shape.elem_count() as u64;
        params += n;
        *bytes_by_type.entry(t.ggml_dtype).or_default() += byte_len(t).unwrap_or(0);
    }
    let main = bytes_by_type.into_iter().max_by_key(|(_, b)| *b).map(|(t, _)| t);
    (params, main.map_or_else(|| "none".into(), dtype_name))
}

/// llama.cpp's spelling of a weight type.
pub(crate) fn dtype_name(t: GgmlDType) -> String {
    let s = match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    };
    s.to_string()
}

/// Tensors as views of the file's bytes.
pub(crate) struct FileTensors<'a, 'p> {
    pub content: &'a Content,
    pub file: Arc<FileBytes>,
    /// Load progress as the bytes of the tensors viewed so far (a mapped
    /// file has no reading to report); `None` when reading reported it.
    pub progress: Option<&'p mut super::model::Progress<'p>>,
    pub done: u64,
}

/// Where tensor `t`'s bytes lie in the file (`None`: past the address space).
fn file_range(content: &Content, t: &TensorInfo) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(content.tensor_data_offset + t.offset).ok()?;
    Some(start..start.checked_add(usize::try_from(byte_len(t)?).ok()?)?)
}

impl TensorSource for FileTensors<'_, '_> {
    fn tensor(&mut self, name: &str) -> Result<TensorBytes> {
        let t = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::invalid_model(format!("missing tensor {name}")))?;
        let range = file_range(self.content, t)
            .ok_or_else(|| Error::invalid_model(format!("tensor {name} does not fit in memory")))?;
        if let Some(report) = self.progress.as_mut() {
            let total = self.file.bytes().len() as u64;
            self.done = (self.done.max(self.content.tensor_data_offset) + range.len() as u64).min(total);
            super::model::report(report, self.done, total)?;
        }
        TensorBytes::new(self.file.clone(), range, t.ggml_dtype, t.shape.dims().to_vec())
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

/// A digest that tells this model from any other a saved chat could come
/// from: the tensor table (names, types, shapes, offsets), the bytes of the
/// norm weights (fine-tunes of one architecture share the table, not the
/// norms; they are small and were read at load anyway), the file size, and
/// `extra` (the tokenizer's and chat format's say).
pub(crate) fn identity(content: &Content, file: &FileBytes, extra: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((file.bytes().len() as u64).to_le_bytes());
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let t = &content.tensor_infos[name];
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}{}", t.ggml_dtype, t.shape.dims(), t.offset).as_bytes());
        if name.ends_with("norm.weight") {
            if let Some(bytes) = file_range(content, t).and_then(|r| file.bytes().get(r)) {
                h.update(bytes);
            }
        }
    }
    for e in extra {
        h.update((e.len() as u64).to_le_bytes());
        h.update(e);
    }
    h.finalize().into()
}

pub(crate) fn shape_of<'a>(c: &'a Content, name: &str) -> Result<&'a [usize]> {
    c.tensor_infos
        .get(name)
        .map(|t| t.shape.dims())
        .ok_or_else(|| Error::invalid_model(format!("missing tensor {name}")))
}
