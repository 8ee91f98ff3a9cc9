"""The worker process (Procfile `worker`): `dramatiq worker.app:setup`.

`app.setup` builds the broker and declares the actor in each worker
process; the rest is the apply protocol (`apply`) and one handler module per
kind of Stripe object (`handlers`). Nothing here runs on import.
"""
