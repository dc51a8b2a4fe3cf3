#!/usr/bin/env bash
# The whole test suite, on a fresh Linux machine with a Rust toolchain: installs what
# the tests need (scripts/test-deps.sh), then runs every test target, the doc tests and
# the unit tests of the Python package's crate (python/, its own workspace).
# README.md gives this command; .ci/run runs it after rustfmt and clippy.
#
#   scripts/test.sh                 everything (with scripts/test-wheel.py)
#   scripts/test.sh -E 'test(hup)'  extra arguments go to cargo nextest run
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
# No two source files import each other, directly or in a ring.
python3 scripts/import-cycles.py src python/src
cargo nextest run --all-targets --no-fail-fast "$@"
if [ $# -eq 0 ]; then
  cargo test --doc
  # python/'s unit tests: a test binary that links libpython (the extension module,
  # built by maturin with the `extension-module` feature, does not), of the test
  # virtualenv's interpreter that scripts/test-deps.sh made.
  venv="${PYTHON_TEST_VENV:-$PWD/target/pyenv-test}"
  libdir="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
  (cd python &&
    PYO3_PYTHON="$venv/bin/python" CARGO_TARGET_DIR=../target \
      LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo test --lib)
  # The Python wheel, built and installed without Rust (a dev-profile build with zig:
  # ~3 min of CPU from a clean target/, seconds when only forkd changed).
  python3 scripts/test-wheel.py
fi
