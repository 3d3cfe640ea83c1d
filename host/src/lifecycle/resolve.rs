//! What a loaded candidate becomes in one rescan, after discovery and
//! loading: toggles ([`apply_toggles`]), the checks that need its
//! declaration — name, version requirement, options, duplicates
//! ([`check_loaded`]) — and its `requires` ([`resolve_requirements`]):
//! active, pending (waiting for something that may still arrive) or broken,
//! with a [`ResolveError`] saying why.
//!
//! Invariant: a cycle or a broken dependency makes a plugin broken, never
//! pending.
//!
//! Decision: when two libraries declare the same name, the one discovered
//! first keeps it (config tables in file order, then directory files by file
//! name) and the later one is broken, naming both paths.
//! Decision: a plugin requiring one whose version does not satisfy the
//! requirement is broken (a loaded library cannot be replaced in-process).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use semver::VersionReq;

use super::status::{Origin, State};
use crate::composite::COMPOSITE_NAME;
use crate::config::{Isolation, PluginEntry};
use crate::fallback::FALLBACK_NAME;
use crate::loader::IsolatedPlugin;
use crate::serializer::{PluginInfo, Serializer};

/// Why a loaded plugin cannot be active (siblings of [`LoadError`](crate::loader::LoadError)).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The plugin's version is outside the config's `version` requirement.
    #[error("plugin version {version} does not satisfy the config's requirement {requirement}")]
    VersionOutsideRequirement {
        /// Declared version.
        version: String,
        /// Configured requirement.
        requirement: String,
    },
    /// Another library (or the built-in fallback) has the name.
    #[error("duplicate plugin name {name}: {first} and {second}")]
    Duplicate {
        /// The name.
        name: String,
        /// Who has it.
        first: String,
        /// Who wanted it too.
        second: String,
    },
    /// A `[plugins.X]` table loads a library declaring another name.
    #[error("[plugins.{table}] loads {path}, which declares the name {declared}")]
    NameMismatch {
        /// The table.
        table: String,
        /// The library.
        path: String,
        /// The name it declares.
        declared: String,
    },
    /// Plugins requiring each other in a loop.
    #[error("dependency cycle: {0}")]
    Cycle(String),
    /// A required plugin is broken.
    #[error("dependency {0} is broken")]
    DependencyBroken(String),
    /// A required plugin is active in a version outside the requirement.
    #[error("requires {dependency} {requirement}, but {dependency} {version} is active")]
    DependencyVersion {
        /// The required plugin.
        dependency: String,
        /// The requirement.
        requirement: String,
        /// Its active version.
        version: String,
    },
    /// `[plugins.X.options]` has a key the plugin does not accept.
    #[error("config option {0}")]
    ConfigOption(String),
}

/// One candidate during a rescan.
pub(super) struct Candidate {
    pub(super) name: String,
    pub(super) origin: Origin,
    pub(super) builtin: bool,
    pub(super) path: Option<PathBuf>,
    pub(super) entry: Option<PluginEntry>,
    pub(super) enabled: bool,
    /// An unlisted library left alone because autoload is off.
    pub(super) autoload_off: bool,
    pub(super) state: State,
    pub(super) awaiting: Option<String>,
    pub(super) error: Option<String>,
    pub(super) serializer: Option<Arc<dyn Serializer>>,
    pub(super) load_ms: Option<f64>,
    /// Where its code runs (`None` for the built-in fallback).
    pub(super) isolation: Option<Isolation>,
    /// Its runner, when it is loaded process-isolated.
    pub(super) isolated: Option<Arc<IsolatedPlugin>>,
}

impl Candidate {
    pub(super) fn info(&self) -> Option<&PluginInfo> {
        self.serializer.as_ref().map(|s| s.info())
    }
    pub(super) fn is_candidate_for_active(&self) -> bool {
        self.enabled && self.serializer.is_some() && self.error.is_none() && self.awaiting.is_none()
    }
    pub(super) fn break_with(&mut self, reason: impl ToString) {
        self.state = State::Broken;
        self.error = Some(reason.to_string());
    }
    pub(super) fn wait_for(&mut self, what: String) {
        self.state = State::Pending;
        self.awaiting = Some(what);
    }
}

pub(super) fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

pub(super) fn apply_toggles(
    candidates: &mut [Candidate],
    toggles: &[(String, bool)],
    warnings: &mut Vec<String>,
) {
    for (name, enabled) in toggles {
        let mut matched = false;
        for candidate in candidates.iter_mut().filter(|c| same_name(&c.name, name)) {
            matched = true;
            if !candidate.autoload_off {
                candidate.enabled = *enabled;
            }
        }
        if !matched {
            warnings.push(format!("STOWAGE_PLUGINS names unknown plugin {name}"));
        }
    }
    for candidate in candidates
        .iter_mut()
        .filter(|c| !c.enabled && !c.autoload_off)
    {
        candidate.state = State::Disabled;
    }
}

/// Checks that need the declaration: names, versions, options, duplicates.
pub(super) fn check_loaded(candidates: &mut [Candidate]) {
    let mut owners: HashMap<String, String> = HashMap::new();
    owners.insert(FALLBACK_NAME.to_owned(), "built-in fallback".to_owned());
    owners.insert(COMPOSITE_NAME.to_owned(), "built-in composite".to_owned());
    for candidate in candidates.iter_mut() {
        if candidate.builtin || candidate.state == State::Disabled {
            continue;
        }
        let Some(info) = candidate.info().cloned() else {
            continue;
        };
        if candidate.error.is_some() {
            continue;
        }
        let path = candidate
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if candidate.origin == Origin::Config && info.name != candidate.name {
            candidate.break_with(ResolveError::NameMismatch {
                table: candidate.name.clone(),
                path,
                declared: info.name.clone(),
            });
            continue;
        }
        if let Some(requirement) = candidate.entry.as_ref().and_then(|e| e.version.as_ref()) {
            if !requirement.matches(&info.version) {
                candidate.break_with(ResolveError::VersionOutsideRequirement {
                    version: info.version.to_string(),
                    requirement: requirement.to_string(),
                });
                continue;
            }
        }
        if let Some(entry) = &candidate.entry {
            if let Some((key, _)) = entry
                .options
                .iter()
                .find(|(k, _)| !info.option_keys.contains(k))
            {
                candidate.break_with(ResolveError::ConfigOption(crate::registry::unknown_option(
                    key,
                    &info.option_keys,
                )));
                continue;
            }
        }
        match owners.get(&info.name) {
            Some(first) => {
                let first = first.clone();
                candidate.break_with(ResolveError::Duplicate {
                    name: info.name.clone(),
                    first,
                    second: path,
                });
            }
            None => {
                owners.insert(info.name.clone(), path);
            }
        }
    }
}

/// How a candidate's requirements resolve.
#[derive(Clone)]
enum Resolution {
    Ready,
    Waiting(String),
    Broken(ResolveError),
}

pub(super) fn resolve_requirements(candidates: &mut [Candidate]) {
    let mut memo: Vec<Option<Resolution>> = vec![None; candidates.len()];
    let mut stack = Vec::new();
    for i in 0..candidates.len() {
        resolve(i, candidates, &mut memo, &mut stack);
    }
    for (candidate, resolution) in candidates.iter_mut().zip(memo) {
        match resolution {
            Some(Resolution::Waiting(what)) => candidate.wait_for(what),
            Some(Resolution::Broken(error)) => candidate.break_with(error),
            _ => {}
        }
    }
}

fn resolve(
    i: usize,
    candidates: &[Candidate],
    memo: &mut Vec<Option<Resolution>>,
    stack: &mut Vec<usize>,
) -> Resolution {
    if let Some(done) = &memo[i] {
        return done.clone();
    }
    if let Some(at) = stack.iter().position(|&j| j == i) {
        let mut names: Vec<&str> = stack[at..]
            .iter()
            .map(|&j| candidates[j].name.as_str())
            .collect();
        names.push(&candidates[i].name);
        let cycle = ResolveError::Cycle(names.join(" -> "));
        for &j in &stack[at..] {
            memo[j] = Some(Resolution::Broken(cycle.clone()));
        }
        return Resolution::Broken(cycle);
    }
    let candidate = &candidates[i];
    if !candidate.is_candidate_for_active() {
        // Not resolvable here: its own state stands.
        return Resolution::Ready;
    }
    let requires: Vec<(String, VersionReq)> = candidate
        .info()
        .map(|i| i.requires.clone())
        .unwrap_or_default();
    stack.push(i);
    let mut outcome = Resolution::Ready;
    for (dependency, requirement) in requires {
        let found = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| same_name(&c.name, &dependency))
            .min_by_key(|(_, c)| !c.is_candidate_for_active());
        let this = match found {
            None => Resolution::Waiting(dependency.clone()),
            Some((_, dep)) if !dep.enabled => {
                Resolution::Waiting(format!("{dependency} (disabled)"))
            }
            Some((_, dep)) if dep.state == State::Broken => {
                Resolution::Broken(ResolveError::DependencyBroken(dependency.clone()))
            }
            Some((_, dep)) if !dep.is_candidate_for_active() => {
                Resolution::Waiting(dependency.clone())
            }
            Some((j, dep)) => match resolve(j, candidates, memo, stack) {
                Resolution::Broken(ResolveError::Cycle(cycle)) if memo[i].is_some() => {
                    Resolution::Broken(ResolveError::Cycle(cycle))
                }
                Resolution::Broken(_) => {
                    Resolution::Broken(ResolveError::DependencyBroken(dependency.clone()))
                }
                Resolution::Waiting(_) => Resolution::Waiting(dependency.clone()),
                Resolution::Ready => match dep.info() {
                    Some(info) if !requirement.matches(&info.version) => {
                        Resolution::Broken(ResolveError::DependencyVersion {
                            dependency: dependency.clone(),
                            requirement: requirement.to_string(),
                            version: info.version.to_string(),
                        })
                    }
                    _ => Resolution::Ready,
                },
            },
        };
        outcome = match (outcome, this) {
            (Resolution::Broken(e), _) | (_, Resolution::Broken(e)) => Resolution::Broken(e),
            (Resolution::Waiting(w), _) | (_, Resolution::Waiting(w)) => Resolution::Waiting(w),
            _ => Resolution::Ready,
        };
    }
    stack.pop();
    // A cycle found deeper down has already marked this candidate.
    if let Some(done) = &memo[i] {
        return done.clone();
    }
    memo[i] = Some(outcome.clone());
    outcome
}
