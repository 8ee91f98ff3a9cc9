"""What the web process's requests and commands share, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from psycopg_pool import ConnectionPool

from subsync import config
from subsync.queue import BackgroundSender, EventQueue
from webhooks.group_commit import GroupCommit

EXTENSION = "subsync"


@dataclass(frozen=True)
class Services:
    settings: config.Settings
    pool: ConnectionPool[Any]
    queue: EventQueue  # sends now: commands
    sender: BackgroundSender  # sends after the answer: the receiver's, through `intake`
    intake: GroupCommit  # the receiver's: stores concurrent deliveries together
    livemode: bool  # the deployment's mode: events of the other one are stored ignored


def install(app: Flask, services: Services) -> None:
    app.extensions[EXTENSION] = services


def of(app: Flask) -> Services:
    services: Services = app.extensions[EXTENSION]
    return services


def current() -> Services:
    """The services of the app handling this request or command."""
    return of(current_app)
