//! Notes and activities.
