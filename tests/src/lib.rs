//! tocsin-tests: helpers for multi-process tests
