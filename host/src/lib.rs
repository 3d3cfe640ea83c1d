//! stowage: a plugin host for serializers.
//!
//! A [`Host`] reads `plugins.toml`, discovers serializer plugins (shared
//! libraries behind the stable ABI of `stowage-plugin-api`) in the plugin
//! directory, tracks each through its lifecycle
//! ([`lifecycle::State`]) and dispatches every [`Value`] to the active
//! serializer with the best priority, falling back to the built-in
//! MessagePack serializer for plain data.
//!
//! ```no_run
//! use stowage::{Host, HostOptions, Value};
//!
//! # fn main() -> Result<(), stowage::Error> {
//! let host = Host::open(HostOptions::from_env(None))?;
//! for plugin in host.snapshot().statuses() {
//!     println!("{} {} {:?}", plugin.name, plugin.state, plugin.last_error);
//! }
//! let serialized = host.serialize_to_memory(&Value::Int(42), &[])?;
//! println!("stored by {}", serialized.plugin);
//! # Ok(())
//! # }
//! ```
//!
//! Module map: [`Host`] (`host.rs`) is the front door and only delegates;
//! [`config`] reads the configuration, [`loader`] opens one library (the
//! only module that touches the ABI), [`lifecycle`] computes states,
//! [`registry`] dispatches, [`artifact`] saves and loads through the
//! [`store`], [`fallback`] is the built-in serializer, [`composite`] the
//! built-in serializer of structures with non-plain leaves, [`value`] is the
//! public value type and [`mod@error`] the error every call returns. See
//! ARCHITECTURE.md.

pub mod artifact;
pub mod composite;
pub mod config;
pub mod error;
pub mod fallback;
#[doc(hidden)]
pub mod fs;
mod host;
#[doc(hidden)]
pub mod isolation;
pub mod lifecycle;
pub mod loader;
pub mod registry;
pub mod serializer;
pub mod store;
pub mod text;
pub mod value;

pub use artifact::{Loaded, Saved};
pub use config::{Config, ConfigError};
pub use error::{Action, Error, MAX_QUOTED_NAME};
pub use host::{Host, HostOptions, Serialized};
pub use lifecycle::{Origin, PluginStatus, Snapshot, State};
pub use registry::{Answer, Attempt, DispatchError, Skipped, WrittenBy};
pub use serializer::{ArtifactMeta, BlobSink, MemorySink, Written};
pub use store::{Record, Store, StoreError, Verify};
pub use text::quote_capped;
pub use value::{ArrowTable, Buffer, ClassSource, JsonError, Kind, Tensor, TensorMap, Value};
