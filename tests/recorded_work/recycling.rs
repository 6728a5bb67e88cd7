//! #16: the terms buffers of recorded work are recycled once their
//! encoders are done, never before.

use super::*;

/// The training forward's output and gradients of a fresh module (weight
/// 1, bias 0) on `x`, from the CPU reference: what any training step on
/// `x` computes, whatever ran before.
fn reference_step(x: &[f32], dy: &[f32], shape: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut r = cpu::BatchNorm1d::new(BatchNormConfig::new(shape[1])).expect("cpu");
    let y = r.forward(x, shape).expect("cpu forward");
    let g = r.backward(dy).expect("cpu backward");
    (
        f64s(&y),
        f64s(&g.grad_input),
        f64s(&g.grad_weight.expect("affine")),
    )
}

/// #16: terms buffers of recorded work are recycled once their encoders
/// have run or were dropped, never before. Forwards and backwards recorded
/// into encoders that stay unsubmitted across later calls, submitted out
/// of order, dropped, or run and waited for, in one module: every output
/// and gradient is its own batch's, and the module holds a bounded number
/// of buffers however many steps it records.
#[test]
fn recorded_terms_are_recycled_once_their_encoders_are_done() {
    let Some(ctx) = common::context() else { return };
    let shape = [6usize, 40];
    let mut rng = common::Rng(61);
    let mut batch = |i: usize| {
        (
            rng.normals(240, i as f64 * 3.0 - 7.0, 0.5 + i as f64),
            rng.normals(240, 0.0, 1.0),
        )
    };
    let t = |v: &[f32]| Tensor::from_slice(&ctx, v, &shape).expect("tensor");
    let read = |g: &Tensor| g.to_vec().expect("read");
    let check = |what: &str, x: &[f32], dy: &[f32], y: &Tensor, dx: &Tensor, gw: &Tensor| {
        let (want_y, want_dx, want_gw) = reference_step(x, dy, &shape);
        common::check_close(&format!("{what} output"), &read(y), &want_y, 1e-5).expect("y");
        common::check_close(&format!("{what} grad_input"), &read(dx), &want_dx, 1e-4)
            .expect("grad_input");
        common::check_close(&format!("{what} grad_weight"), &read(gw), &want_gw, 1e-4)
            .expect("grad_weight");
    };
    let mut bn = BatchNorm1d::new(&ctx, BatchNormConfig::new(shape[1])).expect("bn");
    // 1: forward and backward recorded, submitted only after three more
    // forwards (two submitted, one recorded in a second encoder).
    let (x1, dy1) = batch(1);
    let mut e1 = encoder(&ctx);
    let y1 = bn.encode_forward(&mut e1, &t(&x1)).expect("record 1");
    let g1 = bn
        .encode_backward(&mut e1, &t(&dy1))
        .expect("record 1 backward");
    let (x2, _) = batch(2);
    bn.forward(&t(&x2)).expect("forward 2");
    let (x3, dy3) = batch(3);
    let mut e3 = encoder(&ctx);
    let y3 = bn.encode_forward(&mut e3, &t(&x3)).expect("record 3");
    let (x4, dy4) = batch(4);
    let y4 = bn.forward(&t(&x4)).expect("forward 4");
    // A backward of 4 recorded into the first encoder too: it holds 4's
    // terms as well.
    let g4 = bn
        .encode_backward(&mut e1, &t(&dy4))
        .expect("record 4 backward");
    let (x5, _) = batch(5);
    bn.forward(&t(&x5)).expect("forward 5");
    // An encoder dropped unsubmitted releases its terms (6's).
    let (x6, _) = batch(6);
    let mut e6 = encoder(&ctx);
    bn.encode_forward(&mut e6, &t(&x6)).expect("record 6");
    drop(e6);
    let (x7, dy7) = batch(7);
    let y7 = bn.forward(&t(&x7)).expect("forward 7");
    let g7 = bn.backward(&t(&dy7)).expect("backward 7");
    check(
        "7",
        &x7,
        &dy7,
        &y7,
        &g7.grad_input,
        g7.grad_weight.as_ref().expect("affine"),
    );
    ctx.queue().submit([e3.finish(), e1.finish()]);
    check(
        "1",
        &x1,
        &dy1,
        &y1,
        &g1.grad_input,
        g1.grad_weight.as_ref().expect("affine"),
    );
    check(
        "4",
        &x4,
        &dy4,
        &y4,
        &g4.grad_input,
        g4.grad_weight.as_ref().expect("affine"),
    );
    let (want_y3, ..) = reference_step(&x3, &dy3, &shape);
    common::check_close("3 output", &read(&y3), &want_y3, 1e-5).expect("y3");
    // 7 is still the saved forward: the late work wrote no terms of its.
    let g7 = bn.backward(&t(&dy7)).expect("backward 7 again");
    check(
        "7 after the late work",
        &x7,
        &dy7,
        &y7,
        &g7.grad_input,
        g7.grad_weight.as_ref().expect("affine"),
    );
    // Everything ran: the buffers serve again. Steps recorded and waited
    // for, and steps submitted by the module, alternate; none may read
    // another's terms.
    let before = ctx.live_buffers().0;
    for step in 0..8 {
        let (x, dy) = batch(8 + step);
        let (y, g) = if step % 3 == 2 {
            let y = bn.forward(&t(&x)).expect("forward");
            (y, bn.backward(&t(&dy)).expect("backward"))
        } else {
            let mut e = encoder(&ctx);
            let y = bn.encode_forward(&mut e, &t(&x)).expect("record");
            let g = bn
                .encode_backward(&mut e, &t(&dy))
                .expect("record backward");
            ctx.queue().submit([e.finish()]);
            (y, g)
        };
        check(
            &format!("step {step}"),
            &x,
            &dy,
            &y,
            &g.grad_input,
            g.grad_weight.as_ref().expect("affine"),
        );
        ctx.synchronize().expect("sync");
    }
    let after = ctx.live_buffers().0;
    assert!(
        after <= before + 2,
        "recycled, not piled up: {before} buffers before, {after} after"
    );
}
