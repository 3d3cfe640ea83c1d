//! Integration and interop tests of the tensor plugin (being written).
