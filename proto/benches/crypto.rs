//! sign, verify, batch verify (64), encode and decode of a typical ~600-byte alert.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Run: `cargo bench -p tocsin-proto --bench crypto`. Prints per-op ratios against
//! single strict verification measured in the same run.

use std::time::Instant;

use criterion::{black_box, criterion_group, Criterion};
use tocsin_proto::{codec, verify_batch, AlertBody, SignedAlert};

#[path = "../tests/common.rs"]
mod common;

fn typical() -> (tocsin_proto::SigningKey, AlertBody) {
    let key = common::fixed_key();
    let body = common::typical_body(&key, 1);
    (key, body)
}

fn benches(c: &mut Criterion) {
    let (key, body) = typical();
    let alert = SignedAlert::sign(body.clone(), &key).unwrap();
    let envelope = alert.to_envelope();
    println!(
        "typical alert: body {} bytes, envelope {} bytes",
        alert.body_bytes().len(),
        envelope.len()
    );
    let batch: Vec<SignedAlert> = (0..64)
        .map(|n| SignedAlert::sign(common::typical_body(&key, n), &key).unwrap())
        .collect();

    c.bench_function("sign", |b| {
        b.iter(|| SignedAlert::sign(black_box(body.clone()), &key).unwrap())
    });
    c.bench_function("verify_strict", |b| {
        b.iter(|| black_box(&alert).check_signature().unwrap())
    });
    c.bench_function("verify_batch_64", |b| {
        b.iter(|| verify_batch(black_box(&batch)).unwrap())
    });
    c.bench_function("encode_body", |b| {
        b.iter(|| codec::encode(black_box(&body)).unwrap())
    });
    c.bench_function("decode_envelope", |b| {
        b.iter(|| SignedAlert::decode(black_box(&envelope)).unwrap())
    });
}

/// A same-run ratio summary, measured with plain loops so it prints without parsing
/// criterion's output.
fn summary() {
    let (key, body) = typical();
    let alert = SignedAlert::sign(body, &key).unwrap();
    let batch: Vec<SignedAlert> = (0..64)
        .map(|n| SignedAlert::sign(common::typical_body(&key, n), &key).unwrap())
        .collect();
    let rounds = 200;
    let t = Instant::now();
    for _ in 0..rounds * 64 {
        alert.check_signature().unwrap();
    }
    let single = t.elapsed().as_secs_f64() / f64::from(rounds * 64);
    let t = Instant::now();
    for _ in 0..rounds {
        verify_batch(&batch).unwrap();
    }
    let batched = t.elapsed().as_secs_f64() / f64::from(rounds * 64);
    println!(
        "summary: strict verify {:.1} µs/alert ({:.0}/s); batch-64 verify {:.1} µs/alert ({:.0}/s); batch/strict speed-up {:.2}x",
        single * 1e6,
        1.0 / single,
        batched * 1e6,
        1.0 / batched,
        single / batched
    );
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}

fn main() {
    group();
    Criterion::default().final_summary();
    summary();
}
