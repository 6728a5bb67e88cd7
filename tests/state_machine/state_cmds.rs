//! The model-based test's commands on shards, parameters and state.

use super::commands::{Bad, Cmd};
use super::{common, data, err, Pair, Res};
use wgpu_batchnorm::cpu::CpuGradients;
use wgpu_batchnorm::{
    Error, Gradients, MemoryFormat, ShardGradSums, ShardMoments, SpatialRank, StateDict, Tensor,
};

/// A backward's gradients equal the model's (grad_input, and grad_weight
/// and grad_bias where the module is affine).
pub(super) fn compare_grads(what: &str, g: &Gradients, want: &CpuGradients) -> Res<()> {
    let gi = g.grad_input.to_vec().map_err(err)?;
    common::check_close(
        &format!("{what} grad_input"),
        &gi,
        &common::f64s(&want.grad_input),
        1e-3,
    )?;
    for (name, got, w) in [
        ("grad_weight", &g.grad_weight, &want.grad_weight),
        ("grad_bias", &g.grad_bias, &want.grad_bias),
    ] {
        match (got, w) {
            (Some(got), Some(w)) => {
                let got = got.to_vec().map_err(err)?;
                common::check_close(&format!("{what} {name}"), &got, &common::f64s(w), 1e-3)?;
            }
            (None, None) => {}
            (got, w) => {
                return Err(format!(
                    "{what} {name} presence: gpu {:?} model {:?}",
                    got.is_some(),
                    w.is_some()
                ))
            }
        }
    }
    Ok(())
}

impl<R: SpatialRank> Pair<'_, R> {
    /// Applies a command of the second half of [`Cmd`].
    pub(super) fn apply_state(&mut self, cmd: &Cmd) -> Res<()> {
        match cmd {
            Cmd::Shard {
                shape,
                seed,
                malformed,
                backward,
            } => {
                let numel: usize = shape.iter().product();
                let d = data(*seed, numel);
                let x = self.tensor(&d, shape, MemoryFormat::ChannelsFirst, Bad::None)?;
                // A rejected shape changes nothing (checked after the command).
                let Ok(moments) = self.gpu.shard_moments(&x) else {
                    return Ok(());
                };
                let global = if *malformed {
                    ShardMoments {
                        m2: vec![],
                        ..moments.clone()
                    }
                } else {
                    moments.clone()
                };
                let mut probe = self.model.clone();
                let model_ok = probe.forward(&d, shape).is_ok()
                    && (self.model.is_training() || !self.model.config().track_running_stats)
                    && !*malformed;
                match (self.gpu.forward_with_moments(&x, &global), model_ok) {
                    (Ok(y), true) => {
                        let want = self.model.forward(&d, shape).map_err(err)?;
                        let y = y.to_vec().map_err(err)?;
                        common::check_close("sharded output", &y, &common::f64s(&want), 2e-4)?;
                        self.last = Some((shape.clone(), MemoryFormat::ChannelsFirst, true));
                        self.f16_last = false;
                    }
                    (Err(_), false) => return Ok(()),
                    (r, ok) => {
                        return Err(format!(
                            "forward_with_moments {shape:?}: gpu {:?}, model ok {ok}",
                            r.err()
                        ))
                    }
                }
                if *backward {
                    let dyd = data(seed.wrapping_add(1), numel);
                    let dy = self.tensor(&dyd, shape, MemoryFormat::ChannelsFirst, Bad::None)?;
                    let sums = self.gpu.shard_grad_sums(&dy).map_err(err)?;
                    let merged = ShardGradSums::merge(&[sums]).map_err(err)?;
                    let g = self.gpu.backward_with_sums(&dy, &merged).map_err(err)?;
                    let want = self.model.backward(&dyd).map_err(err)?;
                    compare_grads("sharded", &g, &want)?;
                }
            }
            Cmd::SetParam { which, extra, seed } => {
                let nf = self.model.config().num_features;
                let v = data(*seed, nf + usize::from(*extra));
                let v: Vec<f32> = if *which == 3 {
                    v.iter().map(|x| x.abs() + 0.1).collect()
                } else {
                    v
                };
                let (g, m) = match which {
                    0 => (self.gpu.set_weight(&v), self.model.set_weight(&v)),
                    1 => (self.gpu.set_bias(&v), self.model.set_bias(&v)),
                    2 => (
                        self.gpu.set_running_mean(&v),
                        self.model.set_running_mean(&v),
                    ),
                    _ => (self.gpu.set_running_var(&v), self.model.set_running_var(&v)),
                };
                if g.is_ok() != m.is_ok() {
                    return Err(format!(
                        "set param {which}: gpu {:?} model {:?}",
                        g.err(),
                        m.err()
                    ));
                }
            }
            Cmd::LoadStateDict { wrong, seed } => {
                let nf = self.model.config().num_features;
                let mut sd: StateDict = self.gpu.state_dict().map_err(err)?;
                for v in [&mut sd.weight, &mut sd.bias, &mut sd.running_mean]
                    .into_iter()
                    .flatten()
                {
                    *v = data(*seed, nf);
                }
                if let Some(v) = &mut sd.running_var {
                    *v = data(*seed, nf).iter().map(|x| x.abs() + 0.1).collect();
                }
                match wrong {
                    1 => sd.weight = Some(vec![1.0; nf + 1]),
                    2 => sd.num_batches_tracked = sd.num_batches_tracked.xor(Some(3)),
                    3 => sd.running_var = None,
                    _ => {}
                }
                let valid = self.gpu.config().affine == sd.weight.is_some()
                    && sd.weight.as_ref().is_none_or(|w| w.len() == nf)
                    && self.gpu.config().track_running_stats == sd.running_var.is_some()
                    // A missing count keeps the module's (PyTorch, for
                    // state dicts without version metadata).
                    && (self.gpu.config().track_running_stats || sd.num_batches_tracked.is_none())
                    && self.gpu.config().track_running_stats == sd.running_mean.is_some();
                match (self.gpu.load_state_dict(&sd), valid) {
                    (Ok(()), true) => {
                        for (set, v) in [
                            (0, &sd.weight),
                            (1, &sd.bias),
                            (2, &sd.running_mean),
                            (3, &sd.running_var),
                        ] {
                            if let Some(v) = v {
                                match set {
                                    0 => self.model.set_weight(v),
                                    1 => self.model.set_bias(v),
                                    2 => self.model.set_running_mean(v),
                                    _ => self.model.set_running_var(v),
                                }
                                .map_err(err)?;
                            }
                        }
                        if let Some(n) = sd.num_batches_tracked {
                            self.model.set_num_batches_tracked(n);
                        }
                    }
                    (Err(_), false) => {}
                    (r, v) => {
                        return Err(format!(
                            "load_state_dict wrong={wrong}: gpu {r:?}, valid {v}"
                        ))
                    }
                }
            }
            Cmd::SetNbt(n) => {
                self.gpu.set_num_batches_tracked(*n);
                self.model.set_num_batches_tracked(*n);
            }
            Cmd::ResetRunningStats => {
                self.gpu.reset_running_stats().map_err(err)?;
                self.model.reset_running_stats();
            }
            Cmd::ResetParameters => {
                self.gpu.reset_parameters().map_err(err)?;
                self.model.reset_parameters();
            }
            Cmd::EncodeBackward { seed } => {
                let mut enc = self
                    .ctx
                    .device()
                    .create_command_encoder(&Default::default());
                let Some((shape, format, sharded)) = self.last.clone() else {
                    let dy = Tensor::zeros(self.ctx, &[2, 2]).map_err(err)?;
                    return match self.gpu.encode_backward(&mut enc, &dy) {
                        Err(Error::NoForward) => Ok(()),
                        r => Err(format!("encode_backward before forward: {:?}", r.err())),
                    };
                };
                let numel: usize = shape.iter().product();
                let d = data(*seed, numel);
                let dy =
                    Tensor::from_slice_with_format(self.ctx, &d, &shape, format).map_err(err)?;
                let r = self.gpu.encode_backward(&mut enc, &dy);
                self.ctx.queue().submit([enc.finish()]);
                match (r, sharded) {
                    (Ok(g), false) => {
                        let want = self.model.backward(&d).map_err(err)?;
                        compare_grads("encode_backward", &g, &want)?;
                    }
                    // After a sharded or an f16 forward, an f32 grad_output
                    // through the plain backward is an error.
                    (Err(_), true) => {}
                    (r, _) => {
                        return Err(format!(
                            "encode_backward (sharded or f16 forward: {sharded}): {:?}",
                            r.err()
                        ))
                    }
                }
            }
            _ => unreachable!("apply handles {cmd:?}"),
        }
        Ok(())
    }
}
