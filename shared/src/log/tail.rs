//! The last lines of a stream, in bounded memory: `tail -n N` without a temporary file.
//!
//! run-build-migrations shows the last 200 lines of the migrations' output when they fail. The
//! original sent all of it to a `mktemp` file (left behind when the script died, and as large as
//! the output) and ran `tail -200` on it. [`LastLines`] keeps only what it will show: at most
//! `max_lines` lines and about `max_bytes` bytes of them (older lines are dropped first), each
//! line at most [`MAX_LINE`] bytes — a longer one is kept as several pieces, exactly as the
//! provision log splits it — so a runaway producer cannot grow the tool's memory.
//!
//! Lines keep every byte (invalid UTF-8 included); a last line without a newline still counts,
//! as it does for `tail`.

use std::collections::VecDeque;

use crate::log::MAX_LINE;

/// The last lines fed to it.
#[derive(Debug)]
pub struct LastLines {
    max_lines: usize,
    max_bytes: usize,
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    partial: Vec<u8>,
}

impl LastLines {
    /// Keeps at most `max_lines` lines; drops the oldest while the kept lines hold more than
    /// `max_bytes` bytes (the newest line is always kept).
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        LastLines {
            max_lines,
            max_bytes,
            lines: VecDeque::new(),
            bytes: 0,
            partial: Vec::new(),
        }
    }

    /// Takes the next chunk of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(&first) = chunk.first() {
            if self.partial.len() == MAX_LINE {
                // A full piece: it is a whole line if the newline comes next, else the first
                // piece of a longer one.
                self.end_line();
                if first == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            let room = MAX_LINE - self.partial.len();
            let window = &chunk[..chunk.len().min(room)];
            match memchr::memchr(b'\n', window) {
                Some(end) => {
                    self.partial.extend_from_slice(&window[..end]);
                    self.end_line();
                    chunk = &chunk[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    chunk = &chunk[window.len()..];
                }
            }
        }
    }

    /// Ends the stream: a last line without a newline becomes a line.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.end_line();
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.partial);
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The kept lines, oldest first, without their newlines.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The kept lines, each followed by a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes + self.lines.len());
        for line in &self.lines {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(tail: &LastLines) -> Vec<String> {
        tail.lines()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn keeps_the_last_n_lines_across_chunks() {
        let mut tail = LastLines::new(3, 1 << 20);
        let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        for chunk in text.as_bytes().chunks(4) {
            tail.feed(chunk);
        }
        tail.finish();
        assert_eq!(kept(&tail), ["line 8", "line 9", "line 10"]);
        assert_eq!(tail.to_bytes(), b"line 8\nline 9\nline 10\n");
    }

    #[test]
    fn a_last_line_without_newline_counts() {
        let mut tail = LastLines::new(2, 1 << 20);
        tail.feed(b"a\n\nb\xff");
        tail.finish();
        assert_eq!(tail.lines().collect::<Vec<_>>(), [&b""[..], &b"b\xff"[..]]);
    }

    #[test]
    fn memory_is_bounded() {
        let mut tail = LastLines::new(200, 1000);
        for _ in 0..100 {
            tail.feed(&[b'x'; 300]);
            tail.feed(b"\n");
        }
        tail.finish();
        assert_eq!(tail.len(), 3);
        // One line longer than MAX_LINE is kept as pieces of at most MAX_LINE bytes.
        let mut tail = LastLines::new(200, usize::MAX);
        tail.feed(&vec![b'y'; 2 * MAX_LINE + 5]);
        tail.feed(b"\n");
        tail.feed(&vec![b'z'; MAX_LINE]);
        tail.feed(b"\nlast");
        tail.finish();
        assert_eq!(
            tail.lines().map(<[u8]>::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 5, MAX_LINE, 4]
        );
    }

    #[test]
    fn an_empty_stream_has_no_lines() {
        let mut tail = LastLines::new(200, 1000);
        tail.finish();
        assert!(tail.is_empty());
        assert!(tail.to_bytes().is_empty());
    }
}
