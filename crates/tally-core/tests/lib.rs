//! Integration tests of the billing core, as one test binary: worked examples, property tests of
//! the invariants, and reference cases transcribed from other billing systems.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

mod conformance;
mod examples;
mod properties;
