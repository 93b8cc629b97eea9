#!/usr/bin/env bash
# Fuzz the codec: scripts/fuzz.sh [SECONDS]   (default 60)
# Installs cargo-fuzz and the nightly toolchain if missing. Seeds the corpus
# with real documents from the shared test vectors' shapes.
set -euo pipefail
cd "$(dirname "$0")/../core"
seconds="${1:-60}"
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
mkdir -p fuzz/corpus/decode
cargo run -q --example seed_corpus -- fuzz/corpus/decode
cargo +nightly fuzz run decode fuzz/corpus/decode -- -max_total_time="$seconds" -max_len=65536
