#!/usr/bin/env bash
# Installs what forkd's test suite needs besides the Rust toolchain, on a fresh Debian
# or Ubuntu machine (idempotent: installs only what is missing). Run as root, or with
# sudo available for apt-get. Used by scripts/test.sh, which README.md and .ci/run call.
#
#   cargo-nextest                 the test runner (cargo install, if missing)
#   systemd, systemd-container    systemd-socket-activate, systemd-analyze, and
#                                 systemd-nspawn to boot a throw-away systemd
#   util-linux                    unshare and nsenter
#   python3 + pip, uvicorn        the reference exec worker
#   curl                          an HTTPS client for tests/all/tls.rs (HTTP/1.1 and HTTP/2)
#   python3-venv; target/pyenv-test  a virtualenv with FastAPI, Flask, Django and forkd's own Python
#                                 package (a debug build, `maturin develop`), for
#                                 tests/all/python.rs and wsgi.rs (PYTHON_TEST_VENV overrides the path);
#                                 with maturin and ziglang (zig links the manylinux wheel)
#                                 it builds the wheel for scripts/test-wheel.py
#   binutils                      objdump, for test-wheel.py's glibc symbol version check
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "test-deps: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

if ! command -v cargo >/dev/null; then
  echo "test-deps: cargo is required (install Rust with rustup)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

apt_packages=()
command -v systemd-socket-activate >/dev/null || apt_packages+=(systemd)
command -v systemd-analyze >/dev/null || apt_packages+=(systemd)
command -v systemd-nspawn >/dev/null || apt_packages+=(systemd-container)
{ command -v unshare && command -v nsenter; } >/dev/null || apt_packages+=(util-linux)
command -v python3 >/dev/null || apt_packages+=(python3 python3-pip)
command -v curl >/dev/null || apt_packages+=(curl)
command -v objdump >/dev/null || apt_packages+=(binutils)
python3 -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
if ((${#apt_packages[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "test-deps: missing ${apt_packages[*]} and no apt-get to install them" >&2
    exit 1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}"
fi

if ! python3 -c "import uvicorn" 2>/dev/null || ! command -v uvicorn >/dev/null; then
  # Debian's own python3 refuses pip installs outside a virtualenv (PEP 668); the
  # tests need `uvicorn` on PATH, as a user's deployment has it.
  python3 -m pip install --quiet --disable-pip-version-check uvicorn 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages uvicorn
fi

# The Python package's test environment: made once, then only brought up to date (the
# extension module is rebuilt incrementally, sharing target/ with the root crate).
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PYTHON_TEST_VENV:-$root/target/pyenv-test}"
# A virtualenv records its own path (scripts' #! lines, the editable install's .pth):
# one copied from another checkout (a target/ copied to warm a build) would run that
# checkout's code. Made anew then.
if [ -x "$venv/bin/python" ] && ! head -n1 "$venv/bin/pip" 2>/dev/null | grep -qF "#!$venv/bin/python"; then
  echo "test-deps: $venv was made for another path; making it anew" >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# ziglang: the range python/pep517/forkd_build.py asks for.
if ! "$venv/bin/python" -c "import fastapi, flask, django, maturin, ziglang" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9,<2" fastapi flask django "ziglang>=0.13,<0.16"
fi
# The module is built for the stable ABI (_native.abi3.so) since the wheels issue; a
# _native.cpython-3XX-*.so left by an older build would be imported before it.
rm -f "$root"/python/py/forkd/_native.cpython-*.so
(
  cd "$root"
  export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$root/target"
  # The editable install must point at this checkout's python/py.
  if [ -x "$venv/bin/forkd" ] && "$venv/bin/python" -c "import forkd._native, os, sys; sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(forkd.__file__))) != os.path.realpath(sys.argv[1]))" "$root/python/py" 2>/dev/null; then
    maturin develop --quiet --skip-install # rebuild the module in place (editable install)
  else
    maturin develop --quiet
  fi
)
