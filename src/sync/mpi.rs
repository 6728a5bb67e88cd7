//! [`MpiCollective`]: the collectives over MPI (the `mpi` feature), one
//! process per GPU, on one machine or many.

use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives};

use super::Collective;
use crate::error::{Error, Result};

/// SyncBatchNorm's collectives over an MPI communicator (for example
/// `mpi::initialize()?.world()`).
///
/// MPI reports failures through its error handler, `MPI_ERRORS_ARE_FATAL`
/// by default: a failed collective aborts every process of the job.
#[derive(Debug)]
pub struct MpiCollective<C: Communicator> {
    comm: C,
}

impl<C: Communicator> MpiCollective<C> {
    /// Wraps `comm`; every process of it takes part in each collective.
    pub fn new(comm: C) -> Self {
        Self { comm }
    }

    /// The communicator.
    pub fn communicator(&self) -> &C {
        &self.comm
    }
}

impl<C: Communicator> Collective for MpiCollective<C> {
    fn size(&self) -> usize {
        usize::try_from(self.comm.size()).unwrap_or(0)
    }

    fn rank(&self) -> usize {
        usize::try_from(self.comm.rank()).unwrap_or(0)
    }

    fn all_gather(&self, send: &[f64]) -> Result<Vec<f64>> {
        let total = send
            .len()
            .checked_mul(self.size())
            .ok_or_else(|| Error::Collective("all-gather size overflows".into()))?;
        let mut recv = vec![0.0f64; total];
        self.comm.all_gather_into(send, &mut recv[..]);
        Ok(recv)
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.comm
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }
}
