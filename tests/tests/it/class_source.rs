//! Integration and interop tests of the class_source plugin (being written).
