"""The ``forkd`` command: forkd's own command line, run in this interpreter."""

import sys


def _preload():
    """Imports, in the master before it forks, what every worker imports anyway: forkd's
    worker module (asyncio, traceback, ...), ssl (uvloop and most web stacks import it)
    and uvloop when installed. Never the app: each worker imports that from disk, so HUP
    brings new code live. A page of a shared library that the master touched is not in a
    forked worker's page tables, while one the worker touches itself (and its
    neighbours, with the kernel's fault-around) counts in its RSS: OpenSSL's start-up
    alone touched about 2.5 MiB of libcrypto in each worker when it ran there."""
    import ssl  # noqa: F401

    import forkd._worker  # noqa: F401

    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass


def main() -> None:
    from forkd import _native

    _preload()
    sys.exit(_native.main(sys.argv, sys.executable))


if __name__ == "__main__":
    main()
