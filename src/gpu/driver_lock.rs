//! One turn at a time, process-wide, for the driver calls that create or
//! destroy a device and that compile pipelines.
//!
//! NVIDIA's Vulkan driver (580, H100) deadlocked inside the driver when
//! threads of one process did these at once: one thread in
//! `vkDestroyDevice` waiting for the device's driver threads, two in
//! `vkCreateComputePipelines` and one freeing the old device's memory, all
//! blocked on one driver lock (the stacks of a hung test binary whose tests
//! each create and drop contexts on their own threads). Contexts therefore
//! take turns for device creation, pipeline compilation and device
//! teardown; every other call (recording, submitting, waiting, reading
//! back) runs concurrently as before. A turn is re-entrant on its thread:
//! a teardown that drops another context inside a turn does not wait for
//! itself.
//!
//! What the turns cover: the devices and pipelines this crate creates, and
//! the teardown of a context whose last handle the crate holds (the last
//! `GpuContext`, `Tensor` or module, or the context's poll thread). Not
//! covered: buffers freed as tensors drop, adapter enumeration, and a
//! device whose last handle the application keeps (a clone of
//! `ctx.device()`, a buffer or command buffer of its own, or a device
//! passed to `GpuContext::from_device`): drop those on one thread, or not
//! while other threads create contexts.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, PoisonError};

/// Whether some thread holds the turn.
static TAKEN: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();

thread_local! {
    /// Turns this thread holds (nested calls of [`serialized`]).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// The turn held by this thread; handed back when dropped, also when `f`
/// panics.
struct Turn;

impl Turn {
    fn take() -> Self {
        if DEPTH.get() == 0 {
            let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
            while *taken {
                taken = FREED.wait(taken).unwrap_or_else(PoisonError::into_inner);
            }
            *taken = true;
        }
        DEPTH.set(DEPTH.get() + 1);
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let depth = DEPTH.get().saturating_sub(1);
        DEPTH.set(depth);
        if depth == 0 {
            *TAKEN.lock().unwrap_or_else(PoisonError::into_inner) = false;
            FREED.notify_one();
        }
    }
}

/// Whether the calling thread holds a turn.
pub(crate) fn held() -> bool {
    DEPTH.get() > 0
}

/// Runs `f` in this process's turn for device creation, pipeline
/// compilation and device teardown (see the module docs).
pub(crate) fn serialized<T>(f: impl FnOnce() -> T) -> T {
    let _turn = Turn::take();
    f()
}

/// What a context's device teardown drops, kept until the context's last
/// field is dropped and then dropped in one turn: the device and queue
/// handles (the last ones, so the device is destroyed here) and the
/// pipeline caches.
#[derive(Default)]
pub(crate) struct Reaper {
    kept: Mutex<Vec<Box<dyn Send>>>,
}

impl Reaper {
    /// Keeps `value` until the reaper is dropped.
    pub fn keep(&self, value: impl Send + 'static) {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(value));
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let kept = std::mem::take(self.kept.get_mut().unwrap_or_else(PoisonError::into_inner));
        serialized(move || drop(kept));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// `f`'s result on a thread of its own, or `None` after 30 s (a turn
    /// never handed back fails the test instead of hanging it).
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(30)).ok()
    }

    #[test]
    fn turns_exclude_each_other_and_nest() {
        let done = within(|| {
            let inside = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let inside = inside.clone();
                    std::thread::spawn(move || {
                        for _ in 0..200 {
                            serialized(|| {
                                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                                // Nested on the same thread: no self-deadlock.
                                serialized(|| assert_eq!(inside.load(Ordering::SeqCst), 1));
                                assert!(held());
                                std::thread::yield_now();
                                inside.fetch_sub(1, Ordering::SeqCst);
                            });
                            assert!(!held());
                        }
                    })
                })
                .collect();
            threads.into_iter().all(|t| t.join().is_ok())
        });
        assert_eq!(done, Some(true));
    }

    #[test]
    fn a_panic_hands_the_turn_back() {
        let r = std::thread::spawn(|| serialized(|| panic!("inside a turn"))).join();
        assert!(r.is_err());
        // Another thread gets the turn.
        assert_eq!(within(|| serialized(|| 7)), Some(7));
    }

    #[test]
    fn the_reaper_drops_what_it_keeps_in_a_turn() {
        struct Probe(Arc<AtomicU32>);
        impl Drop for Probe {
            fn drop(&mut self) {
                // Dropped inside a turn: the depth says so.
                self.0.store(DEPTH.get(), Ordering::SeqCst);
            }
        }
        let seen = Arc::new(AtomicU32::new(0));
        let reaper = Reaper::default();
        reaper.keep(Probe(seen.clone()));
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        drop(reaper);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
