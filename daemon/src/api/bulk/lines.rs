//! A CSV file's bytes as the CSV reader sees them: every line ending made `\n` (CRLF from
//! Windows and Excel, CR alone from old exports), so that the reader's line numbers are the
//! file's; and every line bounded, so that a file whose header never ends cannot take the
//! daemon's memory with it.

use std::fmt;
use std::io::{self, BufRead, Read};

/// The longest line a bulk file may have. A row of layout v1 with five transfers and long
/// descriptions stays under 4 KiB; a longer line is not a position.
pub const MAX_LINE: usize = 64 << 10;

/// The error a read returns once a line is longer than [`MAX_LINE`], and every read after it.
#[derive(Debug, Clone, Copy)]
pub struct LineTooLong {
    /// The line, counted from 1.
    pub line: u64,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} is longer than {} KiB: a row of layout v1 is a few hundred bytes; check the \
             file's line endings and separators",
            self.line,
            MAX_LINE >> 10
        )
    }
}

impl std::error::Error for LineTooLong {}

impl LineTooLong {
    /// The bound that stopped this read, if that is what `e` is.
    pub fn of(e: &io::Error) -> Option<LineTooLong> {
        e.get_ref()?.downcast_ref::<LineTooLong>().copied()
    }
}

pub struct Lines<R> {
    inner: R,
    /// The last byte was a CR: a LF right after it ends the same line.
    after_cr: bool,
    /// Lines ended so far.
    ended: u64,
    /// Bytes in the current line.
    len: usize,
    failed: Option<LineTooLong>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(inner: R) -> Lines<R> {
        Lines {
            inner,
            after_cr: false,
            ended: 0,
            len: 0,
            failed: None,
        }
    }
}

impl<R: BufRead> Read for Lines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n == 0 && !out.is_empty() {
            if let Some(e) = self.failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                break;
            }
            let mut used = 0;
            for &b in input {
                if n == out.len() {
                    break;
                }
                used += 1;
                match b {
                    b'\n' if self.after_cr => self.after_cr = false,
                    b'\r' | b'\n' => {
                        self.after_cr = b == b'\r';
                        out[n] = b'\n';
                        n += 1;
                        self.ended += 1;
                        self.len = 0;
                    }
                    _ => {
                        self.after_cr = false;
                        self.len += 1;
                        if self.len > MAX_LINE {
                            self.failed = Some(LineTooLong {
                                line: self.ended + 1,
                            });
                            break;
                        }
                        out[n] = b;
                        n += 1;
                    }
                }
            }
            self.inner.consume(used);
            if self.failed.is_some() {
                // What came before the long line is not worth handing over: the file is refused.
                n = 0;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // A tiny buffer, so that CRLF pairs fall across reads.
        Lines::new(io::BufReader::with_capacity(3, input)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_line_ending_becomes_a_newline() {
        assert_eq!(normalised(b"a\r\nb\r\nc").expect("read"), b"a\nb\nc");
        assert_eq!(normalised(b"a\rb\r\rc\r").expect("read"), b"a\nb\n\nc\n");
        assert_eq!(normalised(b"a\nb\n\r\n").expect("read"), b"a\nb\n\n");
        assert_eq!(normalised(b"\r\n\r\n").expect("read"), b"\n\n");
    }

    #[test]
    fn a_line_past_the_bound_fails_every_read_with_its_number() {
        let mut file = b"h\r\nrow\r\n".to_vec();
        file.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        let e = normalised(&file).expect_err("too long");
        assert_eq!(LineTooLong::of(&e).map(|l| l.line), Some(3));
        let exact = [vec![b'y'; MAX_LINE], b"\nz".to_vec()].concat();
        assert_eq!(
            normalised(&exact).expect("at the bound").len(),
            MAX_LINE + 2
        );
    }
}
