//! The disk under the state directory full.
