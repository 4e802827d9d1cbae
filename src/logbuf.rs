//! The most recent log lines for the admin panel's log page, kept in memory and, once `app`
//! knows the data directory, in a bounded file there so they survive a restart.
//!
//! A second `tracing` formatting layer writes plain (uncoloured) lines here; what reaches this
//! buffer (and its file) is exactly what reaches stderr, so the invariant "no secrets in logs"
//! covers it too. The file, [`FILE_NAME`] (mode 0600), is rotated to `rtcbox.log.1` when it would
//! pass [`MAX_FILE_BYTES`], so the two never hold more than twice that. At start the newest
//! [`CAPACITY`] lines of both are read back in front of this run's.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Lines kept; older ones are dropped.
pub const CAPACITY: usize = 1000;
/// Longest line kept, in bytes (longer ones are cut).
const MAX_LINE: usize = 4096;
/// The log file in the data directory.
pub const FILE_NAME: &str = "rtcbox.log";
/// Its size before it is rotated (one older file is kept).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A line's level, from the formatter's `<time>  LEVEL target: message` layout; lines without
/// one (a multi-line message's continuation) take the level of the line before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ];

    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The level a formatted line names (its second word), if any.
    fn of_line(line: &str) -> Option<Level> {
        let mut words = line.split_whitespace();
        let time = words.next()?;
        if !time.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        Level::parse(words.next()?)
    }
}

/// `lines` at `min` or above, each continuation line with its event.
pub fn at_least(lines: &[String], min: Level) -> Vec<String> {
    let mut level = Level::Info;
    lines
        .iter()
        .filter(|line| {
            level = Level::of_line(line).unwrap_or(level);
            level >= min
        })
        .cloned()
        .collect()
}

#[derive(Clone, Debug, Default)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<String>,
    file: Option<LogFile>,
    /// Why the file stopped being written, for the log page.
    file_error: Option<String>,
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl LogBuffer {
    pub fn new() -> Self {
        LogBuffer::default()
    }

    pub fn push(&self, line: &str) {
        let mut line = line.trim_end().to_owned();
        if line.is_empty() {
            return;
        }
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut inner = self.lock();
        if let Some(file) = &mut inner.file
            && let Err(error) = file.append(&line)
        {
            // Not logged: that would come back here. The log page says it.
            inner.file_error = Some(format!("{}: {error}", file.path.display()));
            inner.file = None;
        }
        if inner.lines.len() >= CAPACITY {
            inner.lines.pop_front();
        }
        inner.lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let inner = self.lock();
        let lines = &inner.lines;
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Every line there is: both files (at most twice [`MAX_FILE_BYTES`]) while the log is
    /// kept in the data directory, else the lines in memory.
    pub fn everything(&self) -> Vec<String> {
        let path = self.lock().file.as_ref().map(|file| file.path.clone());
        let Some(path) = path else {
            return self.recent(CAPACITY);
        };
        let mut lines = read_lines(&rotated(&path), usize::MAX).unwrap_or_default();
        lines.extend(read_lines(&path, usize::MAX).unwrap_or_default());
        lines
    }

    /// Where the lines are also kept, or why not (`None` before [`LogBuffer::persist_in`]).
    pub fn file(&self) -> Option<Result<PathBuf, String>> {
        let inner = self.lock();
        match (&inner.file, &inner.file_error) {
            (Some(file), _) => Some(Ok(file.path.clone())),
            (None, Some(error)) => Some(Err(error.clone())),
            (None, None) => None,
        }
    }

    /// Keeps the log in `dir` too: the lines earlier runs left there come first (the newest
    /// [`CAPACITY`]), then this run's so far, which are also written to the file; every later
    /// line is appended, rotating at [`MAX_FILE_BYTES`].
    pub fn persist_in(&self, dir: &Path) -> io::Result<()> {
        self.persist_with_limit(dir, MAX_FILE_BYTES)
    }

    fn persist_with_limit(&self, dir: &Path, max: u64) -> io::Result<()> {
        let path = dir.join(FILE_NAME);
        let mut earlier = read_lines(&rotated(&path), CAPACITY)?;
        earlier.extend(read_lines(&path, CAPACITY)?);
        let mut file = LogFile::open(path, max)?;
        let mut inner = self.lock();
        for line in &inner.lines {
            file.append(line)?;
        }
        let this_run = std::mem::take(&mut inner.lines);
        let mut lines: VecDeque<String> = earlier.into_iter().chain(this_run).collect();
        while lines.len() > CAPACITY {
            lines.pop_front();
        }
        inner.lines = lines;
        inner.file = Some(file);
        inner.file_error = None;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogFile {
    fn open(path: PathBuf, max: u64) -> io::Result<LogFile> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            size,
            max,
        })
    }

    fn append(&mut self, line: &str) -> io::Result<()> {
        let bytes = line.len() as u64 + 1;
        if self.size > 0 && self.size + bytes > self.max {
            std::fs::rename(&self.path, rotated(&self.path))?;
            *self = LogFile::open(self.path.clone(), self.max)?;
        }
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.size += bytes;
        Ok(())
    }
}

/// `rtcbox.log` → `rtcbox.log.1`.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The newest `keep` lines of a log file; none when it does not exist.
fn read_lines(path: &Path, keep: usize) -> io::Result<Vec<String>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Ok(lines[lines.len().saturating_sub(keep)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect())
}

/// The process-wide buffer that `app::init_tracing` writes to.
pub fn global() -> &'static LogBuffer {
    static GLOBAL: OnceLock<LogBuffer> = OnceLock::new();
    GLOBAL.get_or_init(LogBuffer::new)
}

/// One event's formatted text; pushed as lines when the formatter is done with it.
pub struct EventWriter {
    buffer: LogBuffer,
    bytes: Vec<u8>,
}

impl io::Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.bytes);
        for line in text.lines() {
            self.buffer.push(line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            buffer: self.clone(),
            bytes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_lines() {
        let buffer = LogBuffer::new();
        for i in 0..CAPACITY + 5 {
            buffer.push(&format!("line {i}"));
        }
        let recent = buffer.recent(3);
        assert_eq!(
            recent,
            vec![
                format!("line {}", CAPACITY + 2),
                format!("line {}", CAPACITY + 3),
                format!("line {}", CAPACITY + 4)
            ]
        );
        assert_eq!(buffer.recent(usize::MAX).len(), CAPACITY);
    }

    fn line(level: &str, n: usize) -> String {
        format!("2026-12-04T20:58:43.993851Z  {level} rtcbox::app: line {n}")
    }

    #[test]
    fn the_log_survives_a_restart_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = LogBuffer::new();
        first.push(&line("INFO", 1)); // logged before the data directory was known
        first.persist_in(dir.path()).unwrap();
        first.push(&line("WARN", 2));
        assert_eq!(
            first.file(),
            Some(Ok(dir.path().join(FILE_NAME))),
            "{:?}",
            first.file()
        );
        // The next run: its own first lines follow the last run's.
        let second = LogBuffer::new();
        second.push(&line("INFO", 3));
        second.persist_in(dir.path()).unwrap();
        second.push(&line("ERROR", 4));
        let expected: Vec<String> = [("INFO", 1), ("WARN", 2), ("INFO", 3), ("ERROR", 4)]
            .iter()
            .map(|(level, n)| line(level, *n))
            .collect();
        assert_eq!(second.recent(10), expected);
        assert_eq!(second.everything(), expected);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_file_is_rotated_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new();
        let max = 500;
        buffer.persist_with_limit(dir.path(), max).unwrap();
        for n in 0..100 {
            buffer.push(&line("INFO", n));
        }
        let current = dir.path().join(FILE_NAME);
        for file in [&current, &rotated(&current)] {
            let size = std::fs::metadata(file).unwrap().len();
            assert!(size > 0 && size <= max, "{}: {size} bytes", file.display());
        }
        // Read back in order, the newest last, across both files.
        let everything = LogBuffer::new();
        everything.persist_with_limit(dir.path(), max).unwrap();
        let lines = everything.recent(CAPACITY);
        assert_eq!(lines.last(), Some(&line("INFO", 99)));
        let numbers: Vec<usize> = lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(numbers.len() < 100);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_and_memory_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new();
        assert!(buffer.persist_in(&dir.path().join("missing")).is_err());
        assert_eq!(buffer.file(), None);
        buffer.push("still kept");
        assert_eq!(buffer.recent(1), ["still kept"]);
        assert_eq!(buffer.everything(), ["still kept"]);
    }

    #[test]
    fn lines_are_filtered_by_level_with_their_continuations() {
        let lines = vec![
            line("DEBUG", 1),
            line("INFO", 2),
            line("WARN", 3),
            "  continued: the same warning".to_owned(),
            line("ERROR", 4),
            line("TRACE", 5),
            "  continued trace".to_owned(),
        ];
        let check = |min: Level, expected: &[&String]| {
            let expected: Vec<String> = expected.iter().map(|l| (*l).clone()).collect();
            assert_eq!(at_least(&lines, min), expected, "{min:?}");
        };
        check(Level::Error, &[&lines[4]]);
        check(Level::Warn, &[&lines[2], &lines[3], &lines[4]]);
        check(Level::Info, &[&lines[1], &lines[2], &lines[3], &lines[4]]);
        check(Level::Trace, &lines.iter().collect::<Vec<_>>());
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }

    #[test]
    fn writer_splits_lines_and_cuts_long_ones() {
        let buffer = LogBuffer::new();
        {
            let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&buffer);
            w.write_all(b"first\nsecond\n\n").unwrap();
        }
        {
            let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&buffer);
            w.write_all("é".repeat(MAX_LINE).as_bytes()).unwrap();
        }
        let recent = buffer.recent(10);
        assert_eq!(&recent[..2], ["first", "second"]);
        assert!(recent[2].len() <= MAX_LINE + '…'.len_utf8());
        assert!(recent[2].ends_with('…'));
    }
}
