//! Tally's application layer: the use cases (subscribe, change and preview, cancel, usage, test
//! clocks, bill run), the storage port they need, and an in-memory store for tests and
//! simulation. It depends on the core and on no web framework or database driver.

pub mod catalog_file;
pub mod ids;
pub mod memory;
pub mod service;
pub mod store;
pub mod testkit;
pub mod webhooks;

pub use service::{
    Actor, AppError, AppResult, ChangeResult, Clock, OrderWrite, SystemClock, Tally,
};
pub use store::Store;
