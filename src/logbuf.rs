//! The most recent log lines, kept in memory for the admin panel's log page.
//!
//! A second `tracing` formatting layer writes plain (uncoloured) lines here; what reaches this
//! buffer is exactly what reaches stderr, so the invariant "no secrets in logs" covers it too.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

/// Lines kept; older ones are dropped.
pub const CAPACITY: usize = 1000;
/// Longest line kept, in bytes (longer ones are cut).
const MAX_LINE: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<String>>>,
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
        let mut lines = self.lines.lock().expect("log buffer lock");
        if lines.len() >= CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().expect("log buffer lock");
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
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
    use std::io::Write as _;

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
