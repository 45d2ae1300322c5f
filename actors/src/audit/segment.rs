//! Segment files: their names, listing them, reading the tail of one, and the append-only
//! writer that rotates and fsyncs.
//!
//! Owns: the files under the audit directory and their modes (dir 0700, files 0600 at creation).
//! Must not: interpret a record beyond finding line boundaries (that is `record`).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// How much of a segment's end is read at a time while looking for the last line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The file name of segment `index`, e.g. `audit-000001.jsonl`.
pub(crate) fn segment_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The index of a segment file name, if `name` is exactly one [`segment_name`] would produce.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u64 = digits.parse().ok()?;
    (segment_name(index) == name).then_some(index)
}

/// The segments in `dir`, sorted by index. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((index, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(index, _)| *index);
    Ok(segments)
}

/// The end of a segment, as far as line boundaries go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The segment (up to the given length) holds no byte.
    Empty,
    /// It ends with a complete line; `last_line` is that line without its `\n`.
    Complete {
        /// The last line, without its `\n`.
        last_line: Vec<u8>,
    },
    /// It ends with bytes after the last `\n` (a write cut short).
    Torn {
        /// Length of the segment up to and including the last `\n` (0 when there is none).
        complete_len: u64,
        /// The bytes after it.
        torn: Vec<u8>,
    },
}

/// Reads the end of the first `len` bytes of `file`.
pub(crate) fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    if len == 0 {
        return Ok(Tail::Empty);
    }
    // `buf` always holds `file[start..len]`.
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let new_start = start.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (start - new_start) as usize];
        file.read_exact_at(&mut chunk, new_start)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = new_start;
        let ends_complete = buf.last() == Some(&b'\n');
        // Where the last line begins: after the last `\n` (ignoring a final one).
        let search = if ends_complete {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let found = search.iter().rposition(|&b| b == b'\n');
        if found.is_none() && start > 0 {
            continue;
        }
        let line_start = found.map_or(0, |i| i + 1);
        return Ok(if ends_complete {
            Tail::Complete {
                last_line: buf[line_start..buf.len() - 1].to_vec(),
            }
        } else {
            Tail::Torn {
                complete_len: start + line_start as u64,
                torn: buf[line_start..].to_vec(),
            }
        });
    }
}

/// Appends batches of complete lines to the last segment, starting a new one when it is full.
pub(crate) struct SegmentWriter {
    /// The audit directory.
    dir: PathBuf,
    /// Start a new segment before a write once the current one holds this many bytes.
    max_bytes: u64,
    /// Index of the segment being appended to.
    index: u64,
    /// The open segment (append mode, 0600).
    file: File,
    /// Its length.
    len: u64,
}

impl SegmentWriter {
    /// Appends to segment `index` (creating it, 0600, if missing), which is `len` bytes long.
    pub(crate) fn open(dir: &Path, max_bytes: u64, index: u64, len: u64) -> io::Result<Self> {
        let path = dir.join(segment_name(index));
        let existed = path.exists();
        let file = fsutil::open_private_append(&path)?;
        if !existed {
            fsutil::sync_dir(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            index,
            file,
            len,
        })
    }

    /// Writes `bytes` (whole lines) and `fdatasync`s them. Rotates first if the current segment
    /// is full. On an error nothing is known about what reached the disk: the caller must stop
    /// using this writer.
    pub(crate) fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_unsynced(bytes)?;
        self.sync()
    }

    /// The first half of [`SegmentWriter::write_batch`]: the bytes are in the segment
    /// (readable), not yet durable.
    pub(crate) fn write_unsynced(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.len > 0 && self.len >= self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The second half of [`SegmentWriter::write_batch`]: everything written is durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        let syncing = std::time::Instant::now();
        self.file.sync_data()?;
        crate::metrics::metrics().audit_fsync(syncing.elapsed());
        Ok(())
    }

    /// Starts the next segment: creates it (0600, must not exist) and makes its entry durable.
    fn rotate(&mut self) -> io::Result<()> {
        let index = self.index + 1;
        let path = self.dir.join(segment_name(index));
        // Appending through `create_private_new` would need O_APPEND; reopen in append mode.
        drop(fsutil::create_private_new(&path)?);
        let file = fsutil::open_private_append(&path)?;
        fsutil::sync_dir(&self.dir)?;
        self.file = file;
        self.index = index;
        self.len = 0;
        Ok(())
    }
}
