//! A statement's output is held until the statement succeeded: in memory up to
//! [`IN_MEMORY`], then in an unnamed temporary file, so a failing statement prints nothing
//! and memory stays bounded however large the result.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

/// Bytes kept in memory before the rest goes to a temporary file.
pub const IN_MEMORY: usize = 4 << 20;

/// Output held back until [`commit`](Spool::commit).
#[derive(Default)]
pub struct Spool {
    memory: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Spool {
    /// Copies what was written to `out` and empties the spool for the next statement.
    ///
    /// # Errors
    /// Reading the temporary file or writing `out`.
    pub fn commit(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.memory)?;
        self.memory.clear();
        if let Some(f) = self.file.take() {
            let mut f = f.into_inner().map_err(|e| e.into_error())?;
            f.seek(SeekFrom::Start(0))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
        }
        out.flush()
    }

    /// Forgets what was written.
    pub fn discard(&mut self) {
        self.memory.clear();
        self.file = None;
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() <= IN_MEMORY {
            self.memory.extend_from_slice(buf);
            return Ok(buf.len());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let mut f = BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
                f.write_all(&self.memory)?;
                self.memory.clear();
                self.file.insert(f)
            }
        };
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_output_goes_to_disk_and_comes_back_whole() {
        let mut s = Spool::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..6 {
            s.write_all(&chunk).unwrap();
        }
        assert!(s.file.is_some() && s.memory.is_empty());
        let mut out = Vec::new();
        s.commit(&mut out).unwrap();
        assert_eq!(out.len(), 6 << 20);
        s.write_all(b"next").unwrap();
        s.discard();
        let mut out = Vec::new();
        s.commit(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
