//! Deals tests.
