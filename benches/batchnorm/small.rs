//! The `small` section: small batches, where a submission's fixed cost is
//! most of the time, each op against one copy dispatch of the same tensor.

use wgpu_batchnorm::GpuContext;

use crate::fixture::{Fixture, Op};
use crate::{ms, CF};

pub fn small_section(ctx: &GpuContext) {
    println!("\n### Small batches: fixed overhead\n");
    println!("Each op is one submission; its time against one copy dispatch (also one submission) of the same tensor.\n");
    println!("| shape | copy dispatch | train forward | eval forward | backward |");
    println!("| --- | --- | --- | --- | --- |");
    for shape in [&[32usize, 20][..], &[8, 512]] {
        let mut f = Fixture::new(ctx, shape, CF);
        let copy = f.time(Op::Copy, 51);
        let cells: Vec<String> = [Op::Train, Op::Eval, Op::Backward]
            .iter()
            .map(|&op| {
                let t = f.time(op, 51);
                format!(
                    "{:.3} ms, {:.2}x",
                    ms(t),
                    t.as_secs_f64() / copy.as_secs_f64()
                )
            })
            .collect();
        println!(
            "| {} | {:.3} ms | {} |",
            f.name(),
            ms(copy),
            cells.join(" | ")
        );
    }
}
