//! [`LocalGroup`]: the collectives between replicas in one process (one
//! thread per GPU), so the same training code runs k processes x 1 GPU
//! (MPI) or 1 process x k GPUs.

use std::sync::{Arc, Condvar, Mutex};

use super::Collective;
use crate::error::{Error, Result};

/// A group of in-process replicas; [`LocalGroup::new`] hands out one
/// [`LocalCollective`] per replica, each to be moved to its own thread.
#[derive(Debug)]
pub struct LocalGroup;

/// One replica's end of a [`LocalGroup`]. Each call blocks until every
/// replica of the group has made the same call. Dropping a replica's end
/// ends the group: the others' pending and later calls return
/// [`Error::Collective`].
#[derive(Debug)]
pub struct LocalCollective {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    round: Mutex<Round>,
    turned: Condvar,
}

/// One exchange: the replicas' contributions, then the result of the last
/// completed exchange for the replicas still to read it.
#[derive(Debug, Default)]
struct Round {
    generation: u64,
    contributions: Vec<Option<(Op, Vec<f64>)>>,
    result: Arc<Vec<f64>>,
    broken: bool,
}

impl LocalGroup {
    /// `size` replicas' ends, rank `0..size` in order.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(size: usize) -> Vec<LocalCollective> {
        let shared = Arc::new(Shared {
            size,
            round: Mutex::new(Round {
                contributions: vec![None; size],
                ..Round::default()
            }),
            turned: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalCollective {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

/// Which collective a contribution is for: replicas calling different ones
/// at the same point is an error for all of them, not a mixed result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gather,
    ReduceSum,
}

fn left() -> Error {
    Error::Collective("a replica left the in-process group".into())
}

impl LocalCollective {
    /// Contributes `send` and returns what `combine` makes of every
    /// replica's contribution, in rank order.
    fn exchange(
        &self,
        op: Op,
        send: &[f64],
        combine: impl FnOnce(&[Vec<f64>]) -> Result<Vec<f64>>,
    ) -> Result<Arc<Vec<f64>>> {
        let shared = &self.shared;
        let mut round = shared.round.lock().map_err(|_| left())?;
        if round.broken {
            return Err(left());
        }
        let generation = round.generation;
        let slot = round
            .contributions
            .get_mut(self.rank)
            .ok_or_else(|| Error::Collective(format!("rank {} out of range", self.rank)))?;
        *slot = Some((op, send.to_vec()));
        if round.contributions.iter().all(Option::is_some) {
            // The last to arrive combines and opens the next exchange.
            let (ops, all): (Vec<Op>, Vec<Vec<f64>>) = round
                .contributions
                .iter_mut()
                .filter_map(Option::take)
                .unzip();
            let combined = if ops.iter().all(|&o| o == op) {
                combine(&all)
            } else {
                Err(Error::Collective(format!(
                    "replicas called different collectives at the same step: {ops:?}"
                )))
            };
            match combined {
                Ok(result) => round.result = Arc::new(result),
                Err(e) => {
                    // The others must not wait for a result that never comes.
                    round.broken = true;
                    shared.turned.notify_all();
                    return Err(e);
                }
            }
            round.generation += 1;
            shared.turned.notify_all();
            return Ok(round.result.clone());
        }
        while round.generation == generation && !round.broken {
            round = shared.turned.wait(round).map_err(|_| left())?;
        }
        if round.generation == generation {
            return Err(left());
        }
        Ok(round.result.clone())
    }
}

impl Drop for LocalCollective {
    fn drop(&mut self) {
        if let Ok(mut round) = self.shared.round.lock() {
            round.broken = true;
        }
        self.shared.turned.notify_all();
    }
}

impl Collective for LocalCollective {
    fn size(&self) -> usize {
        self.shared.size
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn all_gather(&self, send: &[f64]) -> Result<Vec<f64>> {
        let len = send.len();
        let result = self.exchange(Op::Gather, send, |all| {
            if all.iter().any(|v| v.len() != len) {
                return Err(Error::Collective(
                    "replicas gathered slices of different lengths".into(),
                ));
            }
            Ok(all.concat())
        })?;
        Ok(result.as_ref().clone())
    }

    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        let len = values.len();
        let result = self.exchange(Op::ReduceSum, values, |all| {
            if all.iter().any(|v| v.len() != len) {
                return Err(Error::Collective(
                    "replicas reduced slices of different lengths".into(),
                ));
            }
            let mut sum = vec![0.0; len];
            for v in all {
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            }
            Ok(sum)
        })?;
        if result.len() != len {
            return Err(Error::Collective("reduction length changed".into()));
        }
        values.copy_from_slice(&result);
        Ok(())
    }
}
