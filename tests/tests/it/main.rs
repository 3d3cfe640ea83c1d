//! stowage's integration tests: real plugin libraries through the real
//! loader, and the real `stowage` binary. One test binary, one module per
//! area.

// Discovery, every broken/pending reason, toggles, requirements, rescans.
mod lifecycle;
// Priority order, tie-breaks, failing and panicking candidates, fallback.
mod dispatch;
// Plugins built against other interface versions, including the frozen 1.0.
mod abi_versions;
// The artifact store through the host and the CLI: round trips, crashes,
// concurrency, corruption, missing plugins.
mod store;
// The store against hostile input: escaping blob names, read-only stores,
// unreadable records, the format marker, names and escaped output.
mod store_hardening;
// The store at scale: format 2 (snapshot runs + log tail), compaction and
// upgrade failpoints, readers during compaction, the format-1 fixture.
mod store_scale;
// The tensor plugin (safetensors): through the host, and Python interop.
mod tensor;
// The arrow plugin (Arrow IPC, C Data Interface): host, and pyarrow interop.
mod arrow;
// Composite artifacts: structures whose leaves go to their own serializers.
mod composite;
// The class-source plugin: validation, byte-exact round trips, never executed.
mod class_source;
// The `stowage` command: exit codes, status JSON, toggles, explain, watch.
mod cli;
// `stowage install` / `uninstall`: checked without dlopen, renamed into place.
mod install;
// Error messages: the artifact and the real cause first, capped quotes.
mod errors;
// put and get as I/O: -o targets (devices, FIFOs, symlinks, directories),
// mapped and spooled input, put --json dispatch, flat memory.
mod cli_io;
// The Python package: its pytest suite, built and run through the harness.
mod python;
// Process isolation: crashes and hangs contained in a runner (SPEC §14).
mod isolation;
// The Metaflow extension in real Metaflow (issue #16).
mod metaflow;
// The S3 store against a real S3 server: URLs, eight machines, faults.
mod s3;
// House rules checked on the source tree.
mod tidy;
