//! Dropping a context ends its poll thread before the drop returns (its own
//! test binary: other tests' contexts would change the thread count). A
//! thread still holding the device when the process exits tears the device
//! down while the driver's exit handlers run: on GL through EGL, heap
//! corruption at exit, once in about eighty runs of a test binary.
#![cfg(target_os = "linux")]

mod common;

use wgpu_batchnorm::{GpuContext, Tensor};

/// Threads of this process named like the library's poll thread.
fn poll_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "batchnorm-poll")
        })
        .count()
}

#[test]
fn dropping_a_context_ends_its_poll_thread() {
    let Some(_) = common::context() else { return };
    for _ in 0..5 {
        let ctx = GpuContext::with_options(common::options()).expect("context");
        let t = Tensor::from_slice(&ctx, &vec![1.0; 1 << 16], &[1 << 16]).expect("tensor");
        // An async read-back starts the context's poll thread.
        pollster::block_on(t.to_vec_async()).expect("read");
        let with = poll_threads();
        assert!(with >= 1, "no poll thread");
        drop(t);
        drop(ctx);
        // The join has returned; the kernel may list the finished thread a
        // moment longer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while poll_threads() >= with && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            poll_threads(),
            with - 1,
            "the poll thread outlived its context"
        );
    }
}
