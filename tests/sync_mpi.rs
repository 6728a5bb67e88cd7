//! SyncBatchNorm across three MPI processes (the `mpi` feature): run by
//! `cargo test --features mpi --test sync_mpi`, this binary starts itself
//! under `mpirun -n 3` and every rank runs the scenario of
//! `tests/common/sync_scenario.rs` on its own GpuContext.

mod common;
#[path = "common/sync_scenario.rs"]
mod scenario;

use wgpu_batchnorm::{mpi, Collective, MpiCollective};

fn main() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() {
        // Not under MPI yet: start three ranks of this very binary.
        let exe = std::env::current_exe().expect("own path");
        let status = std::process::Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-n", "3"])
            .arg(&exe)
            .status();
        match status {
            Ok(s) if s.success() => println!("sync_mpi: 3 ranks passed\n1 passed, 0 failed"),
            Ok(s) => {
                eprintln!("sync_mpi: mpirun exited with {s}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("sync_mpi: cannot run mpirun ({e}); install openmpi-bin");
                std::process::exit(1);
            }
        }
        return;
    }
    let Some(universe) = mpi::initialize() else {
        eprintln!("MPI could not be initialized");
        std::process::exit(1);
    };
    let comm = MpiCollective::new(universe.world());
    let rank = comm.rank();
    let Some(ctx) = common::context() else { return };
    match scenario::run(&ctx, comm) {
        Ok(()) => println!("rank {rank}: SyncBatchNorm over MPI matches one module"),
        Err(e) => {
            eprintln!("rank {rank}: {e}");
            std::process::exit(1);
        }
    }
}
