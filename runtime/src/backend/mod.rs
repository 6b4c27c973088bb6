//! Community backends.

pub mod qido;
