//! [`Error`], what every [`Host`](crate::Host) call can fail with.
//!
//! Each boundary keeps its own enum (`ConfigError`, `DispatchError`,
//! `StoreError`, `JsonError`); this one wraps them and adds the artifact a
//! failure is about.

use crate::config::ConfigError;
use crate::registry::{DispatchError, Failure};
use crate::store::StoreError;
use crate::text::quote_capped;
use crate::value::JsonError;

/// Everything a [`Host`](crate::Host) call can fail with.
///
/// Decision: errors about an artifact's content (dispatch, JSON, empty
/// input) are wrapped in [`Error::Artifact`] by [`Error::storing`] and
/// [`Error::loading`], so the message starts with `cannot store NAME:` or
/// `cannot load NAME:`; store and config errors pass through as they are
/// (they name their own subject, e.g. "no artifact named N", which
/// `get` must print unchanged). `save_many` names the failing artifact for
/// every error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (file or toggles) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No serializer could handle the request.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The artifact store failed (including "no artifact named N").
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A JSON document has no value form (an integer beyond i64, …).
    #[error(transparent)]
    Json(#[from] JsonError),
    /// Writing an exported file to its output failed (the output's fault,
    /// not the reader's: no other reader is tried).
    #[error("cannot write the exported file: {0}")]
    Output(#[source] std::io::Error),
    /// The input of a `put` is empty (`-` is stdin).
    #[error("{} is empty", input_label(.input))]
    EmptyInput {
        /// The file, or `-`.
        input: String,
    },
    /// Storing or loading one artifact failed; a failed store (or any
    /// artifact of a failed batch) committed nothing.
    #[error("cannot {action} {}: {source}", quote_capped(.name, MAX_QUOTED_NAME))]
    Artifact {
        /// Whether it was being stored or loaded.
        action: Action,
        /// The artifact.
        name: String,
        /// Why.
        source: Box<Error>,
    },
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::NoWinner(error) => Error::Dispatch(error),
            Failure::Store(error) => Error::Store(error),
            Failure::Output(error) => Error::Output(error),
        }
    }
}

/// What was being done to an artifact when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `save`, `save_many`, `put`.
    Store,
    /// `load`, `get`, `show`.
    Load,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Store => "store",
            Action::Load => "load",
        })
    }
}

impl Error {
    /// Whether this is "no artifact named N".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Store(error) => error.is_not_found(),
            Error::Artifact { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// `error` while storing `name`, named if it is about the content (see
    /// the type's decision).
    pub fn storing(name: &str, error: impl Into<Error>) -> Error {
        Error::about(Action::Store, name, error.into())
    }

    /// `error` while loading `name`, named if it is about the content.
    pub fn loading(name: &str, error: impl Into<Error>) -> Error {
        Error::about(Action::Load, name, error.into())
    }

    fn about(action: Action, name: &str, error: Error) -> Error {
        match error {
            Error::Dispatch(_) | Error::Json(_) | Error::EmptyInput { .. } => Error::Artifact {
                action,
                name: name.to_owned(),
                source: Box::new(error),
            },
            other => other,
        }
    }
}

/// `stdin` for `-`, else the file name, quoted capped.
fn input_label(input: &str) -> String {
    if input == "-" {
        "stdin".to_owned()
    } else {
        quote_capped(input, MAX_QUOTED_NAME)
    }
}

/// Characters of an artifact or file name quoted in errors.
pub const MAX_QUOTED_NAME: usize = 80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storing_names_content_errors_and_passes_store_errors_through() {
        let empty = Error::storing("x", Error::EmptyInput { input: "-".into() });
        assert_eq!(empty.to_string(), "cannot store x: stdin is empty");
        let named_twice = Error::loading("y", empty);
        assert_eq!(named_twice.to_string(), "cannot store x: stdin is empty");
        let dispatch = Error::loading(
            "a\nb",
            DispatchError::NotActive {
                plugin: "arrow".into(),
            },
        );
        assert_eq!(
            dispatch.to_string(),
            "cannot load a\\nb: plugin arrow is not active"
        );
    }
}
