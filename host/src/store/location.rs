//! Where a store lives when `[store] url`, `--store URL`,
//! `HostOptions::store_url` or Python's `store=` names a URL: `file://DIR`
//! (the directory store) or `s3://bucket/prefix` (the S3 store, SPEC §13,
//! built with the cargo feature `s3`), and the options of an S3 store.
//! Compiled in every build, so configuration and the host read the same
//! way with or without the feature.
//!
//! Decision: `--store` and `store=` take a URL when the value starts with
//! `s3://` or `file://`, and a directory otherwise.
//! Decision: the local cache is bounded by default ([`DEFAULT_CACHE_MAX_MB`],
//! 10 GiB: a few large models, small against a disk that holds a
//! workstation's datasets); `cache_max_mb = 0` keeps only what is in use.

use std::path::PathBuf;
use std::time::Duration;

/// gc never deletes an object younger than this (SPEC §13).
pub const DEFAULT_S3_GC_GRACE: Duration = Duration::from_secs(3600);
/// Retries of one request after its first attempt (product default).
pub const DEFAULT_RETRIES: usize = 5;
/// The most time one request may take, retries included (product default).
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// The local cache's bound in MiB, `[store] cache_max_mb` (10 GiB).
pub const DEFAULT_CACHE_MAX_MB: u64 = 10 * 1024;
/// How to reach and use an S3 store, beside what the standard AWS
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ENDPOINT_URL`, `AWS_REGION`, …) says; `[store.s3]` and
/// `[store] cache` and `[store] cache_max_mb` fill it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Options {
    /// `[store.s3] endpoint`: the service URL (else `AWS_ENDPOINT_URL`,
    /// else AWS).
    pub endpoint: Option<String>,
    /// `[store.s3] region` (else `AWS_REGION`/`AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    pub region: Option<String>,
    /// `[store.s3] allow_http`: permit a plain-HTTP endpoint.
    pub allow_http: Option<bool>,
    /// `[store] cache`: the local cache directory (else
    /// `$XDG_CACHE_HOME/stowage`, else `~/.cache/stowage`).
    pub cache: Option<PathBuf>,
    /// `[store] cache_max_mb`: the local cache's bound in MiB (default
    /// [`DEFAULT_CACHE_MAX_MB`]); the least recently used cache files
    /// beyond it are evicted.
    pub cache_max_mb: Option<u64>,
    /// gc's grace period (default [`DEFAULT_S3_GC_GRACE`]).
    pub gc_grace: Option<Duration>,
    /// Retries per request and the time bound of one request (default
    /// [`DEFAULT_RETRIES`], [`DEFAULT_RETRY_TIMEOUT`]).
    pub retries: Option<(usize, Duration)>,
    /// Open read-only: every write fails with [`StoreError::ReadOnly`](crate::store::StoreError::ReadOnly).
    pub read_only: bool,
    /// An explicit access key id and secret (else the AWS environment).
    pub credentials: Option<(String, String)>,
}

/// A parsed `s3://bucket/prefix` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`; the message says what is wrong.
    pub fn parse(url: &str) -> Result<S3Url, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| "it does not start with s3:// or file://".to_owned())?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("it names no bucket".to_owned());
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err("its prefix has a . or .. segment".to_owned());
        }
        if prefix.contains("//") || url.chars().any(char::is_control) {
            return Err("it has an empty segment or a control character".to_owned());
        }
        Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// `s3://bucket/prefix` (no trailing `/`).
    pub fn display(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/stowage`, else
/// `$HOME/.cache/stowage`, else `stowage-cache` under the temp dir.
pub fn default_cache_dir() -> PathBuf {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("stowage");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".cache").join("stowage");
    }
    std::env::temp_dir().join("stowage-cache")
}

/// Whether `value` names a store by URL rather than a directory.
pub fn is_store_url(value: &str) -> bool {
    value.starts_with("s3://") || value.starts_with("file://")
}
