//! Finite-difference checks of the CPU reference's backward (in f64), which
//! in turn is the oracle for the GPU backward.

mod common;

use wgpu_batchnorm::{cpu, BatchNorm1dConfig};

/// loss = sum(r * y); checks d loss / d x, d weight, d bias by central differences.
fn check(shape: &[usize], cfg: BatchNorm1dConfig, train: bool, seed: u64) {
    let mut rng = common::Rng(seed);
    let numel: usize = shape.iter().product();
    let nf = cfg.num_features;
    let x: Vec<f64> = (0..numel).map(|_| 2.0 + rng.normal()).collect();
    let r: Vec<f64> = (0..numel).map(|_| rng.normal()).collect();
    let w: Vec<f32> = (0..nf).map(|_| (1.0 + 0.3 * rng.normal()) as f32).collect();
    let b: Vec<f32> = (0..nf).map(|_| (0.3 * rng.normal()) as f32).collect();
    let rm: Vec<f32> = (0..nf).map(|_| (0.5 * rng.normal()) as f32).collect();
    let rv: Vec<f32> = (0..nf).map(|_| (1.0 + rng.uniform()) as f32).collect();

    let make = |w: &[f32], b: &[f32]| {
        let mut bn = cpu::BatchNorm1d::new(cfg.clone()).expect("module");
        if cfg.affine {
            bn.set_weight(w).expect("w");
            bn.set_bias(b).expect("b");
        }
        if cfg.track_running_stats {
            bn.set_running_mean(&rm).expect("rm");
            bn.set_running_var(&rv).expect("rv");
        }
        if !train {
            bn.eval();
        }
        bn
    };
    let loss = |x: &[f64], w: &[f32], b: &[f32]| -> f64 {
        let mut bn = make(w, b);
        let y = bn.forward_f64(x, shape).expect("forward");
        y.iter().zip(&r).map(|(a, b)| a * b).sum()
    };

    let mut bn = make(&w, &b);
    bn.forward_f64(&x, shape).expect("forward");
    let (dx, gw, gb) = bn.backward_f64(&r).expect("backward");

    let h = 1e-5;
    for i in 0..numel {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(&xp, &w, &b) - loss(&xm, &w, &b)) / (2.0 * h);
        assert!(
            (fd - dx[i]).abs() < 1e-5 * (1.0 + fd.abs()),
            "dx[{i}]: fd {fd} vs {}",
            dx[i]
        );
    }
    if cfg.affine {
        let (gw, gb) = (gw.expect("gw"), gb.expect("gb"));
        // Weights are f32 in the API: perturb by an f32-exact step.
        let hw = 1.0 / 1024.0;
        for c in 0..nf {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[c] += hw;
            wm[c] -= hw;
            let fd =
                (loss(&x, &wp, &b) - loss(&x, &wm, &b)) / (f64::from(wp[c]) - f64::from(wm[c]));
            assert!(
                (fd - gw[c]).abs() < 1e-6 * (1.0 + fd.abs()),
                "gw[{c}]: {fd} vs {}",
                gw[c]
            );
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[c] += hw;
            bm[c] -= hw;
            let fd =
                (loss(&x, &w, &bp) - loss(&x, &w, &bm)) / (f64::from(bp[c]) - f64::from(bm[c]));
            assert!(
                (fd - gb[c]).abs() < 1e-6 * (1.0 + fd.abs()),
                "gb[{c}]: {fd} vs {}",
                gb[c]
            );
        }
    } else {
        assert!(gw.is_none() && gb.is_none());
    }
}

#[test]
fn finite_differences_train_2d() {
    check(&[6, 3], BatchNorm1dConfig::new(3), true, 11);
}

#[test]
fn finite_differences_train_3d() {
    check(&[3, 2, 4], BatchNorm1dConfig::new(2), true, 12);
}

#[test]
fn finite_differences_eval_running_stats() {
    check(&[5, 3, 2], BatchNorm1dConfig::new(3), false, 13);
}

#[test]
fn finite_differences_eval_without_running_stats() {
    check(
        &[4, 3],
        BatchNorm1dConfig::new(3).track_running_stats(false),
        false,
        14,
    );
}

#[test]
fn finite_differences_not_affine() {
    check(
        &[4, 2, 3],
        BatchNorm1dConfig::new(2).affine(false),
        true,
        15,
    );
}
