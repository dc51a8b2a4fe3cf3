"""forkd: a pre-fork process manager for HTTP services, serving ASGI apps in its own workers.

Run it with the ``forkd`` command (``forkd -c forkd.toml app.main:app``); see the README.
"""
