//! Training with the GPU batch norm inside a small MLP:
//! `Linear(10, 20) -> BatchNorm1d(20) -> ReLU -> Linear(20, 10)`, plain SGD on
//! a synthetic regression target, batches of shape `(32, 10)`.
//!
//! The linear layers and ReLU are small host code; batch norm (forward,
//! backward, running statistics) runs on the GPU through this crate.
//!
//! `cargo run --release --example train_step`

use wgpu_batchnorm::{BatchNorm1d, BatchNorm1dConfig, GpuContext, Tensor};

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    fn matrix(&mut self, rows: usize, cols: usize, scale: f32) -> Vec<f32> {
        (0..rows * cols).map(|_| self.normal() * scale).collect()
    }
}

/// `y[b, o] = sum_i x[b, i] * w[o, i] + bias[o]` (PyTorch's Linear layout).
fn linear(x: &[f32], w: &[f32], b: &[f32], inp: usize, out: usize) -> Vec<f32> {
    let batch = x.len() / inp;
    let mut y = vec![0.0; batch * out];
    for r in 0..batch {
        for o in 0..out {
            let row = &x[r * inp..(r + 1) * inp];
            let wr = &w[o * inp..(o + 1) * inp];
            y[r * out + o] = b[o] + row.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>();
        }
    }
    y
}

/// Gradients of `linear`: (dx, dw, db).
fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    inp: usize,
    out: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let batch = x.len() / inp;
    let (mut dx, mut dw, mut db) = (vec![0.0; batch * inp], vec![0.0; out * inp], vec![0.0; out]);
    for r in 0..batch {
        for o in 0..out {
            let g = dy[r * out + o];
            db[o] += g;
            for i in 0..inp {
                dw[o * inp + i] += g * x[r * inp + i];
                dx[r * inp + i] += g * w[o * inp + i];
            }
        }
    }
    (dx, dw, db)
}

fn sgd(p: &mut [f32], g: &[f32], lr: f32) {
    p.iter_mut().zip(g).for_each(|(p, g)| *p -= lr * g);
}

fn run() -> wgpu_batchnorm::Result<()> {
    let ctx = GpuContext::new()?;
    if let Some(info) = ctx.adapter_info() {
        println!("adapter: {} ({:?})", info.name, info.backend);
    }
    let (batch, d_in, d_hidden, d_out) = (32, 10, 20, 10);
    let mut rng = Rng(0x5eed);
    // Teacher: target = tanh(x A) B + 0.5.
    let a = rng.matrix(d_in, 16, 0.5);
    let bmat = rng.matrix(16, d_out, 0.5);
    let target = |x: &[f32]| -> Vec<f32> {
        let mut t = vec![0.5; batch * d_out];
        for r in 0..batch {
            for k in 0..16 {
                let h = (0..d_in)
                    .map(|i| x[r * d_in + i] * a[i * 16 + k])
                    .sum::<f32>()
                    .tanh();
                for o in 0..d_out {
                    t[r * d_out + o] += h * bmat[k * d_out + o];
                }
            }
        }
        t
    };

    let mut w1 = rng.matrix(d_hidden, d_in, (1.0 / d_in as f32).sqrt());
    let mut b1 = vec![0.0; d_hidden];
    let mut w2 = rng.matrix(d_out, d_hidden, (1.0 / d_hidden as f32).sqrt());
    let mut b2 = vec![0.0; d_out];
    let mut bn = BatchNorm1d::new(&ctx, BatchNorm1dConfig::new(d_hidden))?;
    let mut gamma = vec![1.0; d_hidden];
    let mut beta = vec![0.0; d_hidden];
    let lr = 0.05;

    let mut first_loss = None;
    let mut loss = 0.0;
    for step in 0..=400 {
        let x: Vec<f32> = (0..batch * d_in).map(|_| rng.normal()).collect();
        let t = target(&x);
        // forward
        let h = linear(&x, &w1, &b1, d_in, d_hidden);
        let hn = bn
            .forward(&Tensor::from_slice(&ctx, &h, &[batch, d_hidden])?)?
            .to_vec()?;
        let r: Vec<f32> = hn.iter().map(|v| v.max(0.0)).collect();
        let out = linear(&r, &w2, &b2, d_hidden, d_out);
        let n = out.len() as f32;
        loss = out
            .iter()
            .zip(&t)
            .map(|(o, t)| (o - t) * (o - t))
            .sum::<f32>()
            / n;
        first_loss.get_or_insert(loss);
        if step % 50 == 0 {
            println!("step {step:3}  loss {loss:.5}");
        }
        // backward
        let dout: Vec<f32> = out.iter().zip(&t).map(|(o, t)| 2.0 * (o - t) / n).collect();
        let (dr, dw2, db2) = linear_backward(&r, &w2, &dout, d_hidden, d_out);
        let dhn: Vec<f32> = dr
            .iter()
            .zip(&hn)
            .map(|(g, v)| if *v > 0.0 { *g } else { 0.0 })
            .collect();
        let g = bn.backward(&Tensor::from_slice(&ctx, &dhn, &[batch, d_hidden])?)?;
        let dh = g.grad_input.to_vec()?;
        let (_, dw1, db1) = linear_backward(&x, &w1, &dh, d_in, d_hidden);
        // SGD
        sgd(&mut w1, &dw1, lr);
        sgd(&mut b1, &db1, lr);
        sgd(&mut w2, &dw2, lr);
        sgd(&mut b2, &db2, lr);
        if let (Some(gw), Some(gb)) = (g.grad_weight, g.grad_bias) {
            sgd(&mut gamma, &gw.to_vec()?, lr);
            sgd(&mut beta, &gb.to_vec()?, lr);
            bn.set_weight(&gamma)?;
            bn.set_bias(&beta)?;
        }
    }
    let first = first_loss.unwrap_or(loss);
    println!(
        "loss fell from {first:.5} to {loss:.5} ({:.1}x lower)",
        first / loss
    );

    // Eval: the running statistics replace the batch statistics.
    bn.eval();
    let x: Vec<f32> = (0..batch * d_in).map(|_| rng.normal()).collect();
    let h = linear(&x, &w1, &b1, d_in, d_hidden);
    let eval = bn
        .forward(&Tensor::from_slice(&ctx, &h, &[batch, d_hidden])?)?
        .to_vec()?;
    let rm = bn.running_mean()?.unwrap_or_default();
    let rv = bn.running_var()?.unwrap_or_default();
    let mut max_diff = 0.0f32;
    for (i, v) in eval.iter().enumerate() {
        let c = i % d_hidden;
        let manual = (h[i] - rm[c]) / (rv[c] + 1e-5).sqrt() * gamma[c] + beta[c];
        max_diff = max_diff.max((manual - v).abs());
    }
    println!(
        "eval mode: num_batches_tracked = {}, running_mean[0..3] = {:?}, running_var[0..3] = {:?}",
        bn.num_batches_tracked(),
        &rm[..3],
        &rv[..3]
    );
    println!("eval output equals (h - running_mean) / sqrt(running_var + eps) * weight + bias: max |diff| = {max_diff:.2e}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        // Display, not Debug: the message says what went wrong and what to do.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
