//! Process isolation (SPEC §14): the protocol between the host and a
//! `stowage-runner` child that loads one plugin library, so a plugin that
//! segfaults, aborts, overflows its stack, exits or hangs takes down only
//! its runner.
//!
//! Rooms: `arrow.rs` reads Arrow batches' C structs into plain
//! descriptions and rebuilds validated ones (no arrow-rs); `wire.rs` is the wire format (frames, value trees in shared
//! memory; pure, and the only decoder of what a runner sends); `shm.rs` is
//! the shared-memory transport (sealed memfds, lending a stored file's
//! descriptor and range, descriptors over the socket); `process.rs` starts,
//! calls, times out and reaps one runner and says what its death means;
//! `runner.rs` is the runner's own side (the `stowage-runner` binary's
//! `main`). The host side that dispatch calls is `loader/isolated.rs`,
//! which implements the same `Serializer` trait as an in-process plugin.
//!
//! Invariant: the host never `dlopen`s an isolated library; the runner
//! does, with the host's own loader.
//! Invariant: payloads never cross the socket: frames carry metadata and
//! regions of descriptors sent beside them.

pub(crate) mod arrow;
pub(crate) mod process;
pub mod runner;
pub(crate) mod shm;
pub(crate) mod wire;
