"""The floor: the web server and Flask with an empty handler, as served for ours and the baseline.

It reads the body and answers 200, nothing else: what any Flask receiver
under the same server settings costs before it does its work. The receiver
bench measures it in the same run so that CPU per ack can be read as floor
plus our own work.
"""

from __future__ import annotations

from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/stripe")
    def webhook() -> Response:
        request.get_data(cache=False)
        return Response(b'{"received": true}', mimetype="application/json")

    return app
