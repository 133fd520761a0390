//! Reference cases.
