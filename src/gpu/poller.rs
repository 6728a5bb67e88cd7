//! Waiting for the GPU without spinning: a helper thread per context that
//! blocks in `device.poll(wait)` when asked, so wgpu runs the map callbacks
//! that wake the awaiting futures. The awaiting thread itself never polls.

use std::sync::mpsc;
use std::sync::Mutex;

/// The context's poll thread; it ends when the context is dropped (the
/// channel closes), and the drop waits for it (so dropping the last handle
/// of a context waits for GPU work an async read-back is waiting on): a thread still holding the
/// device when the process exits would tear the device down while the
/// driver's exit handlers do (on GL through EGL, heap corruption).
pub(crate) struct Poller {
    requests: Mutex<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    pub fn new(device: wgpu::Device) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("batchnorm-poll".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Requests that arrived meanwhile are served by this wait.
                    while rx.try_recv().is_ok() {}
                    // Blocks in the driver until the queue is idle; errors
                    // (a lost device) reach the callers through their own
                    // callbacks and checks.
                    let _ = device.poll(wgpu::PollType::wait_indefinitely());
                }
                // This handle may be the device's last (a context dropped
                // from one of this thread's callbacks): its teardown takes
                // a driver turn like every other.
                super::driver_lock::serialized(move || drop(device));
            });
        match spawned {
            Ok(handle) => Self {
                requests: Mutex::new(tx),
                thread: Some(handle),
            },
            // No thread: requests are served by the caller's fallback poll.
            Err(_) => Self {
                requests: Mutex::new(mpsc::channel().0),
                thread: None,
            },
        }
    }

    /// Whether the calling thread is this poller's thread.
    pub fn is_current(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|h| h.thread().id() == std::thread::current().id())
    }

    /// Asks the thread to wait for the work submitted so far. Returns
    /// false when no thread could serve it (the caller then polls itself).
    pub fn request(&self) -> bool {
        self.requests
            .lock()
            .map(|tx| tx.send(()).is_ok())
            .unwrap_or(false)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // Close the channel, then wait for the thread to drop its device
        // (unless this runs on the poll thread itself, from a callback).
        let tx = self
            .requests
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *tx = mpsc::channel().0;
        // Nor while this thread holds a driver turn: the poll thread ends by
        // dropping its device handle in a turn, and would wait for this one.
        // Either way the thread ends on its own once its wait returns.
        if let Some(handle) = self.thread.take() {
            if handle.thread().id() != std::thread::current().id() && !super::driver_lock::held() {
                let _ = handle.join();
            }
        }
    }
}
