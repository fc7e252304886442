//! Notes tests.
