"""The worker side: how a ``dramatiq`` worker process boots (:mod:`~jwql_dramatiq.worker.boot`),
the middleware that owns its fork server (:mod:`~jwql_dramatiq.worker.middleware`), the actor
class that sends a call to a child (:mod:`~jwql_dramatiq.worker.forking_actor`), and the broker
Dramatiq's command line sees before the real one is built
(:mod:`~jwql_dramatiq.worker.deferred_broker`). Importing it starts nothing.
"""
