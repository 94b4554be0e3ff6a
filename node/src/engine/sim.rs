//! Deterministic discrete-event simulator for the engine (being written).
