//! The binding indices of every kernel, named once: one role per index
//! across all shaders (the table in `shaders/README.md`).

/// Binding indices, one role each across all shaders (see
/// `shaders/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Binding {
    Params = 0,
    X = 1,
    Dy = 2,
    Terms = 3,
    Partials = 4,
    State = 5,
    Out = 6,
    Head = 7,
    GradWeight = 8,
    GradBias = 9,
    MomentsOut = 10,
    Merged = 11,
    Residual = 12,
    Output = 13,
    Heads = 14,
}
