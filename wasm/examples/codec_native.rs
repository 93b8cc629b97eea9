//! The codec bench's loop, native, timed the way `wasm/benches/codec.mjs`
//! times it in wasm: prints nanoseconds per decode+validate+encode of the
//! 51-document fixture. Used by `scripts/bench-wasm.sh`.

use std::time::Instant;

use oxiflow_core::fixture;

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let (pipeline, partitions) = fixture::fixture();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..iterations {
            bytes += std::hint::black_box(fixture::decode_validate_encode(std::hint::black_box(&pipeline), &partitions));
        }
        assert!(bytes > 0);
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    println!("{best:.0}");
}
