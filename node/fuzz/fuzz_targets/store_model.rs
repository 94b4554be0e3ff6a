//! Fuzzes the redb store against the reference model: the input bytes become a sequence
//! of inserts, batches, prunes and reopens over a fixed pool of alerts
//! (`model::ops_from_bytes`), run on a fresh store and checked after every step.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tocsin_proto::SignedAlert;

#[allow(dead_code)]
#[path = "../../tests/model/mod.rs"]
mod model;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("a tokio runtime"))
}

fn pool() -> &'static [SignedAlert] {
    static POOL: OnceLock<Vec<SignedAlert>> = OnceLock::new();
    POOL.get_or_init(model::pool)
}

fuzz_target!(|data: &[u8]| {
    let ops = model::ops_from_bytes(data, pool().len());
    if let Err(e) = runtime().block_on(model::run(ops.clone(), pool())) {
        panic!("the store disagrees with the model: {e}\nsteps: {ops:?}");
    }
});
