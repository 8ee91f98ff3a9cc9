"""A local, Stripe-compatible simulator for tests, demos and benchmarks.

``Simulator`` holds the state under a simulated clock; ``start_in_thread`` serves
its HTTP API (``/v1/...``) and control endpoints (``/_sim/...``) on a free port;
``SimControl`` drives a running simulator over HTTP.
"""

from .control import SimControl, SimControlError
from .model import SimError
from .server import create_app, start_in_thread
from .shapes import BASIL, LEGACY
from .state import ADDON_MONTHLY_PRICE, ADDON_PRICE, DEFAULT_PRICE, YEARLY_PRICE, Simulator

__all__ = [
    "ADDON_MONTHLY_PRICE",
    "ADDON_PRICE",
    "BASIL",
    "DEFAULT_PRICE",
    "LEGACY",
    "YEARLY_PRICE",
    "SimControl",
    "SimControlError",
    "SimError",
    "Simulator",
    "create_app",
    "start_in_thread",
]
