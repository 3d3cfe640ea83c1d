//! [`export_plugin!`](crate::export_plugin) and the `extern "C"` entry points
//! it instantiates for a plugin type.
//!
//! Invariants kept here, for every entry point:
//! - plugin code runs inside `catch_unwind`; a panic becomes an
//!   [`AbiErrorKind::PANIC`] error naming the entry point, never an unwind
//!   across the boundary (which would abort the host);
//! - a panic hook installed inside the plugin's own copy of std captures the
//!   message and location instead of printing a backtrace to the host's
//!   stderr;
//! - a value of a kind this SDK does not know is declined before the plugin
//!   sees it.
//!
//! Decision: the instance is built by `init` (the loader's first call), not
//! by abi_stable's module constructor, so a panicking constructor surfaces as
//! a `broken` reason ("panic during init: …") with the plugin's own message.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RResult, RSlice, RString};
use abi_stable::StableAbi;

use crate::abi::{
    AbiBlob, AbiDeclaration, AbiError, AbiErrorKind, AbiExtV1_1, AbiMetadata, AbiMetadataRef,
    AbiOwnedValue, AbiSink, AbiStrPair, AbiStringPair, AbiValue, PluginMod, PluginModRef,
};
use crate::plugin::{
    Blobs, Declaration, Metadata, MetadataRef, Options, Plugin, PluginError, Sink,
};
use crate::value::{AbiTree, Value, ValueRef};

/// Exports a [`Plugin`](crate::Plugin) type from a `cdylib`. Call it once, at
/// the crate root.
///
/// `export_plugin!(MyPlugin)` builds the instance with `Default`;
/// `export_plugin!(MyPlugin, MyPlugin::new)` with any `fn() -> MyPlugin`.
/// The declaration's version defaults to the plugin crate's version.
///
/// Refuses to compile under `panic = "abort"`, which would turn every caught
/// panic into a host crash.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::export_plugin!($plugin, <$plugin as ::core::default::Default>::default);
    };
    ($plugin:ty, $constructor:expr) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "stowage plugins must be built with panic = \"unwind\": under panic = \"abort\" \
             a panic in plugin code kills the host instead of being caught"
        );

        /// The exported plugin (a local marker, so any plugin type works,
        /// even one defined in another crate).
        #[doc(hidden)]
        pub struct __StowagePluginExport;

        impl $crate::__private::Instance for __StowagePluginExport {
            type Plugin = $plugin;
            const CRATE_VERSION: &'static str = env!("CARGO_PKG_VERSION");
            fn cell() -> &'static ::std::sync::OnceLock<$plugin> {
                static INSTANCE: ::std::sync::OnceLock<$plugin> = ::std::sync::OnceLock::new();
                &INSTANCE
            }
            fn construct() -> $plugin {
                ($constructor)()
            }
        }

        #[doc(hidden)]
        #[export_name = "stowage_plugin_probe"]
        pub static __STOWAGE_PLUGIN_PROBE: $crate::__private::AbiProbe = $crate::__private::PROBE;

        #[doc(hidden)]
        static __STOWAGE_PLUGIN_EXT_V1_1_TABLE: $crate::__private::AbiExtV1_1 =
            $crate::__private::ext_v1_1::<__StowagePluginExport>();

        #[doc(hidden)]
        #[export_name = "stowage_plugin_ext_v1_1"]
        pub static __STOWAGE_PLUGIN_EXT_V1_1: $crate::__private::AbiExtension =
            $crate::__private::extension(
                $crate::__private::EXT_V1_1_LAYOUT,
                &__STOWAGE_PLUGIN_EXT_V1_1_TABLE as *const $crate::__private::AbiExtV1_1
                    as *const ::core::ffi::c_void,
            );

        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __STOWAGE_PLUGIN_ROOT_MODULE: $crate::__private::LibHeader =
            $crate::__private::lib_header::<__StowagePluginExport>();
    };
}

/// Implemented by [`export_plugin!`](crate::export_plugin) for a marker type
/// in the plugin crate: which plugin is exported, where its single instance
/// lives and how it is built.
pub trait Instance: 'static {
    /// The exported plugin type.
    type Plugin: Plugin;
    /// The plugin crate's version, the declaration's default.
    const CRATE_VERSION: &'static str;
    /// The cell holding the instance once `init` has run.
    fn cell() -> &'static OnceLock<Self::Plugin>;
    /// Builds the instance (may panic; `init` catches it).
    fn construct() -> Self::Plugin;
}

/// The layout of the 1.1 extension table, checked by the host.
pub const EXT_V1_1_LAYOUT: &abi_stable::type_layout::TypeLayout = <AbiExtV1_1 as StableAbi>::LAYOUT;

/// An exported extension header.
pub const fn extension(
    layout: &'static abi_stable::type_layout::TypeLayout,
    table: *const c_void,
) -> crate::abi::AbiExtension {
    crate::abi::AbiExtension {
        size: std::mem::size_of::<crate::abi::AbiExtension>(),
        layout,
        table,
    }
}

/// The 1.1 extension table for `P`.
pub const fn ext_v1_1<P: Instance>() -> AbiExtV1_1 {
    AbiExtV1_1 {
        describe: describe::<P>,
    }
}

/// The abi_stable library header for `P`.
pub const fn lib_header<P: Instance>() -> LibHeader {
    // SAFETY: `root_module_loader::<P>` returns a `PluginModRef`, the module
    // type named here, and the layout is checked by the loader.
    unsafe {
        LibHeader::from_constructor::<PluginModRef>(root_module_loader::<P>, CheckTypeLayout::Yes)
    }
}

extern "C" fn root_module_loader<P: Instance>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(root_module::<P>)
}

fn root_module<P: Instance>() -> PluginModRef {
    PluginMod {
        init: init::<P>,
        can_serialize: can_serialize::<P>,
        serialize: serialize::<P>,
        can_deserialize: can_deserialize::<P>,
        deserialize: deserialize::<P>,
        sniff: sniff::<P>,
        ingest: ingest::<P>,
        export: export::<P>,
    }
    .leak_into_prefix()
}

fn instance<P: Instance>() -> Result<&'static P::Plugin, PluginError> {
    P::cell()
        .get()
        .ok_or_else(|| PluginError::internal("entry point called before init"))
}

extern "C" fn init<P: Instance>() -> RResult<AbiDeclaration, AbiError> {
    // Once, here rather than in every `guard`: the loader calls `init` before
    // any other entry point (they fail until it has), and a per-call check
    // of the hook's `Once` was a cache miss per call into each library.
    install_capturing_hook();
    guard("init", || {
        let plugin = P::cell().get_or_init(P::construct);
        Ok(declaration_to_abi(plugin.declaration(), P::CRATE_VERSION))
    })
}

extern "C" fn can_serialize<P: Instance>(value: &AbiValue<'_>) -> RResult<bool, AbiError> {
    guard("can_serialize", || match ValueRef::from_abi(value) {
        ValueRef::Unknown(_) => Ok(false),
        value => Ok(instance::<P>()?.can_serialize(&value)),
    })
}

extern "C" fn serialize<'a, P: Instance>(
    value: &AbiValue<'a>,
    options: RSlice<'a, AbiStrPair<'a>>,
    sink: &mut AbiSink,
) -> RResult<AbiMetadata, AbiError> {
    guard("serialize", || match ValueRef::from_abi(value) {
        ValueRef::Unknown(tag) => Err(PluginError::unsupported(format!(
            "value kind tag {tag} is newer than this plugin"
        ))),
        value => {
            let meta = instance::<P>()?.serialize(&value, &Options(options), &mut Sink(sink))?;
            Ok(metadata_to_abi(meta))
        }
    })
}

extern "C" fn can_deserialize<P: Instance>(meta: &AbiMetadataRef<'_>) -> RResult<bool, AbiError> {
    guard("can_deserialize", || {
        Ok(instance::<P>()?.can_deserialize(&MetadataRef(meta)))
    })
}

extern "C" fn deserialize<'a, P: Instance>(
    meta: &AbiMetadataRef<'a>,
    blobs: RSlice<'a, AbiBlob<'a>>,
) -> RResult<AbiOwnedValue, AbiError> {
    guard("deserialize", || {
        let value = instance::<P>()?.deserialize(&MetadataRef(meta), &Blobs(blobs))?;
        Ok(into_owned_abi(value))
    })
}

extern "C" fn sniff<P: Instance>(prefix: RSlice<'_, u8>) -> RResult<bool, AbiError> {
    guard("sniff", || Ok(instance::<P>()?.sniff(prefix.as_slice())))
}

extern "C" fn ingest<'a, P: Instance>(
    file: RSlice<'a, u8>,
    options: RSlice<'a, AbiStrPair<'a>>,
    sink: &mut AbiSink,
) -> RResult<AbiMetadata, AbiError> {
    guard("ingest", || {
        let meta = instance::<P>()?.ingest(file.as_slice(), &Options(options), &mut Sink(sink))?;
        Ok(metadata_to_abi(meta))
    })
}

extern "C" fn export<'a, P: Instance>(
    meta: &AbiMetadataRef<'a>,
    blobs: RSlice<'a, AbiBlob<'a>>,
    out: &mut AbiSink,
) -> RResult<(), AbiError> {
    guard("export", || {
        instance::<P>()?.export(&MetadataRef(meta), &Blobs(blobs), &mut Sink(out))
    })
}

extern "C" fn describe<'a, P: Instance>(
    meta: &AbiMetadataRef<'a>,
    blobs: RSlice<'a, AbiBlob<'a>>,
) -> RResult<RString, AbiError> {
    guard("describe", || {
        Ok(instance::<P>()?
            .describe(&MetadataRef(meta), &Blobs(blobs))?
            .into())
    })
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the plugin's (own copy of std's) panic hook with one that records
/// the message for `guard` instead of printing it.
fn install_capturing_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let mut message = payload_message(info.payload());
            if let Some(location) = info.location() {
                message.push_str(&format!(" at {}:{}", location.file(), location.line()));
            }
            // `try_with`: during thread teardown the slot may be gone; the
            // message then falls back to the payload text.
            let _ = LAST_PANIC.try_with(|slot| *slot.borrow_mut() = Some(message));
        }));
    });
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs plugin code for one entry point, turning errors and panics into an
/// [`AbiError`].
fn guard<T>(
    entry: &'static str,
    body: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<T, AbiError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(error.into_abi()),
        Err(payload) => {
            let detail = LAST_PANIC
                .try_with(|slot| slot.borrow_mut().take())
                .ok()
                .flatten()
                .unwrap_or_else(|| payload_message(&*payload));
            // A payload whose own Drop panics must not unwind out of here.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            RResult::RErr(AbiError {
                kind: AbiErrorKind::PANIC,
                message: format!("panicked in {entry}: {detail}").into(),
            })
        }
    }
}

fn strings(items: impl IntoIterator<Item = String>) -> abi_stable::std_types::RVec<RString> {
    items.into_iter().map(RString::from).collect()
}

fn pairs(items: Vec<(String, String)>) -> abi_stable::std_types::RVec<AbiStringPair> {
    items
        .into_iter()
        .map(|(key, value)| AbiStringPair {
            key: key.into(),
            value: value.into(),
        })
        .collect()
}

fn declaration_to_abi(decl: Declaration, crate_version: &str) -> AbiDeclaration {
    AbiDeclaration {
        name: decl.name.into(),
        version: decl
            .version
            .unwrap_or_else(|| crate_version.to_owned())
            .into(),
        default_priority: decl.priority,
        kinds: strings(decl.kinds.iter().map(|k| k.name().to_owned())),
        reads: strings(decl.reads),
        writes: strings(decl.writes),
        requires: pairs(decl.requires),
        option_keys: strings(decl.option_keys),
        extra: Default::default(),
    }
}

fn metadata_to_abi(meta: Metadata) -> AbiMetadata {
    AbiMetadata {
        obj_type: meta.obj_type.into(),
        encoding: meta.encoding.into(),
        encoding_version: meta.encoding_version,
        info: pairs(meta.info),
    }
}

/// A deserialized value plus the ABI nodes that point into it.
struct OwnedValue {
    // Field order matters: the nodes in `tree` point into `value`.
    tree: AbiTree<'static>,
    value: Value<'static>,
}

fn into_owned_abi(value: Value<'_>) -> AbiOwnedValue {
    // SAFETY: only the lifetime changes. The value may borrow from the blobs
    // and metadata the host lent to `deserialize`; the interface obliges the
    // host to keep those alive until it calls `release` on this owner.
    let value: Value<'static> = unsafe { std::mem::transmute::<Value<'_>, Value<'static>>(value) };
    let owned = Box::into_raw(Box::new(OwnedValue {
        tree: AbiTree::new(),
        value,
    }));
    // SAFETY: `owned` is a fresh, uniquely owned allocation that is only freed
    // by `release_owned`; `value` and `tree` are distinct fields, and every
    // node built points at heap data owned by `value` or the tree's arena,
    // which stays put until the box is freed.
    let root = unsafe {
        let root = (*owned).value.to_abi(&mut (*owned).tree);
        (*owned).tree.set_root(root);
        *(*owned).tree.root()
    };
    AbiOwnedValue {
        value: root,
        owner: owned as *mut c_void,
        release: Some(release_owned),
    }
}

unsafe extern "C" fn release_owned(owner: *mut c_void) {
    // SAFETY: `owner` came from `into_owned_abi` and the host calls release
    // exactly once.
    let owned = unsafe { Box::from_raw(owner as *mut OwnedValue) };
    // Dropping may run Arrow release callbacks; none may unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(owned)));
}
