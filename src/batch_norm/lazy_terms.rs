//! Eval forwards submitted by the module normalise straight from its state
//! (one dispatch, nothing written per channel); the per-channel terms that
//! backward reads are written later, from the same state, only when they
//! are needed: before a backward reads them, and before anything writes
//! the state (setters, resets, state-dict loads), so they always describe
//! the state the forward used. A training forward recorded into an
//! application's encoder updates the running statistics whenever the
//! application submits it, so while one may still run, eval forwards
//! write their terms at once instead (`BatchNorm::state_writers`).

use super::workspace::{Op, Prepared, Target};
use super::{BatchNorm, SpatialRank};
use crate::error::Result;
use crate::gpu::buffer::BufferSlice;
use crate::gpu::launch::{ChannelStep, Recorder};

impl<R: SpatialRank> BatchNorm<R> {
    /// Writes the saved forward's pending terms (one `eval_prepare`
    /// submission); nothing when none are pending. On an error they stay
    /// pending.
    pub(super) fn settle_terms(&mut self) -> Result<()> {
        let Some(saved) = self.saved.as_ref() else {
            return Ok(());
        };
        let Some(data) = saved.data.as_ref().filter(|d| d.pending) else {
            return Ok(());
        };
        let (layout, dtype) = (saved.layout, saved.input.dtype());
        let terms = BufferSlice::whole(&data.terms.buffer);
        let ctx = self.ctx.clone();
        ctx.submit("batchnorm/eval-terms", |encoder| {
            let flags = self.flags(false, false);
            let ops = (Op::Forward, flags, 0.0);
            let Prepared { exec, uniforms, .. } =
                self.prepare_op(encoder, (&layout, dtype), ops, Target::Submit)?;
            let state = BufferSlice::whole(&self.state.buffer);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("batchnorm/eval-terms"),
                timestamp_writes: None,
            });
            let mut rec = Recorder::new(
                &ctx,
                &mut pass,
                &mut self.ws.binds,
                &uniforms,
                dtype,
                exec.thread_partials,
            );
            rec.channels(ChannelStep::EvalPrepare { terms, state }, layout.c)
        })?;
        if let Some(data) = self.saved.as_mut().and_then(|s| s.data.as_mut()) {
            data.pending = false;
        }
        Ok(())
    }
}
