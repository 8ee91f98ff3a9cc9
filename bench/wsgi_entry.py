"""A WSGI callable for servers that take `module:callable` and cannot call a factory (uWSGI).

BENCH_WSGI_APP names the factory (`module:function`); the app is built at
import, which uWSGI's --lazy-apps does in each worker after the fork, as the
other servers build it.
"""

from __future__ import annotations

import importlib
import os

_module, _, _factory = os.environ["BENCH_WSGI_APP"].partition(":")
application = getattr(importlib.import_module(_module), _factory)()
