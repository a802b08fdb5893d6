//! The Hub's cache layout inside the app's directory, so other tools can
//! share it: `models--{org}--{name}/blobs/<etag>` holds the bytes,
//! `snapshots/<commit>/<filename>` links to the blob, `refs/<revision>`
//! holds the commit. A download grows `blobs/<etag>.part`, locked while it
//! is written, and becomes the blob only once complete and checked. Every
//! name used here has passed `names` first.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::names;
use crate::engine::{Error, Result};

pub(super) struct RepoDir {
    root: PathBuf,
}

impl RepoDir {
    pub(super) fn new(directory: &Path, repo_id: &str) -> Self {
        Self { root: directory.join(format!("models--{}", repo_id.replace('/', "--"))) }
    }

    pub(super) fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub(super) fn partial(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.part"))
    }

    pub(super) fn snapshot(&self, commit: &str, filename: &str) -> PathBuf {
        filename.split('/').fold(self.root.join("snapshots").join(commit), |p, s| p.join(s))
    }

    fn reference(&self, revision: &str) -> PathBuf {
        revision.split('/').fold(self.root.join("refs"), |p, s| p.join(s))
    }

    /// The commit a revision pointed to when it was last downloaded (a
    /// revision that is a commit hash is its own).
    pub(super) fn commit_of(&self, revision: &str) -> Option<String> {
        names::commit_hash(revision).or_else(|| {
            let text = std::fs::read_to_string(self.reference(revision)).ok()?;
            names::commit_hash(text.trim())
        })
    }

    /// Links the snapshot path to the blob and records the revision's commit.
    pub(super) fn publish(&self, revision: &str, commit: &str, filename: &str, etag: &str) -> Result<PathBuf> {
        let link = self.snapshot(commit, filename);
        let parent = link.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(|e| Error::storage(parent, e))?;
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).map_err(|e| Error::storage(&link, e))?;
        }
        #[cfg(unix)]
        {
            // Relative, as the Hub's tools write it, so the directory can move.
            let up = "../".repeat(filename.split('/').count() + 1);
            std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &link).map_err(|e| Error::storage(&link, e))?;
        }
        #[cfg(not(unix))]
        std::fs::copy(self.blob(etag), &link).map_err(|e| Error::storage(&link, e))?;
        if names::commit_hash(revision).is_none() {
            let reference = self.reference(revision);
            if let Some(dir) = reference.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::storage(dir, e))?;
            }
            std::fs::write(&reference, commit).map_err(|e| Error::storage(&reference, e))?;
        }
        Ok(link)
    }
}

/// The blob's etag, read back from the snapshot link of a cached file.
pub(super) fn linked_etag(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    names::etag_digest(target.file_name()?.to_str()?)
}

/// Partial files being written by this process: one writer per file.
static WRITING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The open partial file, held by one download at a time (in this process
/// through `WRITING`, across processes through a file lock). Released on drop.
pub(super) struct Partial {
    pub file: File,
    pub path: PathBuf,
}

impl Partial {
    pub(super) fn open(path: PathBuf, what: &str) -> Result<Self> {
        let busy = || Error::Busy(format!("another download of {what} is running"));
        if !lock_writing().insert(path.clone()) {
            return Err(busy());
        }
        // From here on, dropping `partial` releases the claim.
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let opened = std::fs::create_dir_all(&dir).map_err(|e| Error::storage(&dir, e)).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::storage(&path, e))
        });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                lock_writing().remove(&path);
                return Err(e);
            }
        };
        let partial = Partial { file, path };
        match partial.file.try_lock() {
            Ok(()) => Ok(partial),
            Err(std::fs::TryLockError::WouldBlock) => Err(busy()),
            // A file system without locks: the in-process claim still holds.
            Err(std::fs::TryLockError::Error(_)) => Ok(partial),
        }
    }

    pub(super) fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| Error::storage(&self.path, e))?.len())
    }

    pub(super) fn truncate(&self) -> Result<()> {
        self.file.set_len(0).map_err(|e| Error::storage(&self.path, e))
    }

    /// Drops the bytes: used when they can never become a good file.
    pub(super) fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // An empty partial (nothing received) is no use to a resume.
        if self.file.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.path);
        }
        lock_writing().remove(&self.path);
    }
}

fn lock_writing() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    // The set stays consistent even if a holder panicked.
    WRITING.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a file's content is checked against its etag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// LFS files (and any 64-hex etag): SHA-256 of the content.
    Sha256,
    /// Small files in git: SHA-1 of `"blob {len}\0"` + content.
    GitSha1,
    /// An etag of another length: size only.
    None,
}

impl Check {
    pub(super) fn for_etag(etag: &str) -> Self {
        match etag.len() {
            64 => Check::Sha256,
            40 => Check::GitSha1,
            _ => Check::None,
        }
    }
}

/// Whether the file's content matches `etag`; hashing gigabytes takes seconds
/// on a phone, so it stays cancellable.
pub(super) fn matches_etag(path: &Path, etag: &str, size: u64, stop: &AtomicBool) -> Result<bool> {
    let check = Check::for_etag(etag);
    if check == Check::None {
        return Ok(true);
    }
    let mut file = File::open(path).map_err(|e| Error::storage(path, e))?;
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    if check == Check::GitSha1 {
        sha1.update(format!("blob {size}\0").as_bytes());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        let n = file.read(&mut buf).map_err(|e| Error::storage(path, e))?;
        if n == 0 {
            break;
        }
        match check {
            Check::Sha256 => sha256.update(&buf[..n]),
            _ => sha1.update(&buf[..n]),
        }
    }
    let actual = match check {
        Check::Sha256 => format!("{:x}", sha256.finalize()),
        _ => format!("{:x}", sha1.finalize()),
    };
    Ok(actual == etag)
}
