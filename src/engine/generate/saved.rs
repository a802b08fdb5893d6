//! Saved chats: a conversation and its KV cache in one file, so a chat
//! survives the app being killed in the background and its next turn starts
//! as an ongoing chat's does (the history is not run through the model again).
//!
//! Layout, little-endian:
//! - `PHICHAT\0`, format version (u32);
//! - the model's identity (32 bytes, `gguf::identity`), its context (u32),
//!   the cache's kind (u8: bit 0 f32 rather than f16, bit 1 rotated by
//!   LongRoPE's long factors), layers, KV heads, head size (u32 each);
//! - the session's first messages, then its history: a count (u32), then per
//!   message its role (u8: system, user, assistant, tool) and UTF-8 text
//!   (u32 length, bytes), then (since version 2) its tool calls: a count
//!   (u32), then per call its name and its arguments (UTF-8, as the text);
//! - the tokens in the cache: a count (u32), then the ids (u32 each);
//! - the cache: every layer's keys then values, per KV head, those positions;
//! - a CRC-32 of everything before it.
//!
//! Restoring checks the header first (another model's file is refused before
//! anything else is read), every length against what is left of the file
//! (a lying count allocates nothing), the size of the cache against the file's
//! and the checksum before the conversation is used: a truncated, corrupt or
//! foreign file is `Error::SavedChat`, never a wrong answer.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::super::chat::{Message, Role, ToolCall};
use super::super::error::{Error, Result};
use super::super::kv_cache::{self, KvPrecision};
use super::super::model::LoadedModel;
use super::Sequence;

const MAGIC: &[u8; 8] = b"PHICHAT\0";
const VERSION: u32 = 2;
/// Version 1 files (no tool calls) still restore.
const OLDEST_VERSION: u32 = 1;
/// Magic, version, identity, context, precision, layers, heads, head size.
const HEADER: usize = 8 + 4 + 32 + 4 + 1 + 3 * 4;

/// What a saved chat holds besides its cache.
pub(crate) struct Saved {
    pub initial: Vec<Message>,
    pub history: Vec<Message>,
}

/// The cache's shape, as the header states it.
fn shape(model: &LoadedModel, precision: KvPrecision, long_rope: bool) -> Vec<u8> {
    let cfg = model.weights.cfg();
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&model.identity());
    out.extend_from_slice(&(model.context_length() as u32).to_le_bytes());
    let f32_bit = match precision {
        KvPrecision::F16 => 0,
        KvPrecision::F32 => 1,
    };
    out.push(f32_bit | (u8::from(long_rope) << 1));
    for n in [model.weights.layer_count(), cfg.n_kv_head, cfg.head_dim] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out
}

/// A writer that keeps the CRC of what passed through.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn put_messages(out: &mut Vec<u8>, messages: &[Message]) {
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        out.push(match m.role {
            Role::System => 0,
            Role::User => 1,
            Role::Assistant => 2,
            Role::Tool => 3,
        });
        put_text(out, &m.content);
        out.extend_from_slice(&(m.tool_calls.len() as u32).to_le_bytes());
        for call in &m.tool_calls {
            put_text(out, &call.name);
            put_text(out, &call.arguments);
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Writes the chat to `path` through a file beside it, renamed into place
/// once complete and synced: a kill mid-save leaves the old file (or none),
/// never half of one.
pub(crate) fn save(model: &LoadedModel, saved: &Saved, sequence: &Sequence, path: &Path) -> Result<()> {
    let cache = &sequence.state.cache;
    let tokens = sequence.cached_tokens();
    if tokens.len() != cache.len() {
        return Err(Error::Inference(format!("the cache holds {} positions for {} tokens", cache.len(), tokens.len())));
    }
    let mut head = shape(model, cache.precision(), sequence.state.long_rope);
    put_messages(&mut head, &saved.initial);
    put_messages(&mut head, &saved.history);
    head.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    head.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));

    let partial = partial_path(path);
    let storage = |source| Error::Storage { path: path.to_path_buf(), source };
    let write = || -> std::io::Result<()> {
        let file = File::create(&partial)?;
        let mut out = Summed { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
        out.write_all(&head)?;
        cache.save(&mut out)?;
        let crc = out.crc.clone().finalize();
        let mut file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&crc.to_le_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        storage(e)
    })
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

/// Reads with a running CRC and a count of what is left of the file.
struct Source<R> {
    inner: R,
    crc: crc32fast::Hasher,
    left: u64,
}

fn corrupt(what: &str) -> Error {
    Error::SavedChat(format!("the file is truncated or corrupt ({what})"))
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

impl<R: Read> Source<R> {
    fn field(&mut self, n: usize, what: &str) -> Result<Vec<u8>> {
        if n as u64 > self.left {
            return Err(corrupt(what));
        }
        let mut buf = vec![0u8; n];
        self.read_exact(&mut buf).map_err(|_| corrupt(what))?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.field(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn text(&mut self, what: &str) -> Result<String> {
        let len = self.u32(what)? as usize;
        String::from_utf8(self.field(len, what)?).map_err(|_| corrupt(what))
    }

    fn messages(&mut self, version: u32) -> Result<Vec<Message>> {
        let count = self.u32("message count")?;
        // Each message takes at least five bytes: a lying count fails here.
        if u64::from(count) * 5 > self.left {
            return Err(corrupt("message count"));
        }
        (0..count)
            .map(|_| {
                let role = match self.field(1, "role")?[0] {
                    0 => Role::System,
                    1 => Role::User,
                    2 => Role::Assistant,
                    3 => Role::Tool,
                    _ => return Err(corrupt("role")),
                };
                let mut message = Message::new(role, self.text("message text")?);
                if version >= 2 {
                    let calls = self.u32("tool call count")?;
                    // Each call takes at least eight bytes.
                    if u64::from(calls) * 8 > self.left {
                        return Err(corrupt("tool call count"));
                    }
                    for _ in 0..calls {
                        let name = self.text("tool call name")?;
                        message.tool_calls.push(ToolCall { name, arguments: self.text("tool call arguments")? });
                    }
                }
                Ok(message)
            })
            .collect()
    }
}

/// Reads a chat `save` wrote for this model into `sequence` (a fresh one).
pub(crate) fn restore(model: &LoadedModel, sequence: &mut Sequence, path: &Path) -> Result<Saved> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::SavedChat(format!("there is no saved chat at {}", path.display())),
        _ => io(e),
    })?;
    let size = file.metadata().map_err(io)?.len();
    let mut src = Source { inner: BufReader::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new(), left: size };

    let head = src.field(HEADER, "header").map_err(|_| Error::SavedChat("the file is not a saved chat".into()))?;
    if &head[..8] != MAGIC {
        return Err(Error::SavedChat("the file is not a saved chat".into()));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(Error::SavedChat(format!(
            "it is in format version {version}; this library reads versions {OLDEST_VERSION} to {VERSION}"
        )));
    }
    let precision = match head[48] & 1 {
        0 => KvPrecision::F16,
        _ => KvPrecision::F32,
    };
    let long_rope = head[48] & 2 != 0;
    if head[48] > 3 || (long_rope && model.weights.cfg().rope_original_context.is_none()) {
        return Err(corrupt("cache type"));
    }
    // Everything but the context, which may differ (checked against the tokens).
    let want = shape(model, precision, long_rope);
    if head[12..44] != want[12..44] || head[49..] != want[49..] {
        return Err(Error::SavedChat("it was saved by another model".into()));
    }

    let initial = src.messages(version)?;
    let history = src.messages(version)?;
    let count = src.u32("token count")? as usize;
    if count > model.context_length() {
        return Err(Error::SavedChat(format!(
            "it holds {count} tokens, more than this model's context of {}",
            model.context_length()
        )));
    }
    let ids = src.field(count * 4, "tokens")?;
    let tokens: Vec<u32> = ids.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if tokens.iter().any(|&t| !model.text.vocab.contains(t)) {
        return Err(corrupt("token ids"));
    }
    let cfg = model.weights.cfg();
    let per_token = kv_cache::bytes_per_position(model.weights.layer_count(), cfg.n_kv_head, cfg.head_dim, precision);
    if src.left != count as u64 * per_token as u64 + 4 {
        return Err(corrupt("cache size"));
    }
    sequence.state.cache.load(count, precision, &mut src)?;
    let crc = src.crc.clone().finalize();
    let mut stored = [0u8; 4];
    src.inner.read_exact(&mut stored).map_err(|_| corrupt("checksum"))?;
    if u32::from_le_bytes(stored) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    sequence.cached = tokens;
    sequence.state.long_rope = long_rope;
    Ok(Saved { initial, history })
}
