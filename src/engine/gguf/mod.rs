//! The GGUF file: opening it, the structural scan that runs before candle
//! parses it (`scan`), the tensor table's checks and summary, and reading
//! tensors with load progress.

pub(crate) mod scan;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::error::{Error, Result};
use super::weights::TensorSource;

pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(path.to_path_buf()),
        _ => Error::Io { path: path.to_path_buf(), source },
    })
}

/// Every tensor must have a sane shape and lie inside the file.
pub(crate) fn check_tensor_table(content: &Content, file_size: u64) -> Result<()> {
    for (name, t) in &content.tensor_infos {
        let elems = t
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::invalid_model(format!("tensor {name} has an impossible shape {:?}", t.shape)))?;
        let block = t.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(Error::invalid_model(format!("tensor {name} does not fill whole {block}-element blocks")));
        }
        let bytes = (elems / block) as u64 * t.ggml_dtype.type_size() as u64;
        let end = content.tensor_data_offset.checked_add(t.offset).and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|e| e > file_size) {
            return Err(Error::invalid_model(format!(
                "tensor {name} extends past the end of the file (truncated download?)"
            )));
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
        *bytes_by_type.entry(t.ggml_dtype).or_default() +=
            n / t.ggml_dtype.block_size() as u64 * t.ggml_dtype.type_size() as u64;
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

/// Tensors as the GGUF's reader yields them.
pub(crate) struct GgufTensors<'a, R> {
    pub content: &'a Content,
    pub reader: &'a mut R,
}

impl<R: Read + Seek> TensorSource for GgufTensors<'_, R> {
    fn tensor(&mut self, name: &str) -> candle_core::Result<candle_core::quantized::QTensor> {
        self.content.tensor(self.reader, name, &Device::Cpu)
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

pub(crate) fn shape_of<'a>(c: &'a Content, name: &str) -> Result<&'a [usize]> {
    c.tensor_infos
        .get(name)
        .map(|t| t.shape.dims())
        .ok_or_else(|| Error::invalid_model(format!("missing tensor {name}")))
}

/// Counts bytes as candle reads the file, to report load progress.
pub(crate) struct ProgressReader<'p, R> {
    inner: R,
    done: u64,
    total: u64,
    last_reported: u64,
    report: &'p mut dyn FnMut(u64, u64),
}

impl<'p, R> ProgressReader<'p, R> {
    pub fn new(inner: R, total: u64, report: &'p mut dyn FnMut(u64, u64)) -> Self {
        report(0, total);
        Self { inner, done: 0, total, last_reported: 0, report }
    }

    pub fn finish(&mut self) {
        (self.report)(self.total, self.total);
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done = (self.done + n as u64).min(self.total);
        // About a hundred reports per load, not one per read.
        if self.done - self.last_reported > self.total / 100 {
            self.last_reported = self.done;
            (self.report)(self.done, self.total);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for ProgressReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}
