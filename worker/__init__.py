"""The Dramatiq worker: `dramatiq worker` imports this package.

Importing it sets the broker up (worker.broker) and declares the actors.
"""

from worker import broker as broker  # noqa: I001 - the broker must exist before the actors
from worker import actors as actors
