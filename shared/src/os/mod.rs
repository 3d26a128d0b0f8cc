//! Layer 1: the operating system, as the tools use it — files replaced atomically, the mount
//! table, block devices found by label, and signals (one thread that waits for them, and the
//! hooks that run on an interrupt).

pub mod atomic;
pub mod blockdev;
pub mod interrupt;
pub mod lock;
pub mod mounts;
pub mod signal;
pub mod small_file;
pub mod terminal;
