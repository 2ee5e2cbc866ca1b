//! What the examples and `cargo xtask` share: the recall model ([`recall`]), device selection
//! from the command line ([`cli`]) and the timing helper of every benchmark ([`timing`]).

pub mod cli;
pub mod recall;
pub mod timing;

pub use recall::*;
