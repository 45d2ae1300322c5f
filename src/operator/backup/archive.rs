//! The one-file form of a backup: a ustar archive, optionally zstd-compressed (recognised by
//! its magic bytes, not its name), holding `MANIFEST.json` first and then only regular files
//! (0600) and directories (0700) with plain relative names.
//!
//! Owns: writing that archive from a private build directory, and reading one entry by entry
//! into a [`Sink`] that checks every entry before reading it.
//! Must not: unpack with the tar crate's own extraction (it would honour links and modes),
//! accept an entry type other than a regular file or a directory, or let a compressed stream
//! ask for more than [`WINDOW_LOG_MAX`] of decoder memory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tar::{EntryType, Header};

use super::layout::MANIFEST;
use super::staging::{Sink, StageError};

/// zstd's frame magic number, little-endian on disk.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The largest decoder window accepted (2^27 = 128 MiB; `create` uses level 3's 2^21).
const WINDOW_LOG_MAX: u32 = 27;
/// The compression level of `create` (zstd's default: fast, about 3x on a store).
const LEVEL: i32 = 3;

/// Writes the archive of `build` (every regular file and directory under it, sorted) with
/// `manifest` as its first entry, into `file`; fsyncs it. `compress`: zstd.
pub fn write(build: &Path, manifest: &[u8], file: File, compress: bool) -> Result<(), String> {
    let out = BufWriter::with_capacity(256 << 10, file);
    let out = if compress {
        let encoder = zstd::stream::write::Encoder::new(out, LEVEL).map_err(|e| e.to_string())?;
        let mut builder = tar::Builder::new(encoder);
        append_all(&mut builder, build, manifest)?;
        let encoder = builder.into_inner().map_err(|e| e.to_string())?;
        encoder.finish().map_err(|e| e.to_string())?
    } else {
        let mut builder = tar::Builder::new(out);
        append_all(&mut builder, build, manifest)?;
        builder.into_inner().map_err(|e| e.to_string())?
    };
    let file = out.into_inner().map_err(|e| e.error().to_string())?;
    file.sync_all().map_err(|e| e.to_string())
}

fn append_all<W: Write>(
    builder: &mut tar::Builder<W>,
    build: &Path,
    manifest: &[u8],
) -> Result<(), String> {
    let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let header = |kind: EntryType, size: u64, mode: u32| {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h
    };
    let mut h = header(EntryType::Regular, manifest.len() as u64, 0o600);
    builder
        .append_data(&mut h, MANIFEST, manifest)
        .map_err(|e| format!("cannot write {MANIFEST}: {e}"))?;
    for path in super::files::walk(build) {
        let name = path
            .strip_prefix(build)
            .map_err(|e| e.to_string())?
            .to_str()
            .ok_or("a file name is not UTF-8")?
            .to_string();
        if name == MANIFEST {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            let mut h = header(EntryType::Directory, 0, 0o700);
            builder
                .append_data(&mut h, format!("{name}/"), std::io::empty())
                .map_err(|e| format!("cannot write {name}: {e}"))?;
        } else if meta.is_file() {
            let file = File::open(&path).map_err(|e| format!("cannot read {name}: {e}"))?;
            let mut h = header(EntryType::Regular, meta.len(), 0o600);
            builder
                .append_data(&mut h, &name, file.take(meta.len()))
                .map_err(|e| format!("cannot write {name}: {e}"))?;
        }
    }
    builder.finish().map_err(|e| e.to_string())
}

/// Reads the archive file at `path` into `sink`.
pub fn read(path: &Path, sink: &mut Sink<'_>) -> Result<(), StageError> {
    entries(open_untrusted(path)?, sink)
}

/// Opens an untrusted archive file (not a FIFO or device: `O_NONBLOCK|O_NOCTTY`, then
/// `fstat`) and returns its tar stream, zstd-decoded (bounded window) when it starts with
/// zstd's magic. Also the reader of skill archives.
pub(crate) fn open_untrusted(path: &Path) -> Result<Box<dyn Read>, StageError> {
    let shown = path.display().to_string();
    let err = |e: std::io::Error| StageError::Read {
        what: shown.clone(),
        reason: e.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(StageError::NotRegular {
            name: shown,
            what: "is not a regular file",
        });
    }
    let mut input = BufReader::with_capacity(256 << 10, file);
    let compressed = input.fill_buf().map_err(err)?.starts_with(&ZSTD_MAGIC);
    if compressed {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(err)?;
        decoder.window_log_max(WINDOW_LOG_MAX).map_err(err)?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(input))
    }
}

/// `O_NONBLOCK | O_NOCTTY` for opening the operator's path (already `stat`ed as a file).
fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32
}

fn entries<R: Read>(input: R, sink: &mut Sink<'_>) -> Result<(), StageError> {
    let bad = |e: std::io::Error| StageError::Read {
        what: "the archive".into(),
        reason: e.to_string(),
    };
    let mut archive = tar::Archive::new(input);
    let mut first = true;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let size = entry.size();
        let kind = entry.header().entry_type();
        if std::mem::take(&mut first) {
            if kind != EntryType::Regular || raw != MANIFEST.as_bytes() {
                return Err(StageError::NoManifest);
            }
            sink.manifest(size, &mut entry)?;
            continue;
        }
        match kind {
            EntryType::Regular => sink.file(&raw, size, &mut entry)?,
            EntryType::Directory => sink.dir(&raw)?,
            other => {
                return Err(StageError::NotRegular {
                    name: String::from_utf8_lossy(&raw).into_owned(),
                    what: tar_kind(other),
                })
            }
        }
    }
    if first {
        return Err(StageError::NoManifest);
    }
    Ok(())
}

pub(crate) fn tar_kind(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Symlink => "is a symbolic link",
        EntryType::Link => "is a hard link",
        EntryType::Char | EntryType::Block => "is a device node",
        EntryType::Fifo => "is a FIFO",
        EntryType::GNUSparse => "is a sparse file",
        _ => "is an archive entry of an unsupported type",
    }
}
