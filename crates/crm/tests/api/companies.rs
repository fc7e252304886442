//! Companies tests.
