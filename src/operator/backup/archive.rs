//! The one-file form of a backup: a ustar archive, optionally zstd-compressed (recognised by
//! its magic bytes, not its name), holding `MANIFEST.json` first and then only regular files
//! (0600) and directories (0700) with plain relative names (a name the ustar fields cannot
//! hold, one component over 100 bytes, takes a GNU long-name entry, as the tar crate writes).
//!
//! Owns: writing that archive from a private build directory, and reading one entry by entry
//! into a [`Sink`] that checks every entry before reading it; [`members`], the one way an
//! untrusted tar stream (a backup or a skill) is iterated: raw entries, with GNU long-name and
//! PAX extension entries read here within [`MAX_EXTENSION_BYTES`] and applied to the entry
//! they describe.
//! Must not: unpack with the tar crate's own extraction (it would honour links and modes),
//! iterate untrusted entries in the tar crate's non-raw mode (it reads every extension entry
//! whole, whatever size it declares), accept an entry type other than a regular file or a
//! directory, or let a compressed stream ask for more than [`WINDOW_LOG_MAX`] of decoder
//! memory.

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
    let mut archive = tar::Archive::new(input);
    let mut first = true;
    for member in members(&mut archive)? {
        let Member {
            mut entry,
            path: raw,
        } = member?;
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

impl From<MemberError> for StageError {
    fn from(e: MemberError) -> Self {
        match e {
            MemberError::Read(e) => StageError::Read {
                what: "the archive".into(),
                reason: e.to_string(),
            },
            other => StageError::Malformed(other.to_string()),
        }
    }
}

/// The most bytes one GNU long-name or long-link entry or PAX header of an untrusted archive
/// may have (a path needs at most `PATH_MAX`, 4096; PAX records of times and xattrs a little
/// more). A larger one is refused before any of it is read.
pub(crate) const MAX_EXTENSION_BYTES: u64 = 64 << 10;

/// One entry of an untrusted archive, with the name its extension entries gave it.
pub(crate) struct Member<'a, R: 'a + Read> {
    /// The raw entry: its own header, its data as a reader (`size()` bytes).
    pub entry: tar::Entry<'a, R>,
    /// Its name: the GNU long name or the PAX `path` that preceded it, else its header's.
    pub path: Vec<u8>,
}

/// Why an untrusted archive cannot be iterated further.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemberError {
    /// The stream is unreadable or truncated, or a header is not a tar header.
    #[error("cannot read the archive: {0}")]
    Read(std::io::Error),
    /// An extension entry declares more than [`MAX_EXTENSION_BYTES`].
    #[error(
        "{what} declares {size} bytes, more than the {MAX_EXTENSION_BYTES} an extension entry \
         may have"
    )]
    TooLarge {
        /// Which extension.
        what: &'static str,
        /// Its declared size.
        size: u64,
    },
    /// Extension entries that do not describe exactly one following entry.
    #[error("{0}")]
    Malformed(String),
}

/// The raw entries of `archive`, extension entries applied: see [`Members`].
pub(crate) fn members<R: Read>(
    archive: &mut tar::Archive<R>,
) -> Result<Members<'_, R>, MemberError> {
    let entries = archive.entries().map_err(MemberError::Read)?.raw(true);
    Ok(Members {
        entries,
        done: false,
    })
}

/// Iterates an untrusted archive in the tar crate's raw mode (which reads no extension entry
/// itself): a GNU long-name (`L`), long-link (`K`) or PAX (`x`) entry of at most
/// [`MAX_EXTENSION_BYTES`] is read here and describes the next entry — `L` and the PAX `path`
/// record name it, the link name is not kept (links are refused anyway), the other PAX records
/// (times, xattrs) are ignored — and PAX global headers (`g`) are skipped within the same
/// bound. Refused: a larger extension entry (before reading it), two of one kind, both `L` and
/// a PAX `path` for one entry, an extension with no entry after it, a PAX record that does not
/// parse, and a PAX `size` other than the header's (raw mode positions the next header by the
/// header's size). After an error, or a GNU sparse entry (whose extra sparse headers raw mode
/// does not skip; every caller refuses sparse files), the iteration ends.
pub(crate) struct Members<'a, R: 'a + Read> {
    entries: tar::Entries<'a, R>,
    done: bool,
}

impl<'a, R: Read> Iterator for Members<'a, R> {
    type Item = Result<Member<'a, R>, MemberError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_member();
        self.done = match &next {
            Ok(Some(m)) => m.entry.header().entry_type().is_gnu_sparse(),
            Ok(None) | Err(_) => true,
        };
        next.transpose()
    }
}

impl<'a, R: Read> Members<'a, R> {
    fn next_member(&mut self) -> Result<Option<Member<'a, R>>, MemberError> {
        let mut pending = Pending::default();
        loop {
            let Some(entry) = self.entries.next() else {
                return match pending.first {
                    Some(what) => Err(MemberError::Malformed(format!(
                        "{what} ends the archive: no entry follows it"
                    ))),
                    None => Ok(None),
                };
            };
            let mut entry = entry.map_err(MemberError::Read)?;
            let Some(ext) = Extension::of(entry.header().entry_type()) else {
                return pending.apply(entry).map(Some);
            };
            let bytes = read_extension(&mut entry, ext)?;
            pending.add(ext, &bytes)?;
        }
    }
}

/// The extension entry types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extension {
    LongName,
    LongLink,
    Pax,
    PaxGlobal,
}

impl Extension {
    fn of(kind: EntryType) -> Option<Self> {
        if kind.is_gnu_longname() {
            Some(Self::LongName)
        } else if kind.is_gnu_longlink() {
            Some(Self::LongLink)
        } else if kind.is_pax_local_extensions() {
            Some(Self::Pax)
        } else if kind.is_pax_global_extensions() {
            Some(Self::PaxGlobal)
        } else {
            None
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::LongName => "a GNU long-name entry ('L')",
            Self::LongLink => "a GNU long-link entry ('K')",
            Self::Pax => "a PAX header ('x')",
            Self::PaxGlobal => "a PAX global header ('g')",
        }
    }
}

/// Reads an extension entry's data: refused unread past [`MAX_EXTENSION_BYTES`], and never
/// more than that read or allocated.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    ext: Extension,
) -> Result<Vec<u8>, MemberError> {
    let size = entry.size();
    if size > MAX_EXTENSION_BYTES {
        let what = ext.what();
        return Err(MemberError::TooLarge { what, size });
    }
    // Bounded by the check above.
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(MAX_EXTENSION_BYTES)
        .read_to_end(&mut bytes)
        .map_err(MemberError::Read)?;
    if bytes.len() as u64 != size {
        return Err(MemberError::Read(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} ends after {} of its {size} bytes",
                ext.what(),
                bytes.len()
            ),
        )));
    }
    Ok(bytes)
}

/// What the extension entries read so far say about the next entry.
#[derive(Default)]
struct Pending {
    /// The first extension entry seen (for the error when nothing follows).
    first: Option<&'static str>,
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: Option<Pax>,
}

/// The records of a PAX header that matter here.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pending {
    fn add(&mut self, ext: Extension, bytes: &[u8]) -> Result<(), MemberError> {
        let twice = || {
            MemberError::Malformed(format!(
                "{} follows another before the entry they describe",
                ext.what()
            ))
        };
        match ext {
            // Global records (e.g. `git archive`'s comment) describe no one entry: ignored.
            Extension::PaxGlobal => return Ok(()),
            Extension::LongName if self.long_name.is_some() => return Err(twice()),
            Extension::LongName => {
                // A C string, as GNU tar reads it (the tar crate writes one NUL after it).
                let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                self.long_name = Some(bytes[..end].to_vec());
            }
            Extension::LongLink if self.long_link => return Err(twice()),
            Extension::LongLink => self.long_link = true,
            Extension::Pax if self.pax.is_some() => return Err(twice()),
            Extension::Pax => self.pax = Some(parse_pax(bytes)?),
        }
        self.first.get_or_insert(ext.what());
        Ok(())
    }

    /// Names `entry` after the pending extensions.
    fn apply<'a, R: Read>(self, entry: tar::Entry<'a, R>) -> Result<Member<'a, R>, MemberError> {
        let (pax_path, pax_size) = self.pax.map(|p| (p.path, p.size)).unwrap_or_default();
        let path = match (self.long_name, pax_path) {
            (Some(_), Some(_)) => {
                return Err(MemberError::Malformed(
                    "both a GNU long-name entry ('L') and a PAX path name one entry".into(),
                ))
            }
            (Some(name), None) | (None, Some(name)) => name,
            // Raw mode: the header's own name (with a ustar prefix when it has one).
            (None, None) => entry.path_bytes().into_owned(),
        };
        if let Some(size) = pax_size.filter(|s| *s != entry.size()) {
            return Err(MemberError::Malformed(format!(
                "a PAX header ('x') gives {size} bytes for {}, its header {}",
                String::from_utf8_lossy(&path),
                entry.size()
            )));
        }
        Ok(Member { entry, path })
    }
}

/// The `path` and `size` records of a PAX header; every record must parse, and neither may
/// be given twice (readers disagree on which one wins).
fn parse_pax(bytes: &[u8]) -> Result<Pax, MemberError> {
    let what = Extension::Pax.what();
    let mut pax = Pax::default();
    let (mut path_seen, mut size_seen) = (false, false);
    for record in tar::PaxExtensions::new(bytes) {
        let record = record
            .map_err(|_| MemberError::Malformed(format!("{what} holds a malformed record")))?;
        let key = record.key_bytes();
        let seen = match key {
            b"path" => &mut path_seen,
            b"size" => &mut size_seen,
            _ => continue,
        };
        if std::mem::replace(seen, true) {
            return Err(MemberError::Malformed(format!(
                "{what} gives {} twice",
                String::from_utf8_lossy(key)
            )));
        }
        let value = record.value_bytes();
        if key == b"path" {
            // An empty value removes the record (POSIX): the header's name stands.
            pax.path = Some(value.to_vec()).filter(|v| !v.is_empty());
        } else {
            let size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            pax.size = Some(size.ok_or_else(|| {
                MemberError::Malformed(format!("{what} gives a size that is not a number"))
            })?);
        }
    }
    Ok(pax)
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
