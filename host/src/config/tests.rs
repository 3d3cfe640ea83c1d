//! Unit tests of the config rooms: reading and validating (every error and
//! warning with its exact location), the toggles, and in-place editing
//! (byte-exact results, atomic writes, symlinks, permissions).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use semver::VersionReq;

use super::edit::*;
use super::read::*;
use super::*;

const FILE: &str = "plugins.toml";

#[track_caller]
fn check_ok(toml: &str) -> Config {
    match Config::parse(toml, Path::new(FILE)) {
        Ok(config) => config,
        Err(error) => panic!("expected a config, got: {error}"),
    }
}

#[track_caller]
fn check_err(toml: &str, expected: &str) {
    match Config::parse(toml, Path::new(FILE)) {
        Ok(config) => panic!("expected {expected:?}, got {config:?}"),
        Err(error) => assert_eq!(error.to_string(), expected),
    }
}

#[track_caller]
fn check_warnings(toml: &str, expected: &[&str]) {
    assert_eq!(check_ok(toml).warnings, expected);
}

/// The one plugin entry of `toml`, which must parse without warnings.
#[track_caller]
fn check_entry(toml: &str) -> PluginEntry {
    let config = check_ok(toml);
    assert_eq!(config.warnings, Vec::<String>::new());
    assert_eq!(config.plugins.len(), 1, "{:?}", config.plugins);
    config.plugins[0].clone()
}

#[track_caller]
fn check_toggles(spec: &str, expected: &[(&str, bool)]) {
    let toggles = EnvToggles::parse(spec).map_err(|e| e.to_string());
    let expected = expected.iter().map(|&(n, e)| (n.to_owned(), e)).collect();
    assert_eq!(toggles, Ok(EnvToggles { toggles: expected }));
}

#[track_caller]
fn check_toggles_err(spec: &str, expected: &str) {
    match EnvToggles::parse(spec) {
        Ok(toggles) => panic!("expected {expected:?}, got {toggles:?}"),
        Err(error) => assert_eq!(error.to_string(), expected),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("stowage-config-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create test dir");
        TestDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).expect("write test file");
        path
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).expect("read test file")
    }

    /// File names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("list test dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `set_enabled` on a file holding `before` gives exactly `after`.
#[track_caller]
fn check_edit(before: &str, name: &str, enabled: bool, after: &str, outcome: EditOutcome) {
    let dir = TestDir::new();
    let path = dir.write(FILE, before);
    let got = set_enabled(&path, name, enabled).map_err(|e| e.to_string());
    assert_eq!(got, Ok(outcome));
    assert_eq!(dir.read(FILE), after);
    assert_eq!(dir.names(), [FILE], "no temp file left behind");
    // The result is a valid config saying what was asked.
    let config = Config::load(&path).map_err(|e| e.to_string());
    let entry = config.as_ref().ok().and_then(|c| c.entry(name));
    assert_eq!(entry.map(|e| e.enabled), Some(enabled), "{config:?}");
}

/// `set_enabled` on a file holding `before` fails with `expected` and leaves it alone.
#[track_caller]
fn check_edit_err(before: &str, name: &str, enabled: bool, expected: &str) {
    let dir = TestDir::new();
    let path = dir.write(FILE, before);
    match set_enabled(&path, name, enabled) {
        Ok(outcome) => panic!("expected {expected:?}, got {outcome:?}"),
        Err(error) => assert_eq!(
            error.to_string(),
            expected.replace("PATH", &path.display().to_string())
        ),
    }
    assert_eq!(dir.read(FILE), before);
    assert_eq!(dir.names(), [FILE]);
}

// --- defaults and paths ---

#[test]
fn empty_file_uses_defaults() {
    let config = Config::parse("", Path::new("/srv/app/plugins.toml")).expect("parses");
    assert!(config.exists);
    assert_eq!(config.path, Path::new("/srv/app/plugins.toml"));
    assert_eq!(config.plugin_dir, Path::new("/srv/app/plugin-libs"));
    assert_eq!(config.store_dir, Path::new("/srv/app/store"));
    assert!(config.autoload);
    assert!(config.plugins.is_empty());
    assert!(config.warnings.is_empty());
}

#[test]
fn dirs_resolve_relative_to_the_config_dir() {
    let toml = "[host]\ndir = \"libs\"\n[store]\ndir = \"data/store\"\n";
    let config = Config::parse(toml, Path::new("/srv/app/plugins.toml")).expect("parses");
    assert_eq!(config.plugin_dir, Path::new("/srv/app/libs"));
    assert_eq!(config.store_dir, Path::new("/srv/app/data/store"));
}

#[test]
fn relative_config_path_gives_relative_dirs() {
    let config = Config::parse(
        "[host]\ndir = \"../libs\"\n",
        Path::new("conf/plugins.toml"),
    )
    .expect("parses");
    assert_eq!(config.plugin_dir, Path::new("conf/../libs"));
    assert_eq!(config.store_dir, Path::new("conf/store"));
}

#[test]
fn bare_config_name_keeps_dirs_relative_to_cwd() {
    let config = check_ok("");
    assert_eq!(config.plugin_dir, Path::new("plugin-libs"));
    assert_eq!(config.store_dir, Path::new("store"));
}

#[cfg(unix)]
#[test]
fn absolute_dirs_are_kept() {
    let config = check_ok("[host]\ndir = \"/opt/libs\"\n[store]\ndir = \"/var/store\"\n");
    assert_eq!(config.plugin_dir, Path::new("/opt/libs"));
    assert_eq!(config.store_dir, Path::new("/var/store"));
}

#[test]
fn store_url_cache_grace_and_store_s3_are_read() {
    let toml = "[store]\nurl = \"s3://bucket/team/a\"\ncache = \"c\"\ngc_grace_seconds = 0\n\
                cache_max_mb = 512\n\
                [store.s3]\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\n\
                allow_http = true\nmax_retries = 2\nretry_timeout_seconds = 3\n";
    let config = Config::parse(toml, Path::new("/srv/app/plugins.toml")).expect("parses");
    assert_eq!(config.store_url.as_deref(), Some("s3://bucket/team/a"));
    assert_eq!(
        config.s3,
        crate::store::S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            allow_http: Some(true),
            cache: Some(PathBuf::from("/srv/app/c")),
            cache_max_mb: Some(512),
            gc_grace: Some(std::time::Duration::ZERO),
            retries: Some((2, std::time::Duration::from_secs(3))),
            ..Default::default()
        }
    );
    assert!(config.warnings.is_empty());
    let file = check_ok("[store]\nurl = \"file:///srv/store\"\n");
    assert_eq!(file.store_url.as_deref(), Some("file:///srv/store"));
}

#[test]
fn bad_store_urls_and_s3_keys_are_errors_at_the_value() {
    check_err(
        "[store]\nurl = \"s3:///x\"\n",
        "plugins.toml:2:7: store.url \"s3:///x\" is not a store URL: it names no bucket",
    );
    check_err(
        "[store]\nurl = \"http://x\"\n",
        "plugins.toml:2:7: store.url \"http://x\" is not a store URL: it does not start with s3:// or file://",
    );
    check_err(
        "[store]\nurl = \"s3://b/../x\"\n",
        "plugins.toml:2:7: store.url \"s3://b/../x\" is not a store URL: its prefix has a . or .. segment",
    );
    check_err(
        "[store.s3]\nallow_http = \"yes\"\n",
        "plugins.toml:2:14: store.s3.allow_http must be a boolean, found string",
    );
    check_err(
        "[store]\ncache_max_mb = \"10G\"\n",
        "plugins.toml:2:16: store.cache_max_mb must be an integer, found string",
    );
    check_err(
        "[store]\ncache_max_mb = -1\n",
        "plugins.toml:2:16: store.cache_max_mb must be a non-negative integer, found integer",
    );
    check_err(
        "[store]\ncache_max_mb = 1.5\n",
        "plugins.toml:2:16: store.cache_max_mb must be an integer, found float",
    );
    check_warnings(
        "[store.s3]\nbucket = \"b\"\n",
        &["plugins.toml:2:1: unknown key store.s3.bucket (ignored)"],
    );
}

#[test]
fn autoload_can_be_turned_off() {
    assert!(!check_ok("[host]\nautoload = false\n").autoload);
    assert!(check_ok("[host]\nautoload = true\n").autoload);
}

// --- plugin tables ---

#[test]
fn plugin_table_defaults() {
    assert_eq!(check_entry("[plugins.arrow]\n"), PluginEntry::new("arrow"));
}

#[test]
fn enabled_is_read() {
    assert!(!check_entry("[plugins.arrow]\nenabled = false\n").enabled);
    assert!(check_entry("[plugins.arrow]\nenabled = true\n").enabled);
}

#[test]
fn priority_is_read() {
    assert_eq!(
        check_entry("[plugins.arrow]\npriority = 40\n").priority,
        Some(40)
    );
}

#[test]
fn priority_bounds_are_not_clamped() {
    assert_eq!(check_entry("[plugins.a]\npriority = 0\n").priority, Some(0));
    assert_eq!(
        check_entry("[plugins.a]\npriority = 9998\n").priority,
        Some(9998)
    );
}

#[test]
fn version_requirement_is_read() {
    let entry = check_entry("[plugins.arrow]\nversion = \"^1.2\"\n");
    let req = entry.version.expect("a requirement");
    assert!(req.matches(&semver::Version::new(1, 4, 0)));
    assert!(!req.matches(&semver::Version::new(2, 0, 0)));
}

#[test]
fn library_is_read() {
    let entry = check_entry("[plugins.arrow]\nlibrary = \"arrow_v2\"\n");
    assert_eq!(entry.library.as_deref(), Some("arrow_v2"));
    assert_eq!(entry.library_stem(), "arrow_v2");
}

#[test]
fn library_stem_defaults_from_the_name() {
    assert_eq!(PluginEntry::new("arrow").library_stem(), "stowage_arrow");
    assert_eq!(
        PluginEntry::new("class-src").library_stem(),
        "stowage_class_src"
    );
}

#[test]
fn sha256_is_lowercased() {
    let upper = "AB".repeat(32);
    let entry = check_entry(&format!("[plugins.arrow]\nsha256 = \"{upper}\"\n"));
    assert_eq!(entry.sha256, Some("ab".repeat(32)));
}

#[test]
fn options_scalars_become_strings_in_file_order() {
    let entry = check_entry(
        "[plugins.arrow.options]\ncompression = \"zstd\"\nlevel = 3\nratio = 0.5\nverify = true\n",
    );
    let expected = [
        ("compression", "zstd"),
        ("level", "3"),
        ("ratio", "0.5"),
        ("verify", "true"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(entry.options, expected);
}

#[test]
fn every_key_at_once() {
    let sha = "0123456789abcdef".repeat(4);
    let toml = format!(
        "[plugins.arrow]\nenabled = false\npriority = 40\nversion = \"^1.0\"\n\
         library = \"stowage_arrow\"\nsha256 = \"{sha}\"\n[plugins.arrow.options]\ncompression = \"zstd\"\n"
    );
    let entry = check_entry(&toml);
    assert_eq!(
        entry,
        PluginEntry {
            name: "arrow".to_owned(),
            enabled: false,
            priority: Some(40),
            version: Some(VersionReq::parse("^1.0").expect("valid")),
            library: Some("stowage_arrow".to_owned()),
            sha256: Some(sha),
            options: vec![("compression".to_owned(), "zstd".to_owned())],
            isolation: None,
            timeout_ms: None,
            max_memory_mb: None,
        }
    );
}

#[test]
fn isolation_keys_are_read() {
    let config = check_ok(
        "[host]\nisolation = \"process\"\nrunner = \"bin/stowage-runner\"\n\
         [plugins.a]\nisolation = \"in-process\"\n\
         [plugins.b]\ntimeout_ms = 500\nmax_memory_mb = 64\n",
    );
    assert_eq!(config.warnings, Vec::<String>::new());
    assert_eq!(config.isolation, Isolation::Process);
    assert_eq!(config.runner, Some(PathBuf::from("bin/stowage-runner")));
    assert_eq!(config.plugins[0].isolation, Some(Isolation::InProcess));
    assert_eq!(
        (
            config.plugins[1].isolation,
            config.plugins[1].timeout_ms,
            config.plugins[1].max_memory_mb
        ),
        (None, Some(500), Some(64))
    );
}

#[test]
fn isolation_defaults_to_in_process() {
    let config = check_ok("[plugins.a]\n");
    assert_eq!(config.isolation, Isolation::InProcess);
    assert_eq!(config.runner, None);
    assert_eq!(
        (
            config.plugins[0].isolation,
            config.plugins[0].timeout_ms,
            config.plugins[0].max_memory_mb
        ),
        (None, None, None)
    );
}

#[test]
fn unknown_isolation_values_are_errors_at_the_value() {
    check_err(
        "[host]\nisolation = \"thread\"\n",
        "plugins.toml:2:13: host.isolation \"thread\" is not valid: expected \"in-process\" or \"process\"",
    );
    check_err(
        "[plugins.a]\nisolation = \"sandbox\"\n",
        "plugins.toml:2:13: plugins.a.isolation \"sandbox\" is not valid: expected \"in-process\" or \"process\"",
    );
    check_err(
        "[plugins.a]\nisolation = true\n",
        "plugins.toml:2:13: plugins.a.isolation must be a string, found boolean",
    );
}

#[test]
fn timeouts_and_memory_caps_must_be_positive() {
    check_err(
        "[plugins.a]\ntimeout_ms = 0\n",
        "plugins.toml:2:14: plugins.a.timeout_ms 0 is not valid: expected a positive number of milliseconds",
    );
    check_err(
        "[plugins.a]\nmax_memory_mb = -5\n",
        "plugins.toml:2:17: plugins.a.max_memory_mb -5 is not valid: expected a positive number of megabytes",
    );
    check_err(
        "[plugins.a]\ntimeout_ms = \"1s\"\n",
        "plugins.toml:2:14: plugins.a.timeout_ms must be an integer, found string",
    );
}

#[test]
fn plugins_keep_file_order() {
    let config = check_ok("[plugins.tensor]\n[plugins.arrow]\n[plugins.class-src]\n");
    let names: Vec<_> = config.plugins.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["tensor", "arrow", "class-src"]);
}

#[test]
fn entry_finds_by_name() {
    let config = check_ok("[plugins.tensor]\n[plugins.arrow]\npriority = 3\n");
    assert_eq!(config.entry("arrow").and_then(|e| e.priority), Some(3));
    assert!(config.entry("missing").is_none());
}

#[test]
fn dotted_keys_and_inline_tables_are_read() {
    let config = check_ok(
        "plugins.arrow.enabled = false\n[plugins.tensor]\noptions = { dtype = \"f32\" }\n",
    );
    assert!(!config.plugins[0].enabled);
    assert_eq!(
        config.plugins[1].options,
        [("dtype".to_owned(), "f32".to_owned())]
    );
    let config = check_ok("[plugins]\narrow = { priority = 7 }\ntensor.priority = 8\n");
    assert_eq!(config.entry("arrow").and_then(|e| e.priority), Some(7));
    assert_eq!(config.entry("tensor").and_then(|e| e.priority), Some(8));
}

#[test]
fn msgpack_entry_is_kept_with_enabled_and_priority() {
    let entry = check_entry("[plugins.msgpack]\nenabled = false\npriority = 5\n");
    assert_eq!(
        (entry.name.as_str(), entry.enabled, entry.priority),
        ("msgpack", false, Some(5))
    );
}

#[test]
fn msgpack_ignores_other_keys_with_a_warning() {
    let toml = "[plugins.msgpack]\nlibrary = \"x/y\"\nversion = 3\nsha256 = \"no\"\npriority = 1\n[plugins.msgpack.options]\na = []\n";
    let config = check_ok(toml);
    let entry = config.entry("msgpack").expect("kept");
    assert_eq!(entry.library, None);
    assert_eq!(entry.version, None);
    assert_eq!(entry.sha256, None);
    assert!(entry.options.is_empty());
    assert_eq!(entry.priority, Some(1));
    let ignored =
        "plugins.msgpack configures the built-in fallback: only enabled and priority apply;";
    assert_eq!(
        config.warnings,
        [
            format!("plugins.toml:2:1: {ignored} plugins.msgpack.library ignored"),
            format!("plugins.toml:3:1: {ignored} plugins.msgpack.version ignored"),
            format!("plugins.toml:4:1: {ignored} plugins.msgpack.sha256 ignored"),
            format!("plugins.toml:6:18: {ignored} plugins.msgpack.options ignored"),
        ]
    );
}

// --- errors ---

#[test]
fn syntax_error_has_line_and_column() {
    check_err(
        "[host]\ndir = \n",
        "plugins.toml:2:7: invalid string; expected `\"`, `'`",
    );
}

#[test]
fn unterminated_string_is_a_syntax_error() {
    check_err(
        "[host]\ndir = \"libs\n",
        "plugins.toml:2:12: invalid basic string",
    );
}

#[test]
fn duplicate_key_is_an_error() {
    check_err(
        "[plugins.arrow]\nenabled = true\nenabled = false\n",
        "plugins.toml:3:1: duplicate key `enabled` in table `plugins.arrow`",
    );
}

#[test]
fn duplicate_table_is_an_error() {
    check_err(
        "[plugins.arrow]\n[plugins.tensor]\n[plugins.arrow]\n",
        "plugins.toml:3:1: invalid table header; duplicate key `arrow` in table `plugins`",
    );
}

#[test]
fn enabled_must_be_a_boolean() {
    check_err(
        "[plugins.arrow]\nenabled = \"yes\"\n",
        "plugins.toml:2:11: plugins.arrow.enabled must be a boolean, found string",
    );
}

#[test]
fn priority_must_be_an_integer() {
    check_err(
        "[plugins.arrow]\npriority = 1.5\n",
        "plugins.toml:2:12: plugins.arrow.priority must be an integer, found float",
    );
}

#[test]
fn version_must_be_a_string() {
    check_err(
        "[plugins.arrow]\nversion = 1\n",
        "plugins.toml:2:11: plugins.arrow.version must be a string, found integer",
    );
}

#[test]
fn library_must_be_a_string() {
    check_err(
        "[plugins.arrow]\nlibrary = [\"a\"]\n",
        "plugins.toml:2:11: plugins.arrow.library must be a string, found array",
    );
}

#[test]
fn sha256_must_be_a_string() {
    check_err(
        "[plugins.arrow]\nsha256 = 1979-05-27\n",
        "plugins.toml:2:10: plugins.arrow.sha256 must be a string, found datetime",
    );
}

#[test]
fn options_must_be_a_table() {
    check_err(
        "[plugins.arrow]\noptions = \"zstd\"\n",
        "plugins.toml:2:11: plugins.arrow.options must be a table, found string",
    );
}

#[test]
fn option_values_must_be_scalars() {
    check_err(
        "[plugins.arrow.options]\nlevels = [1, 2]\n",
        "plugins.toml:2:10: plugins.arrow.options.levels must be a string, integer, float or boolean, found array",
    );
    check_err(
        "[plugins.arrow.options.nested]\na = 1\n",
        "plugins.toml:1:1: plugins.arrow.options.nested must be a string, integer, float or boolean, found table",
    );
}

#[test]
fn host_keys_have_types() {
    check_err(
        "[host]\ndir = 3\n",
        "plugins.toml:2:7: host.dir must be a string, found integer",
    );
    check_err(
        "[host]\nautoload = \"no\"\n",
        "plugins.toml:2:12: host.autoload must be a boolean, found string",
    );
    check_err(
        "[store]\ndir = false\n",
        "plugins.toml:2:7: store.dir must be a string, found boolean",
    );
}

#[test]
fn sections_must_be_tables() {
    check_err(
        "host = 1\n",
        "plugins.toml:1:8: host must be a table, found integer",
    );
    check_err(
        "store = \"s\"\n",
        "plugins.toml:1:9: store must be a table, found string",
    );
    check_err(
        "plugins = []\n",
        "plugins.toml:1:11: plugins must be a table, found array",
    );
    check_err(
        "[[plugins]]\nname = \"x\"\n",
        "plugins.toml:1:1: plugins must be a table, found array of tables",
    );
    check_err(
        "[plugins]\narrow = true\n",
        "plugins.toml:2:9: plugins.arrow must be a table, found boolean",
    );
}

#[test]
fn empty_dirs_are_errors() {
    check_err(
        "[host]\ndir = \"\"\n",
        "plugins.toml:2:7: host.dir must not be empty",
    );
    check_err(
        "[store]\ndir = ''\n",
        "plugins.toml:2:7: store.dir must not be empty",
    );
}

#[test]
fn bad_version_requirement_names_the_key() {
    check_err(
        "[plugins.arrow]\nversion = \"^one\"\n",
        "plugins.toml:2:11: plugins.arrow.version \"^one\" is not a valid semver requirement: \
         unexpected character 'o' while parsing major version number",
    );
}

#[test]
fn library_must_be_a_file_stem() {
    check_err(
        "[plugins.arrow]\nlibrary = \"lib/stowage_arrow\"\n",
        "plugins.toml:2:11: plugins.arrow.library \"lib/stowage_arrow\" must be a file stem, without '/' or '\\'",
    );
    check_err(
        "[plugins.arrow]\nlibrary = 'a\\b'\n",
        "plugins.toml:2:11: plugins.arrow.library \"a\\\\b\" must be a file stem, without '/' or '\\'",
    );
    check_err(
        "[plugins.arrow]\nlibrary = \"\"\n",
        "plugins.toml:2:11: plugins.arrow.library must not be empty",
    );
}

#[test]
fn sha256_must_be_64_hex_characters() {
    check_err(
        "[plugins.arrow]\nsha256 = \"abc\"\n",
        "plugins.toml:2:10: plugins.arrow.sha256 must be 64 hex characters, found 3 characters",
    );
    let bad = format!("{}g", "a".repeat(63));
    check_err(
        &format!("[plugins.arrow]\nsha256 = \"{bad}\"\n"),
        "plugins.toml:2:10: plugins.arrow.sha256 must be 64 hex characters, found non-hex character 'g'",
    );
    let long = "a".repeat(65);
    check_err(
        &format!("[plugins.arrow]\nsha256 = \"{long}\"\n"),
        "plugins.toml:2:10: plugins.arrow.sha256 must be 64 hex characters, found 65 characters",
    );
}

#[test]
fn plugin_names_must_be_plain() {
    check_err(
        "[plugins.\"my plugin\"]\n",
        "plugins.toml:1:10: plugin name \"my plugin\" must match [A-Za-z0-9_-]+",
    );
    check_err(
        "[plugins]\n\"a.b\" = {}\n",
        "plugins.toml:2:1: plugin name \"a.b\" must match [A-Za-z0-9_-]+",
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    check_err(
        "host = { dir = \"é\", autoload = 1 }\n",
        "plugins.toml:1:32: host.autoload must be a boolean, found integer",
    );
}

#[test]
fn byte_order_mark_is_not_a_column() {
    check_err(
        "\u{feff}host = 1\n",
        "plugins.toml:1:8: host must be a table, found integer",
    );
}

// --- warnings ---

#[test]
fn unknown_top_level_key_warns() {
    check_warnings(
        "colour = \"blue\"\n",
        &["plugins.toml:1:1: unknown key colour (ignored)"],
    );
}

#[test]
fn unknown_table_warns_once() {
    check_warnings(
        "[hots]\ndir = \"x\"\nmore = 1\n",
        &["plugins.toml:1:2: unknown key hots (ignored)"],
    );
}

#[test]
fn unknown_host_and_store_keys_warn() {
    check_warnings(
        "[host]\ndirectory = \"x\"\n[store]\n  compress = true\n",
        &[
            "plugins.toml:2:1: unknown key host.directory (ignored)",
            "plugins.toml:4:3: unknown key store.compress (ignored)",
        ],
    );
}

#[test]
fn unknown_plugin_key_warns() {
    let toml = "[host]\ndir = \"plugin-libs\"\n\n[store]\ndir = \"store\"\n[plugins.arrow]\nenabeld = false\n";
    let config = check_ok(toml);
    assert_eq!(
        config.warnings,
        ["plugins.toml:7:1: unknown key plugins.arrow.enabeld (ignored)"]
    );
    assert!(config.plugins[0].enabled);
}

#[test]
fn unknown_quoted_key_is_quoted() {
    check_warnings(
        "[plugins.arrow]\n\"odd key\" = 1\n",
        &["plugins.toml:2:1: unknown key plugins.arrow.\"odd key\" (ignored)"],
    );
}

#[test]
fn priority_above_max_is_clamped() {
    let config = check_ok("[plugins.arrow]\npriority = 12000\n");
    assert_eq!(config.plugins[0].priority, Some(9998));
    assert_eq!(
        config.warnings,
        ["plugins.toml:2:12: plugins.arrow.priority 12000 is outside 0..=9998; clamped to 9998"]
    );
}

#[test]
fn negative_priority_is_clamped_to_zero() {
    let config = check_ok("[plugins.arrow]\npriority = -3\n");
    assert_eq!(config.plugins[0].priority, Some(0));
    assert_eq!(
        config.warnings,
        ["plugins.toml:2:12: plugins.arrow.priority -3 is outside 0..=9998; clamped to 0"]
    );
}

#[test]
fn fallback_priority_is_clamped_for_plugins() {
    let config = check_ok("[plugins.arrow]\npriority = 9999\n");
    assert_eq!(config.plugins[0].priority, Some(MAX_PLUGIN_PRIORITY));
    assert_eq!(config.warnings.len(), 1);
}

#[test]
fn huge_priority_is_clamped() {
    let config = check_ok("[plugins.arrow]\npriority = 9223372036854775807\n");
    assert_eq!(config.plugins[0].priority, Some(9998));
}

// --- loading files ---

#[test]
fn load_of_a_missing_explicit_file_is_not_found() {
    let dir = TestDir::new();
    let path = dir.path("nope.toml");
    match Config::load(&path) {
        Err(error @ ConfigError::NotFound { .. }) => {
            assert_eq!(
                error.to_string(),
                format!("config file {} not found", path.display())
            )
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn load_default_of_a_missing_file_uses_defaults() {
    let dir = TestDir::new();
    let path = dir.path(DEFAULT_CONFIG_FILE);
    let config = Config::load_default(&path).expect("defaults");
    assert!(!config.exists);
    assert_eq!(config.plugin_dir, dir.path("plugin-libs"));
    assert_eq!(config.store_dir, dir.path("store"));
    assert!(config.autoload && config.plugins.is_empty() && config.warnings.is_empty());
}

#[test]
fn load_and_load_default_read_the_file() {
    let dir = TestDir::new();
    let path = dir.write(FILE, "[host]\ndir = \"libs\"\n[plugins.arrow]\n");
    for config in [Config::load(&path), Config::load_default(&path)] {
        let config = config.expect("loads");
        assert!(config.exists);
        assert_eq!(config.plugin_dir, dir.path("libs"));
        assert_eq!(config.plugins.len(), 1);
    }
}

#[test]
fn load_default_still_reports_a_broken_file() {
    let dir = TestDir::new();
    let path = dir.write(FILE, "[host\n");
    let error = Config::load_default(&path).expect_err("broken");
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}:1:6: ", path.display())),
        "{error}"
    );
}

#[test]
fn invalid_utf8_reports_its_position() {
    let dir = TestDir::new();
    let path = dir.path(FILE);
    fs::write(&path, b"[host]\ndir = \"ab\xff\"\n").expect("write");
    let error = Config::load(&path).expect_err("not utf-8");
    assert_eq!(
        error.to_string(),
        format!("{}:2:10: invalid utf-8", path.display())
    );
}

#[test]
fn unreadable_path_is_a_read_error() {
    let dir = TestDir::new();
    let error = Config::load(&dir.0).expect_err("a directory");
    assert!(matches!(error, ConfigError::Read { .. }), "{error}");
    assert!(error
        .to_string()
        .starts_with(&format!("cannot read config file {}: ", dir.0.display())));
}

// --- where the config comes from ---

#[test]
fn config_flag_beats_env() {
    let got = resolve_config_path(Some(Path::new("a.toml")), Some(OsStr::new("b.toml")));
    assert_eq!(got, (PathBuf::from("a.toml"), true));
}

#[test]
fn env_beats_default() {
    let got = resolve_config_path(None, Some(OsStr::new("b.toml")));
    assert_eq!(got, (PathBuf::from("b.toml"), true));
}

#[test]
fn default_is_implicit() {
    assert_eq!(
        resolve_config_path(None, None),
        (PathBuf::from("plugins.toml"), false)
    );
}

#[test]
fn empty_env_counts_as_unset() {
    assert_eq!(
        resolve_config_path(None, Some(OsStr::new(""))),
        (PathBuf::from("plugins.toml"), false)
    );
}

// --- STOWAGE_PLUGINS ---

#[test]
fn toggles_parse_signs_in_order() {
    check_toggles("-arrow,+tensor", &[("arrow", false), ("tensor", true)]);
}

#[test]
fn toggles_trim_whitespace_and_skip_empty_items() {
    check_toggles(
        " -arrow , ,+tensor,,\t+class-src ,",
        &[("arrow", false), ("tensor", true), ("class-src", true)],
    );
}

#[test]
fn empty_toggles_are_none() {
    check_toggles("", &[]);
    check_toggles(" , ", &[]);
}

#[test]
fn repeated_toggle_keeps_the_last() {
    check_toggles(
        "-arrow,+tensor,+arrow",
        &[("tensor", true), ("arrow", true)],
    );
}

#[test]
fn toggle_without_sign_is_an_error() {
    check_toggles_err(
        "-arrow, tensor",
        "STOWAGE_PLUGINS item \"tensor\" must start with + or -",
    );
}

#[test]
fn toggle_without_name_is_an_error() {
    check_toggles_err("+arrow,-", "STOWAGE_PLUGINS item \"-\" has no plugin name");
}

#[test]
fn toggle_with_bad_name_is_an_error() {
    check_toggles_err(
        "+my plugin",
        "STOWAGE_PLUGINS item \"+my plugin\": plugin name must match [A-Za-z0-9_-]+",
    );
    check_toggles_err(
        "+ arrow",
        "STOWAGE_PLUGINS item \"+ arrow\": plugin name must match [A-Za-z0-9_-]+",
    );
}

// --- set_enabled ---

const ODD: &str = "# stowage config\r\n\n[host]   # the host\n  dir   =   \"libs\"   # drop-in\n\n";

#[test]
fn flips_an_existing_value_only() {
    let before = "# top\n[host]\ndir='x'  # d\n\n[plugins.arrow]   # the arrow one\n  priority=4\n  enabled   =   true   # keep me\n\tversion = \"^1\"\n[plugins.tensor]\nenabled = true\n";
    let after = before.replacen("enabled   =   true", "enabled   =   false", 1);
    check_edit(before, "arrow", false, &after, EditOutcome::Changed);
}

#[test]
fn flips_back_to_true() {
    check_edit(
        "[plugins.arrow]\nenabled = false\n",
        "arrow",
        true,
        "[plugins.arrow]\nenabled = true\n",
        EditOutcome::Changed,
    );
}

#[test]
fn already_set_leaves_the_file_alone() {
    let dir = TestDir::new();
    let before = "[plugins.arrow]\nenabled = false # off\n";
    let path = dir.write(FILE, before);
    let modified = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(
        set_enabled(&path, "arrow", false).map_err(|e| e.to_string()),
        Ok(EditOutcome::AlreadySet)
    );
    assert_eq!(dir.read(FILE), before);
    assert_eq!(
        fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified
    );
    assert_eq!(dir.names(), [FILE]);
}

#[test]
fn inserts_enabled_as_the_first_key() {
    let before = "[plugins.arrow]  # arrow\n# its priority\npriority = 4\n\n[plugins.tensor]\n";
    let after = "[plugins.arrow]  # arrow\nenabled = false\n# its priority\npriority = 4\n\n[plugins.tensor]\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
}

#[test]
fn inserts_into_a_header_at_end_of_file() {
    check_edit(
        "[plugins.arrow]",
        "arrow",
        false,
        "[plugins.arrow]\nenabled = false\n",
        EditOutcome::Changed,
    );
}

#[test]
fn inserts_into_a_table_defined_after_its_subtable() {
    let before = "[plugins.arrow.options]\na = 1\n[plugins.arrow]\npriority = 2\n";
    let after = "[plugins.arrow.options]\na = 1\n[plugins.arrow]\nenabled = false\npriority = 2\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
}

#[test]
fn appends_a_missing_table() {
    let before = "[host]\ndir = \"libs\"\n\n[plugins.tensor]\nenabled = true\n";
    let after = format!("{before}\n[plugins.arrow]\nenabled = false\n");
    check_edit(before, "arrow", false, &after, EditOutcome::AddedTable);
}

#[test]
fn appends_after_a_last_line_without_newline() {
    check_edit(
        "[host]\ndir = \"libs\"",
        "arrow",
        true,
        "[host]\ndir = \"libs\"\n\n[plugins.arrow]\nenabled = true\n",
        EditOutcome::AddedTable,
    );
}

#[test]
fn appends_to_an_empty_file() {
    check_edit(
        "",
        "arrow",
        false,
        "[plugins.arrow]\nenabled = false\n",
        EditOutcome::AddedTable,
    );
}

#[test]
fn creates_a_missing_file() {
    let dir = TestDir::new();
    let path = dir.path(FILE);
    assert_eq!(
        set_enabled(&path, "arrow", false).map_err(|e| e.to_string()),
        Ok(EditOutcome::AddedTable)
    );
    assert_eq!(dir.read(FILE), "[plugins.arrow]\nenabled = false\n");
    assert_eq!(dir.names(), [FILE]);
}

#[test]
fn odd_formatting_and_comments_are_kept_byte_for_byte() {
    let before = format!("{ODD}[plugins . arrow]\r\n\"enabled\"=true#x\r\n");
    let after = format!("{ODD}[plugins . arrow]\r\n\"enabled\"=false#x\r\n");
    check_edit(&before, "arrow", false, &after, EditOutcome::Changed);
}

#[test]
fn crlf_files_get_crlf_lines() {
    let before = "[host]\r\ndir = \"libs\"\r\n[plugins.arrow]\r\npriority = 1\r\n";
    let after =
        "[host]\r\ndir = \"libs\"\r\n[plugins.arrow]\r\nenabled = false\r\npriority = 1\r\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
    let appended = format!("{before}\r\n[plugins.tensor]\r\nenabled = false\r\n");
    check_edit(before, "tensor", false, &appended, EditOutcome::AddedTable);
}

#[test]
fn edits_dotted_keys_in_their_own_form() {
    let before =
        "[plugins]\narrow.priority = 1 # p\n  arrow.library = \"a\"\ntensor.priority = 2\n[host]\n";
    let after = "[plugins]\narrow.priority = 1 # p\n  arrow.library = \"a\"\n  arrow.enabled = false\ntensor.priority = 2\n[host]\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
    let before = "plugins.arrow.priority = 1\n\n[host]\n";
    let after = "plugins.arrow.priority = 1\nplugins.arrow.enabled = false\n\n[host]\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
    let before = "[plugins]\narrow.enabled = true\n";
    check_edit(
        before,
        "arrow",
        false,
        "[plugins]\narrow.enabled = false\n",
        EditOutcome::Changed,
    );
}

#[test]
fn dotted_table_with_a_subtable_elsewhere() {
    let before = "[plugins]\narrow.priority = 1\n[plugins.arrow.options]\na = 1\n";
    let after =
        "[plugins]\narrow.priority = 1\narrow.enabled = false\n[plugins.arrow.options]\na = 1\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
}

#[test]
fn edits_inline_tables_in_their_own_form() {
    check_edit(
        "[plugins]\narrow = { priority = 1 } # a\n",
        "arrow",
        false,
        "[plugins]\narrow = { enabled = false, priority = 1 } # a\n",
        EditOutcome::Changed,
    );
    check_edit(
        "[plugins]\narrow = {}\n",
        "arrow",
        false,
        "[plugins]\narrow = { enabled = false }\n",
        EditOutcome::Changed,
    );
    check_edit(
        "plugins = { arrow = { enabled = true } }\n",
        "arrow",
        false,
        "plugins = { arrow = { enabled = false } }\n",
        EditOutcome::Changed,
    );
}

#[test]
fn implicit_table_gets_a_header() {
    let before = "[plugins.arrow.options]\na = 1\n";
    let after = "[plugins.arrow.options]\na = 1\n\n[plugins.arrow]\nenabled = false\n";
    check_edit(before, "arrow", false, after, EditOutcome::Changed);
}

#[test]
fn non_boolean_enabled_is_replaced() {
    check_edit(
        "[plugins.arrow]\nenabled = \"yes\"\n",
        "arrow",
        false,
        "[plugins.arrow]\nenabled = false\n",
        EditOutcome::Changed,
    );
}

#[test]
fn msgpack_can_be_toggled() {
    check_edit(
        "",
        "msgpack",
        false,
        "[plugins.msgpack]\nenabled = false\n",
        EditOutcome::AddedTable,
    );
}

#[test]
fn unparsable_file_is_left_untouched() {
    check_edit_err(
        "[plugins.arrow]\nenabled = tru\n",
        "arrow",
        false,
        "PATH:2:11: invalid string; expected `\"`, `'`",
    );
}

#[test]
fn wrong_shapes_are_errors() {
    check_edit_err(
        "plugins = 3\n",
        "arrow",
        false,
        "PATH:1:11: plugins must be a table, found integer",
    );
    check_edit_err(
        "[plugins]\narrow = 3\n",
        "arrow",
        false,
        "PATH:2:9: plugins.arrow must be a table, found integer",
    );
    check_edit_err(
        "[plugins.arrow.enabled]\nx = 1\n",
        "arrow",
        false,
        "PATH:1:1: plugins.arrow.enabled must be a boolean, found table",
    );
}

#[test]
fn inline_plugins_without_the_name_is_unsupported() {
    check_edit_err(
        "plugins = { tensor = {} }\n",
        "arrow",
        false,
        "PATH:1:11: cannot set plugins.arrow.enabled automatically: plugins is an inline table; add the plugin to it by hand",
    );
}

#[test]
fn dotted_keys_inside_inline_tables_are_unsupported() {
    check_edit_err(
        "plugins = { arrow.priority = 1 }\n",
        "arrow",
        false,
        "PATH:1:13: cannot set plugins.arrow.enabled automatically: dotted keys inside an inline table; edit it by hand",
    );
}

#[test]
fn invalid_name_is_rejected() {
    let dir = TestDir::new();
    let error = set_enabled(&dir.path(FILE), "a]b", false).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "invalid plugin name \"a]b\": must match [A-Za-z0-9_-]+"
    );
    assert!(dir.names().is_empty());
}

#[cfg(unix)]
#[test]
fn edit_keeps_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let path = dir.write(FILE, "[plugins.arrow]\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    set_enabled(&path, "arrow", false).expect("edits");
    let mode = fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn read_only_file_is_refused() {
    let dir = TestDir::new();
    let path = dir.write(FILE, "[plugins.arrow]\n");
    let mut permissions = fs::metadata(&path).expect("stat").permissions();
    permissions.set_readonly(true);
    fs::set_permissions(&path, permissions).expect("chmod");
    let error = set_enabled(&path, "arrow", false).expect_err("read-only");
    assert_eq!(
        error.to_string(),
        format!(
            "cannot write config file {}: the file is read-only",
            path.display()
        )
    );
    assert_eq!(dir.read(FILE), "[plugins.arrow]\n");
    assert_eq!(dir.names(), [FILE]);
}

#[cfg(unix)]
#[test]
fn edits_through_a_symlink() {
    let dir = TestDir::new();
    let target = dir.write("real.toml", "[plugins.arrow]\n");
    let link = dir.path(FILE);
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    set_enabled(&link, "arrow", false).expect("edits");
    assert_eq!(dir.read("real.toml"), "[plugins.arrow]\nenabled = false\n");
    assert!(fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
}

#[test]
fn missing_directory_is_a_write_error() {
    let dir = TestDir::new();
    let path = dir.path("no/such/dir/plugins.toml");
    let error = set_enabled(&path, "arrow", false).expect_err("no dir");
    assert!(matches!(error, ConfigError::Write { .. }), "{error}");
}
