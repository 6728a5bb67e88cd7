//! Waiting for the GPU without spinning: a helper thread per context that
//! blocks in `device.poll(wait)` when asked, so wgpu runs the map callbacks
//! that wake the awaiting futures. The awaiting thread itself never polls.

use std::sync::mpsc;
use std::sync::Mutex;

/// The context's poll thread, started on first use; it ends when the
/// context is dropped (the channel closes).
pub(crate) struct Poller {
    requests: Mutex<mpsc::Sender<()>>,
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
            });
        if spawned.is_err() {
            // No thread: requests are served by the caller's fallback poll.
            let (dead, _) = mpsc::channel();
            return Self {
                requests: Mutex::new(dead),
            };
        }
        Self {
            requests: Mutex::new(tx),
        }
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
