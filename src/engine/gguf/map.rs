//! The model file's bytes, and views of its tensors in them.
//!
//! By default the file is memory-mapped read-only: the weights are the
//! file's pages, which the OS reads in on first use and can drop again
//! under memory pressure (they are clean), so they never count as the app's
//! anonymous memory — the memory Android's low-memory killer and iOS jetsam
//! end an app for. Where a file system refuses a map, or the app asks not to
//! map, the file is read into the heap instead and `ModelInfo` says so.
//!
//! A map's pages are also touched once on a background thread right after
//! the load ([`Prefault`]): otherwise the first prompt takes the page
//! faults of the whole file (Phi-3-mini here: its first 16-token prompt
//! took 650–830 ms against 530–590 for the next one).
//!
//! The map, and `mincore` over it (how much of it is resident, for the
//! memory report: no crate wraps it), are the one `unsafe` outside
//! `kernels/`: a mapping is only sound while no one truncates or rewrites
//! the file, which no Rust type can promise. Apps get that contract in the README (the sample apps copy an
//! imported model into their own storage, where nothing else writes it).

use std::fs::File;
use std::io::{Read, Seek};
use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use memmap2::Mmap;

use super::super::error::{Error, Result};
use super::super::model::{report, Progress};

/// The whole model file, mapped or read.
pub(crate) struct FileBytes {
    inner: Inner,
}

enum Inner {
    /// The map is shared with the prefault thread, which `Prefault`'s drop
    /// stops and joins: the file is unmapped when `FileBytes` is dropped.
    Mapped {
        map: Arc<Mmap>,
        /// Held for its drop.
        _prefault: Option<Prefault>,
    },
    /// Words, not bytes: the kernels read blocks with up to 4-byte fields in
    /// place, and a `Vec<u8>` has no alignment to speak of.
    Read { words: Vec<u64>, len: usize },
}

impl FileBytes {
    /// Maps `len` bytes of `file` read-only.
    pub fn map(file: &File, len: usize) -> std::io::Result<Self> {
        // SAFETY: the map is read-only and lives as long as the weights that
        // view it (an `Arc` each). Its soundness needs the file to stay as
        // it is while mapped: the documented contract for apps (see the
        // module doc); a file that is shorter than `len` fails here.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        if map.len() != len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file changed size"));
        }
        // Asks the OS to read the file into 2 MB pages and map them whole
        // (where the file system keeps large folios), before `WillNeed`
        // starts the reading. Decode reads every weight per token and pays
        // for 4 KB pages' TLB misses: Phi-3-mini after a cold load here had
        // 1.9 of its 2.1 GB in 2 MB pages against 0.6, and decoded 1.12× as
        // fast (medians). A file already in the page cache keeps the pages
        // it was read into. Linux only: memmap2 has no such advice for
        // Android.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        // The first token reads every weight: start reading them in now.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::WillNeed);
        let map = Arc::new(map);
        let prefault = Prefault::start(map.clone());
        Ok(Self { inner: Inner::Mapped { map, _prefault: prefault } })
    }

    /// Reads `len` bytes of `file` into the heap, reporting the bytes read
    /// (which may stop it); `io` names a read failure.
    pub fn read(
        file: &mut File,
        len: usize,
        progress: &mut Progress<'_>,
        io: &dyn Fn(std::io::Error) -> Error,
    ) -> Result<Self> {
        file.rewind().map_err(io)?;
        let mut words = vec![0u64; len.div_ceil(8)];
        let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len];
        // About a hundred reports per load.
        let chunk = (len / 100).max(1 << 20);
        let mut done = 0;
        for part in bytes.chunks_mut(chunk) {
            file.read_exact(part).map_err(io)?;
            done += part.len();
            report(progress, done as u64, len as u64)?;
        }
        Ok(Self { inner: Inner::Read { words, len } })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped { map, .. } => map,
            Inner::Read { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped { .. })
    }

    /// Bytes of the file in memory now: all of a heap copy; of a map, the
    /// pages the OS holds (it reads them on first use and may drop them).
    /// `None` where the OS does not say.
    pub fn resident(&self) -> Option<u64> {
        match &self.inner {
            Inner::Read { len, .. } => Some(*len as u64),
            #[cfg(unix)]
            Inner::Mapped { map, .. } => resident_pages(map),
            #[cfg(not(unix))]
            Inner::Mapped { .. } => None,
        }
    }
}

/// The thread that touches each page of a map once, in file order (the
/// order the OS reads it in after `WillNeed`), so that the first prompt
/// finds the weights mapped; it checks `stop` every `STOP_EVERY` bytes.
struct Prefault {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prefault {
    /// The smallest page size of the platforms we run on.
    const PAGE: usize = 4096;
    /// How often the thread looks at `stop`: a dropped model waits for at
    /// most this much of the file (read from storage if not cached yet).
    const STOP_EVERY: usize = 256 << 10;

    /// Below this a thread costs more than the faults it saves (a few ms).
    const MIN_BYTES: usize = 32 << 20;

    /// `None` for a small file, or where no thread could be started: then
    /// the first prompt takes the faults.
    fn start(map: Arc<Mmap>) -> Option<Self> {
        if map.len() < Self::MIN_BYTES {
            return None;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("phi-mobile-prefault".into())
            .spawn(move || {
                for chunk in map.chunks(Self::STOP_EVERY) {
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    for page in chunk.iter().step_by(Self::PAGE) {
                        std::hint::black_box(*page);
                    }
                }
            })
            .ok()?;
        Some(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // It cannot panic (in-bounds reads); if it did, there is nothing to undo.
            let _ = thread.join();
        }
    }
}

#[cfg(unix)]
fn resident_pages(map: &Mmap) -> Option<u64> {
    // SAFETY: sysconf reads a constant; mincore only writes one byte per page
    // of a range we own (the map, page-aligned by mmap) into a vector sized
    // for it, and reads nothing of the map itself.
    unsafe {
        let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).ok().filter(|p| *p > 0)?;
        let mut present = vec![0u8; map.len().div_ceil(page)];
        if libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), present.as_mut_ptr() as *mut _) != 0 {
            return None;
        }
        let pages = present.iter().filter(|&&b| b & 1 == 1).count();
        Some((pages * page).min(map.len()) as u64)
    }
}

/// One tensor's bytes in the file, in GGUF block layout, with its type and
/// row-major shape.
#[derive(Clone)]
pub(crate) struct TensorBytes {
    file: Arc<FileBytes>,
    range: Range<usize>,
    pub dtype: GgmlDType,
    pub dims: Vec<usize>,
}

impl TensorBytes {
    /// `range` must lie inside `file` (checked: the tensor table was).
    pub fn new(file: Arc<FileBytes>, range: Range<usize>, dtype: GgmlDType, dims: Vec<usize>) -> Result<Self> {
        if range.end > file.bytes().len() || range.start > range.end {
            return Err(Error::invalid_model("a tensor extends past the end of the file"));
        }
        Ok(Self { file, range, dtype, dims })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.range.clone()]
    }

    /// `[rows, columns]`, or an error naming `what` for another rank.
    pub fn dims2(&self, what: &str) -> Result<(usize, usize)> {
        match self.dims[..] {
            [rows, cols] => Ok((rows, cols)),
            _ => Err(Error::invalid_model(format!("{what} has shape {:?}, not a matrix", self.dims))),
        }
    }
}
