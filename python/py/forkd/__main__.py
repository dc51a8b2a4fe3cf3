"""The ``forkd`` command: forkd's own command line, run in this interpreter."""

import sys


def main() -> None:
    from forkd import _native

    sys.exit(_native.main(sys.argv, sys.executable))


if __name__ == "__main__":
    main()
