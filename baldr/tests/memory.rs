//! Reading keeps memory bounded by the largest record, whatever the input's size: measured
//! with a counting global allocator (alone in this test binary, so nothing else allocates).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use baldr::{Compression, Reader, Writer};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counters are global: one measuring test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `count` copies of one encoded record, generated as they are read.
struct Generated {
    record: Vec<u8>,
    pos: usize,
    left: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.left > 0 {
            let take = (self.record.len() - self.pos).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.record[self.pos..self.pos + take]);
            n += take;
            self.pos += take;
            if self.pos == self.record.len() {
                self.pos = 0;
                self.left -= 1;
            }
        }
        Ok(n)
    }
}

fn encoded(len: usize, compression: Compression) -> Vec<u8> {
    let mut w = Writer::new(baldr::Compressor::new(Vec::new(), compression).unwrap());
    w.write_record(&vec![7u8; len]).unwrap();
    w.finish().unwrap().finish().unwrap()
}

/// Peak heap growth while reading `count` records of `len` bytes.
fn peak_while_reading(len: usize, count: u64) -> usize {
    let input = Generated {
        record: encoded(len, Compression::None),
        pos: 0,
        left: count,
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut n = 0u64;
    for record in Reader::new(input) {
        assert_eq!(record.unwrap().len(), len);
        n += 1;
    }
    assert_eq!(n, count);
    PEAK.load(Ordering::Relaxed) - base
}

#[test]
fn peak_memory_is_bounded_by_the_largest_record() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CHUNK: usize = 64 * 1024;
    // About 64 MiB of input each; the generator's own record copy counts too.
    for (len, count) in [(100usize, 600_000u64), (4096, 16_384), (1 << 20, 64)] {
        let peak = peak_while_reading(len, count);
        // Growing the buffer for a record larger than it doubles the buffer, and for a moment
        // the old allocation lives beside the new one: about 3x the record at worst.
        let bound = 3 * (len + 8) + 3 * CHUNK;
        assert!(
            peak <= bound,
            "records of {len} bytes: peak {peak} bytes, bound {bound}"
        );
        let input = (count * (len as u64 + 8)) as usize;
        assert!(peak * 16 < input, "the bound is meaningful");
    }
}

#[test]
fn gzip_input_does_not_change_the_bound_much() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 16 MiB of records compressed into one gzip stream, decoded while read.
    let mut w = Writer::new(baldr::Compressor::new(Vec::new(), Compression::Gzip).unwrap());
    for i in 0..4096u32 {
        w.write_record(&[i as u8; 4096]).unwrap();
    }
    let file = w.finish().unwrap().finish().unwrap();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let n = baldr::open_reader(&file[..]).unwrap().count();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(n, 4096);
    // The inflater's window and buffers plus our chunk: well under 1 MiB.
    assert!(peak < 1 << 20, "peak {peak}");
}
