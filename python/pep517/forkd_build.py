"""forkd's PEP 517 build backend: maturin's, with three differences (pyproject.toml names
it, with ``backend-path``, so that ``pip install .`` and ``pip wheel .`` use it).

- Without ``cargo`` on PATH every hook fails at once with one line saying what to
  install. maturin's own backend would instead fetch a Rust toolchain into a temporary
  directory (``puccinialin``) and compile with it, minutes later and unasked.
- A wheel is built with ``maturin --zig --compatibility manylinux2014``: zig links the
  extension against glibc 2.17's symbol versions, so the wheel installs on any Linux
  with glibc >= 2.17 (maturin's auditwheel check refuses the build otherwise). A wheel
  linked natively here would need the build machine's glibc. ``MATURIN_PEP517_ARGS``
  with its own ``--compatibility``, ``--manylinux`` or ``--zig`` takes over.
- Cargo builds in a temporary directory removed afterwards, not in ``python/target``
  beside the sources (a release build leaves ~400 MB there). A ``CARGO_TARGET_DIR`` set
  by the caller is kept, for incremental rebuilds.

maturin is imported only after the cargo check, so that the check also answers where
maturin itself is missing. (maturin warns that `build-backend` is not "maturin": it is
this wrapper, on purpose.)
"""

import contextlib
import os
import shutil
import sys
import tempfile

# The ziglang releases maturin's zig mode was tried with (maturin 1.16, ziglang 0.15).
ZIGLANG = "ziglang>=0.13,<0.16"

NO_CARGO = (
    "forkd: building from source needs Rust's cargo on PATH: install Rust with rustup "
    "(https://rustup.rs), or install a prebuilt wheel (pip install forkd-*.whl, "
    "see Install in README.md)\n"
)

# maturin's backend never downloads a toolchain with this set.
os.environ["MATURIN_NO_INSTALL_RUST"] = "1"


def _require_cargo():
    if shutil.which("cargo") is None:
        sys.stderr.write(NO_CARGO)
        sys.stderr.flush()
        raise SystemExit(1)


def _maturin():
    _require_cargo()
    import maturin

    return maturin


def _user_args(config_settings):
    return list(_maturin().get_maturin_pep517_args(config_settings))


def _chooses_platform(args):
    """Whether the caller's maturin arguments already say how to tag/link the wheel."""
    return any(
        a in ("--zig", "--compatibility", "--manylinux")
        or a.startswith(("--compatibility=", "--manylinux="))
        for a in args
    )


def wheel_args(user_args):
    """The maturin arguments for a (non-editable) wheel: the caller's, plus zig and the
    manylinux2014 tag unless the caller chose a platform."""
    if _chooses_platform(user_args):
        return list(user_args)
    return ["--zig", "--compatibility", "manylinux2014", *user_args]


def _settings(config_settings, args):
    settings = dict(config_settings or {})
    settings.pop("build-args", None)
    settings["maturin.build-args"] = args
    return settings


def get_requires_for_build_wheel(config_settings=None):
    maturin = _maturin()
    requires = list(maturin.get_requires_for_build_wheel(config_settings))
    if "--zig" in wheel_args(_user_args(config_settings)):
        requires.append(ZIGLANG)
    return requires


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _maturin().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    maturin = _maturin()
    args = wheel_args(_user_args(config_settings))
    if "--zig" in args:
        # cargo-zigbuild runs `python -m ziglang` with this interpreter, the one whose
        # (build) environment has ziglang.
        os.environ.setdefault("CARGO_ZIGBUILD_PYTHON_PATH", sys.executable)
    with _target_dir() as target:
        print(
            f"forkd: compiling the extension module with cargo in {target} (a release "
            "build takes minutes; its last step, link-time optimisation, prints nothing)",
            flush=True,
        )
        return maturin.build_wheel(
            wheel_directory, _settings(config_settings, args), metadata_directory
        )


@contextlib.contextmanager
def _target_dir():
    """CARGO_TARGET_DIR for the build: the caller's, or a temporary directory removed
    afterwards (the wheel is copied out of it first)."""
    if os.environ.get("CARGO_TARGET_DIR"):
        yield os.environ["CARGO_TARGET_DIR"]
        return
    own = tempfile.mkdtemp(prefix="forkd-build-")
    os.environ["CARGO_TARGET_DIR"] = own
    try:
        yield own
    finally:
        del os.environ["CARGO_TARGET_DIR"]
        shutil.rmtree(own, ignore_errors=True)


def get_requires_for_build_sdist(config_settings=None):
    return _maturin().get_requires_for_build_sdist(config_settings)


def build_sdist(sdist_directory, config_settings=None):
    maturin = _maturin()
    with _target_dir():  # cargo would leave an empty python/target behind
        return maturin.build_sdist(sdist_directory, config_settings)


# Editable installs (`pip install -e .`, development): maturin's own behaviour, which
# keeps the build in python/target for incremental rebuilds, without the zig link.
def get_requires_for_build_editable(config_settings=None):
    return _maturin().get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _maturin().prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _maturin().build_editable(wheel_directory, config_settings, metadata_directory)
