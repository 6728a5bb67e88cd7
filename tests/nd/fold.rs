//! Folding a trained BatchNorm2d/3d into the convolution before it.

use super::{common, read};
use wgpu_batchnorm::{BatchNorm, BatchNormConfig, Rank2d, Rank3d, SpatialRank, Tensor};

/// Folding into a convolution, `W'[o, ...] = W[o, ...] * gamma[o] *
/// invstd[o]`: after `steps` training steps on `(2, C, *spatial)` inputs,
/// one output position of the folded conv (weight `[C, cin, *kernel]`)
/// equals conv + eval batch norm; a weight of the wrong shape or length is
/// an error.
fn fold_matches<R: SpatialRank>(
    c: usize,
    cin: usize,
    kernel: &[usize],
    spatial: &[usize],
    steps: usize,
    seed: u64,
) {
    let Some(ctx) = common::context() else { return };
    let per = cin * kernel.iter().product::<usize>();
    let mut rng = common::Rng(seed);
    let mut bn = BatchNorm::<R>::new(&ctx, BatchNormConfig::new(c)).expect("bn");
    bn.set_weight(&rng.normals(c, 1.0, 0.3)).expect("w");
    bn.set_bias(&rng.normals(c, 0.0, 0.3)).expect("b");
    let x_shape: Vec<usize> = [2, c].iter().chain(spatial).copied().collect();
    for _ in 0..steps {
        let x = Tensor::from_slice(
            &ctx,
            &rng.normals(x_shape.iter().product(), 1.0, 2.0),
            &x_shape,
        );
        bn.forward(&x.expect("x")).expect("train");
    }
    let w = rng.normals(c * per, 0.0, 0.5);
    let b = rng.normals(c, 0.0, 0.1);
    let shape: Vec<usize> = [c, cin].iter().chain(kernel).copied().collect();
    let folded = bn.fold_into_conv(&w, &shape, Some(&b)).expect("fold");
    assert_eq!(folded.shape, shape);
    // One output position of a conv equals a dot product with the kernel:
    // check it for a patch, folded against conv + eval batch norm.
    let patch = rng.normals(per, 0.0, 1.0);
    let conv = |w: &[f32], b: &[f32]| -> Vec<f32> {
        (0..c)
            .map(|o| {
                b[o] + w[o * per..(o + 1) * per]
                    .iter()
                    .zip(&patch)
                    .map(|(a, p)| a * p)
                    .sum::<f32>()
            })
            .collect()
    };
    bn.eval();
    let h = conv(&w, &b);
    let h_shape: Vec<usize> = [1, c]
        .iter()
        .chain(spatial.iter().map(|_| &1))
        .copied()
        .collect();
    let want = read(
        &bn.forward(&Tensor::from_slice(&ctx, &h, &h_shape).expect("h"))
            .expect("eval"),
    );
    let got = conv(&folded.weight, &folded.bias);
    common::check_close("folded conv", &got, &common::f64s(&want), 1e-5).expect("fold");
    let mut wide = shape.clone();
    wide[0] = c + 1;
    assert!(bn.fold_into_conv(&w, &wide, None).is_err());
    assert!(bn.fold_into_conv(&w[1..], &shape, None).is_err());
    assert!(bn
        .fold_into_conv(&w, &shape[..shape.len() - 1], None)
        .is_err());
}

#[test]
fn fold_into_conv_matches_conv_then_batch_norm() {
    fold_matches::<Rank2d>(4, 2, &[3, 3], &[3, 3], 3, 5);
}

/// A Conv3d: a 5-D weight `[C, in, kd, kh, kw]`.
#[test]
fn fold_into_conv3d_matches_conv_then_batch_norm() {
    fold_matches::<Rank3d>(3, 2, &[2, 3, 2], &[2, 2, 2], 2, 21);
}
