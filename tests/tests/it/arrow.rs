//! Integration and interop tests of the arrow plugin (being written).
