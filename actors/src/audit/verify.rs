//! Verification of the whole chain (`kafclaw audit verify [--from SEQ]`).
//!
//! Owns: streaming every segment in index order and checking, per line, the layout, the `seq`
//! (gapless), the `prev` link and the keyed hash, reporting the first problem by sequence
//! number. Lines are checked at the fixed places of the stored layout (see the module doc of
//! [`crate::audit`]): no JSON parser, no allocation per record.
//! Must not: write anything.
//!
//! What the segments cannot show on their own: records cut from the *end* of the log together
//! with their newline (the result is a valid, shorter chain). [`verify_against`] also takes the
//! head recorded apart from the segments ([`super::RecordedHead`]): segments that end before it
//! are [`VerifyError::TailMissing`], and a record at its seq with another hash is
//! [`VerifyError::HeadMismatch`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::head::{decode, Head};
use super::record::{parse_line, LineView};
use super::segment::{list_segments, segment_name};
use super::{AuditHead, AuditKey};

/// Read buffer per segment.
const READ_BUFFER: usize = 1 << 20;
/// How much is read and checked at a time (grown if one line is longer).
const CHUNK: usize = 4 << 20;
/// At most this many threads check hashes.
const MAX_THREADS: usize = 8;
/// Below this many lines in a chunk, hashes are checked on the calling thread.
const PARALLEL_MIN_LINES: usize = 1024;

/// A chain that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many records were verified.
    pub records: u64,
    /// Seq of the last record (0 for an empty log).
    pub head_seq: u64,
    /// Hash of the last record (hex; 64 zeros for an empty log).
    pub head_hash: String,
    /// How many bytes of records were verified.
    pub bytes: u64,
}

/// The first thing wrong with the chain, named by sequence number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A segment or the directory could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// A segment file is missing from the sequence of segments.
    #[error("audit segment {name} is missing: the records after {after_seq} are gone")]
    SegmentMissing {
        /// The missing segment's file name.
        name: String,
        /// The last record before the gap (0 if the gap is at the start).
        after_seq: u64,
    },
    /// A line is not laid out as a record.
    #[error("the record after {after_seq} in {segment} is malformed: {reason}")]
    Malformed {
        /// The last good record before it.
        after_seq: u64,
        /// The segment file name.
        segment: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record is missing: the next record carries a later `seq`.
    #[error("record {seq} is missing (record {found} follows record {})", seq.saturating_sub(1))]
    Missing {
        /// The missing record.
        seq: u64,
        /// The record found in its place.
        found: u64,
    },
    /// A record appears out of its place (moved or duplicated).
    #[error("record {seq} is out of order (moved or duplicated)")]
    Reordered {
        /// The record that is out of place.
        seq: u64,
    },
    /// A record's `prev` is not the hash of the record before it.
    #[error(
        "record {seq} does not chain to record {}: its prev is not that record's hash",
        seq.saturating_sub(1)
    )]
    ChainBroken {
        /// The record whose `prev` is wrong.
        seq: u64,
    },
    /// A record's hash does not verify with the key: it was altered, or forged without the key.
    #[error("record {seq} was altered or forged: its hash does not verify with the audit key")]
    HashMismatch {
        /// The record.
        seq: u64,
    },
    /// A segment ends in an incomplete line (a write cut short, or a truncated file).
    #[error("the audit log is truncated after record {after_seq}: the last line is incomplete; run `kafclaw audit repair`")]
    Truncated {
        /// The last complete record.
        after_seq: u64,
    },
    /// The segments end before the head recorded apart from them: whole records were cut.
    #[error(
        "records after seq {after_seq} are missing: the recorded head is record {recorded_seq}"
    )]
    TailMissing {
        /// The last record the segments hold (0 when none).
        after_seq: u64,
        /// The recorded head's sequence number.
        recorded_seq: u64,
    },
    /// The record at the recorded head's seq has another hash: the log was rewritten from there.
    #[error("record {seq} is not the recorded head: the log was rewritten from there")]
    HeadMismatch {
        /// The record.
        seq: u64,
    },
    /// The recorded head given to [`verify_against`] is not a seq and 64 hex digits.
    #[error("the recorded audit head is malformed")]
    HeadMalformed,
    /// The segments end before a record anchored off the host: whole records were cut.
    #[error("records after seq {after_seq} are missing: the fleet anchored record {anchored_seq}")]
    AnchorMissing {
        /// The last record the segments hold (0 when none).
        after_seq: u64,
        /// The newest anchored record the segments do not reach.
        anchored_seq: u64,
    },
    /// The record at an anchored seq has another hash than the anchor.
    #[error("record {seq} is not the record the fleet anchored: the log was rewritten from there")]
    AnchorMismatch {
        /// The record.
        seq: u64,
    },
    /// Two anchors name the same record with different hashes: a rewritten chain was anchored
    /// again after the original.
    #[error("the fleet holds two different anchors for record {seq}: a rewritten log was anchored after the original")]
    AnchorsDisagree {
        /// The record.
        seq: u64,
    },
    /// An anchor is not a seq and 64 hex digits.
    #[error("an audit anchor is malformed")]
    AnchorMalformed,
    /// `--from SEQ` names a record the log does not hold.
    #[error("record {from} is not in the audit log (head is record {head_seq})")]
    FromNotFound {
        /// The requested first record.
        from: u64,
        /// The last record in the log.
        head_seq: u64,
    },
}

/// Verifies the chain in `dir` with `key`, from the first record or from record `from`
/// (whose `prev` is then trusted). Returns the first problem found. The segments alone: see
/// [`verify_against`] for the log of a home.
pub fn verify(dir: &Path, key: &AuditKey, from: Option<u64>) -> Result<VerifyReport, VerifyError> {
    verify_against(dir, key, from, None)
}

/// Like [`verify`], and the segments must reach `recorded`, the head recorded apart from them
/// (read it *before* calling, so that records appended meanwhile only make the log longer).
pub fn verify_against(
    dir: &Path,
    key: &AuditKey,
    from: Option<u64>,
    recorded: Option<&AuditHead>,
) -> Result<VerifyReport, VerifyError> {
    verify_anchored(dir, key, from, recorded, &[])
}

/// Like [`verify_against`], and the chain must also carry, at every anchored seq, the anchor's
/// hash: `anchors` are heads published off the host (every one retained, in any order, repeats
/// allowed). A rewrite of any record at or before an anchored one, or a cut below it, fails,
/// whatever newer anchors say; anchors before `from` are not checked.
pub fn verify_anchored(
    dir: &Path,
    key: &AuditKey,
    from: Option<u64>,
    recorded: Option<&AuditHead>,
    anchors: &[AuditHead],
) -> Result<VerifyReport, VerifyError> {
    let recorded = match recorded {
        Some(head) => Some(decode(head).ok_or(VerifyError::HeadMalformed)?),
        None => None,
    };
    let anchors = sorted_anchors(anchors)?;
    let io_error = |path: &Path, error: std::io::Error| VerifyError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    // Record 0 does not exist; `--from 0` means from the first record.
    let from = from.map(|seq| seq.max(1));
    let segments = list_segments(dir).map_err(|e| io_error(dir, e))?;
    let start = match from {
        None => 0,
        Some(seq) => first_segment_for(&segments, seq)?,
    };
    let mut walker = Walker {
        key,
        from: from.unwrap_or(1),
        anchored: from.is_none(),
        next_seq: 1,
        prev: [0u8; 32],
        records: 0,
        bytes: 0,
        last_seq: 0,
        recorded,
        anchors: &anchors,
    };
    let first_index = match from {
        None => 1,
        Some(_) => segments.get(start).map_or(1, |(index, _)| *index),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let mut buf = vec![0u8; CHUNK];
    for (offset, (index, path)) in segments[start..].iter().enumerate() {
        let expected_index = first_index + offset as u64;
        if *index != expected_index {
            return Err(VerifyError::SegmentMissing {
                name: segment_name(expected_index),
                after_seq: walker.last_seq,
            });
        }
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        // `buf[..filled]` holds bytes read but not yet checked (at most one partial line).
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0); // a line longer than the buffer
            }
            let read = match file.read(&mut buf[filled..]) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(path, e)),
            };
            if read == 0 {
                break;
            }
            filled += read;
            let Some(last_newline) = memchr::memrchr(b'\n', &buf[..filled]) else {
                continue;
            };
            walker
                .chunk(&buf[..=last_newline], threads)
                .map_err(|problem| problem.into_error(&segments, path, &walker))?;
            buf.copy_within(last_newline + 1..filled, 0);
            filled -= last_newline + 1;
        }
        if filled > 0 {
            return Err(VerifyError::Truncated {
                after_seq: walker.last_seq,
            });
        }
    }
    // Before `--from` is looked at: a cut tail may have taken record `from` with it.
    if let Some(recorded) = recorded.filter(|r| walker.last_seq < r.seq) {
        return Err(VerifyError::TailMissing {
            after_seq: walker.last_seq,
            recorded_seq: recorded.seq,
        });
    }
    if let Some(anchor) = anchors.last().filter(|a| walker.last_seq < a.seq) {
        return Err(VerifyError::AnchorMissing {
            after_seq: walker.last_seq,
            anchored_seq: anchor.seq,
        });
    }
    if !walker.anchored {
        return Err(VerifyError::FromNotFound {
            from: walker.from,
            head_seq: walker.last_seq,
        });
    }
    Ok(VerifyReport {
        records: walker.records,
        head_seq: walker.last_seq,
        head_hash: hex::encode(walker.prev),
        bytes: walker.bytes,
    })
}

/// `anchors` decoded, sorted by seq, repeats merged; two hashes for one seq disagree.
fn sorted_anchors(anchors: &[AuditHead]) -> Result<Vec<Head>, VerifyError> {
    let mut decoded = anchors
        .iter()
        .map(|a| decode(a).ok_or(VerifyError::AnchorMalformed))
        .collect::<Result<Vec<_>, _>>()?;
    decoded.sort_by_key(|h| h.seq);
    decoded.dedup_by(|later, earlier| later.seq == earlier.seq && later.hash == earlier.hash);
    if let Some(pair) = decoded.windows(2).find(|w| w[0].seq == w[1].seq) {
        return Err(VerifyError::AnchorsDisagree { seq: pair[0].seq });
    }
    Ok(decoded)
}

/// The position in `segments` of the last segment whose first record is at most `seq`.
fn first_segment_for(segments: &[(u64, PathBuf)], seq: u64) -> Result<usize, VerifyError> {
    let mut chosen = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        match first_seq(path)? {
            Some(first) if first <= seq => chosen = i,
            Some(_) => break,
            None => {}
        }
    }
    Ok(chosen)
}

/// The `seq` of a segment's first line, if it has a readable one.
fn first_seq(path: &Path) -> Result<Option<u64>, VerifyError> {
    let file = File::open(path).map_err(|e| VerifyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut line = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(|e| VerifyError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(parse_line(&line).ok().map(|view| view.seq))
}

/// Whether any segment holds a line with `seq` (used to tell a missing record from a moved one).
fn contains_seq(segments: &[(u64, PathBuf)], seq: u64) -> bool {
    segments.iter().any(|(_, path)| {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if parse_line(&line).is_ok_and(|view| view.seq == seq) {
                return true;
            }
        }
    })
}

/// The running check over consecutive lines.
struct Walker<'k> {
    /// The audit key.
    key: &'k AuditKey,
    /// The first record to verify.
    from: u64,
    /// Whether record `from` has been reached (always true without `--from`).
    anchored: bool,
    /// The `seq` the next line must carry.
    next_seq: u64,
    /// The hash the next line's `prev` must carry.
    prev: [u8; 32],
    /// Records verified.
    records: u64,
    /// Bytes of records linked (with newlines).
    bytes: u64,
    /// The last record read (verified or skipped before `from`).
    last_seq: u64,
    /// The head recorded apart from the segments: the record at its seq must carry its hash.
    recorded: Option<Head>,
    /// Anchors not reached yet, ascending by seq: each record at one's seq must carry its hash.
    anchors: &'k [Head],
}

/// What is wrong with one line, before it is turned into a [`VerifyError`].
enum Problem {
    /// Not laid out as a record.
    Malformed(&'static str),
    /// Carries `found` where `expected` was due.
    SeqMismatch { expected: u64, found: u64 },
    /// Wrong `prev`.
    ChainBroken(u64),
    /// Wrong hash.
    HashMismatch(u64),
    /// The record at the recorded head's seq has another hash.
    HeadMismatch(u64),
    /// The record at an anchor's seq has another hash.
    AnchorMismatch(u64),
}

impl Problem {
    fn into_error(self, segments: &[(u64, PathBuf)], path: &Path, walker: &Walker) -> VerifyError {
        match self {
            Problem::Malformed(reason) => VerifyError::Malformed {
                after_seq: walker.last_seq,
                segment: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                reason,
            },
            Problem::SeqMismatch { expected, found } if found > expected => {
                if contains_seq(segments, expected) {
                    VerifyError::Reordered { seq: expected }
                } else {
                    VerifyError::Missing {
                        seq: expected,
                        found,
                    }
                }
            }
            Problem::SeqMismatch { found, .. } => VerifyError::Reordered { seq: found },
            Problem::ChainBroken(seq) => VerifyError::ChainBroken { seq },
            Problem::HashMismatch(seq) => VerifyError::HashMismatch { seq },
            Problem::HeadMismatch(seq) => VerifyError::HeadMismatch { seq },
            Problem::AnchorMismatch(seq) => VerifyError::AnchorMismatch { seq },
        }
    }
}

impl Walker<'_> {
    /// Checks a chunk of whole lines (each ending in `\n`): layout, `seq` and `prev` in order on
    /// this thread, the keyed hashes spread over `threads` threads. The first problem in line
    /// order wins, as if every line had been checked completely one after the other.
    fn chunk(&mut self, chunk: &[u8], threads: usize) -> Result<(), Problem> {
        let mut views = Vec::new();
        let mut structural = None;
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', chunk) {
            let line = &chunk[start..newline];
            start = newline + 1;
            match self.link(line) {
                Ok(Some(view)) => views.push(view),
                Ok(None) => {}
                Err(problem) => {
                    structural = Some(problem);
                    break;
                }
            }
        }
        if let Some(bad) = first_bad_hash(&views, self.key, threads) {
            return Err(Problem::HashMismatch(views[bad].seq));
        }
        structural.map_or(Ok(()), Err)
    }

    /// Checks one line's layout, `seq` and `prev` and advances the chain past it. Returns the
    /// line for the hash check, or `None` for a line before `--from`.
    fn link<'l>(&mut self, line: &'l [u8]) -> Result<Option<LineView<'l>>, Problem> {
        let view = parse_line(line).map_err(Problem::Malformed)?;
        if !self.anchored {
            if view.seq < self.from {
                self.last_seq = view.seq;
                return Ok(None);
            }
            if view.seq > self.from {
                return Err(Problem::SeqMismatch {
                    expected: self.from,
                    found: view.seq,
                });
            }
            // `--from`: this record's `prev` is trusted.
            self.anchored = true;
            self.next_seq = view.seq;
            self.prev = view.prev;
        }
        if view.seq != self.next_seq {
            return Err(Problem::SeqMismatch {
                expected: self.next_seq,
                found: view.seq,
            });
        }
        if view.prev != self.prev {
            return Err(Problem::ChainBroken(view.seq));
        }
        if self
            .recorded
            .is_some_and(|r| r.seq == view.seq && r.hash != view.hash)
        {
            return Err(Problem::HeadMismatch(view.seq));
        }
        // Anchors below this record lie before `--from`: not checked.
        while let Some((anchor, rest)) = self.anchors.split_first() {
            if anchor.seq > view.seq {
                break;
            }
            if anchor.seq == view.seq && anchor.hash != view.hash {
                return Err(Problem::AnchorMismatch(view.seq));
            }
            self.anchors = rest;
        }
        self.prev = view.hash;
        self.next_seq = view.seq + 1;
        self.last_seq = view.seq;
        self.records += 1;
        self.bytes += line.len() as u64 + 1;
        Ok(Some(view))
    }
}

/// The position of the first line in `views` whose hash does not verify, checking contiguous
/// parts on up to `threads` threads.
fn first_bad_hash(views: &[LineView<'_>], key: &AuditKey, threads: usize) -> Option<usize> {
    let first_bad = |part: &[LineView<'_>]| part.iter().position(|view| !view.verify_hash(key));
    if threads <= 1 || views.len() < PARALLEL_MIN_LINES {
        return first_bad(views);
    }
    let part_len = views.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = views
            .chunks(part_len)
            .enumerate()
            .map(|(i, part)| scope.spawn(move || first_bad(part).map(|bad| i * part_len + bad)))
            .collect();
        // A part whose thread panicked is treated as failing at its start: never "ok".
        parts
            .into_iter()
            .enumerate()
            .filter_map(|(i, handle)| handle.join().unwrap_or(Some(i * part_len)))
            .min()
    })
}
