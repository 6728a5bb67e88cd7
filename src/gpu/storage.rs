//! A tensor's storage: its buffer, shared by every tensor handle on it
//! (clones, reshapes, and every [`Tensor::from_buffer`] of the same buffer
//! on a context), with the log of the byte ranges the library wrote there,
//! which backward checks its saved tensors against.
//!
//! [`Tensor::from_buffer`]: crate::Tensor::from_buffer

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::buffer::OwnedBuffer;

/// Distinct byte ranges a storage's log keeps; past them it keeps one
/// entry for the whole buffer (a later check may then report a write that
/// did not touch its range: an error, never a missed write).
const MAX_RANGES: usize = 64;

/// A buffer shared by tensor handles, and the writes the library made to
/// it.
pub(crate) struct Storage {
    pub(crate) buffer: OwnedBuffer,
    writes: Mutex<WriteLog>,
}

/// The library's writes to one buffer.
#[derive(Default)]
struct WriteLog {
    /// Writes so far: a mark taken now is passed by every later write.
    count: u64,
    /// The byte ranges written, each with the count after its latest write.
    ranges: Vec<(Range<u64>, u64)>,
}

impl WriteLog {
    fn record(&mut self, range: Range<u64>) {
        self.count += 1;
        let count = self.count;
        if let Some(entry) = self.ranges.iter_mut().find(|(r, _)| *r == range) {
            entry.1 = count;
        } else if self.ranges.len() < MAX_RANGES {
            self.ranges.push((range, count));
        } else {
            self.ranges = vec![(0..u64::MAX, count)];
        }
    }

    fn written_since(&self, mark: u64, range: &Range<u64>) -> bool {
        (self.ranges.iter())
            .any(|(r, count)| *count > mark && r.start < range.end && range.start < r.end)
    }
}

impl Storage {
    pub(crate) fn new(buffer: OwnedBuffer) -> Self {
        Self {
            buffer,
            writes: Mutex::default(),
        }
    }

    fn log(&self) -> MutexGuard<'_, WriteLog> {
        // A panic elsewhere cannot leave the log inconsistent: each update
        // completes before the guard drops.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A mark of the writes so far ([`Storage::written_since`]).
    pub(crate) fn mark(&self) -> u64 {
        self.log().count
    }

    /// Records a write by the library to the bytes `range`.
    pub(crate) fn record_write(&self, range: Range<u64>) {
        self.log().record(range);
    }

    /// Whether a write recorded after `mark` overlapped the bytes `range`.
    pub(crate) fn written_since(&self, mark: u64, range: &Range<u64>) -> bool {
        self.log().written_since(mark, range)
    }
}

/// The live storages of a context, so that a buffer wrapped again shares
/// the storage (and the write log) of the tensors already on it.
#[derive(Default)]
pub(crate) struct StorageRegistry {
    live: Mutex<Vec<Weak<Storage>>>,
}

impl StorageRegistry {
    fn live(&self) -> MutexGuard<'_, Vec<Weak<Storage>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new storage of a buffer the library allocated, registered.
    pub(crate) fn new_storage(&self, buffer: OwnedBuffer) -> Arc<Storage> {
        let storage = Arc::new(Storage::new(buffer));
        Self::register(&mut self.live(), &storage);
        storage
    }

    /// The live storage on `buffer`, or a new one of the application's
    /// buffer, registered.
    pub(crate) fn storage_of(&self, buffer: wgpu::Buffer) -> Arc<Storage> {
        let mut live = self.live();
        let found = live
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.buffer.buffer == buffer);
        if let Some(storage) = found {
            return storage;
        }
        let storage = Arc::new(Storage::new(OwnedBuffer::foreign(buffer)));
        Self::register(&mut live, &storage);
        storage
    }

    /// Adds `storage`, dropping the entries of dropped storages whenever
    /// the list reaches a power of two (amortised constant time).
    fn register(live: &mut Vec<Weak<Storage>>, storage: &Arc<Storage>) {
        live.push(Arc::downgrade(storage));
        if live.len() >= 64 && live.len().is_power_of_two() {
            live.retain(|w| w.strong_count() > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `probe` was written after the first `marked` of `writes`.
    fn seen(writes: &[Range<u64>], marked: usize, probe: Range<u64>) -> bool {
        let mut log = WriteLog::default();
        let mut mark = 0;
        for (i, r) in writes.iter().enumerate() {
            if i == marked {
                mark = log.count;
            }
            log.record(r.clone());
        }
        if marked >= writes.len() {
            mark = log.count;
        }
        log.written_since(mark, &probe)
    }

    #[test]
    fn only_overlapping_writes_after_the_mark_count() {
        // Written after the mark, overlapping: seen.
        assert!(seen(&[0..16, 256..512], 1, 300..400));
        // Written after the mark elsewhere: not seen.
        assert!(!seen(&[0..16, 256..512], 1, 0..256));
        // The same range written before and after the mark: seen.
        assert!(seen(&[0..16, 0..16], 1, 8..12));
        // Only before the mark: not seen.
        assert!(!seen(&[0..16, 0..16], 2, 0..16));
        // Past MAX_RANGES distinct ranges the whole buffer counts.
        let many: Vec<Range<u64>> = (0..=MAX_RANGES as u64)
            .map(|i| i * 16..i * 16 + 16)
            .collect();
        assert!(seen(&many, MAX_RANGES, 1_000_000..1_000_016));
        assert!(!seen(
            &many[..MAX_RANGES],
            MAX_RANGES - 1,
            1_000_000..1_000_016
        ));
    }
}
