//! Spans and events through `tracing` with the `tracing` feature, and
//! nothing without it: the library never prints. `span!` returns a guard
//! that closes the span when dropped.

/// Enters an `INFO` span named by a string literal, with `key = value`
/// fields; the guard closes it.
#[cfg(feature = "tracing")]
macro_rules! span {
    ($name:literal $(, $key:ident = $value:expr)* $(,)?) => {
        tracing::info_span!($name $(, $key = $value)*).entered()
    };
}

/// Without the `tracing` feature: evaluates nothing but the field values'
/// references, and returns an empty guard.
#[cfg(not(feature = "tracing"))]
macro_rules! span {
    ($name:literal $(, $key:ident = $value:expr)* $(,)?) => {{
        $(let _ = &$value;)*
        $crate::trace::NoSpan
    }};
}

/// The guard [`span!`] returns without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NoSpan;

/// Emits a `DEBUG` event with a literal message and `key = value` fields.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($msg:literal $(, $key:ident = $value:expr)* $(,)?) => {
        tracing::debug!($($key = $value,)* $msg)
    };
}

/// Without the `tracing` feature: nothing.
#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($msg:literal $(, $key:ident = $value:expr)* $(,)?) => {{
        $(let _ = &$value;)*
    }};
}

/// Runs a future inside an `INFO` span named by a string literal (a span
/// guard must not be held across `.await`).
#[cfg(feature = "tracing")]
macro_rules! instrument {
    ($name:literal, $fut:expr) => {
        tracing::Instrument::instrument($fut, tracing::info_span!($name))
    };
}

/// Without the `tracing` feature: the future itself.
#[cfg(not(feature = "tracing"))]
macro_rules! instrument {
    ($name:literal, $fut:expr) => {
        $fut
    };
}

pub(crate) use {event, instrument, span};
