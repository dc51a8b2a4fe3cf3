#!/usr/bin/env bash
# The whole test suite, on a fresh Linux machine with a Rust toolchain: installs what
# the tests need (scripts/test-deps.sh), then runs every test target and the doc tests.
# README.md gives this command; .ci/run runs it after rustfmt and clippy.
#
#   scripts/test.sh                 everything (with scripts/test-wheel.py)
#   scripts/test.sh -E 'test(hup)'  extra arguments go to cargo nextest run
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo nextest run --all-targets --no-fail-fast "$@"
if [ $# -eq 0 ]; then
  cargo test --doc
  # The Python wheel, built and installed without Rust (a dev-profile build with zig:
  # ~3 min of CPU from a clean target/, seconds when only forkd changed).
  python3 scripts/test-wheel.py
fi
