//! Fields tests.
