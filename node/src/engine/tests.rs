//! Engine unit tests (being written).
