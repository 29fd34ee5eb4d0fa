"""Live task events as Server-Sent Events, served by the ASGI stream process (``crux.asgi``).

- ``hub``: the process's one poller, which reads new rows and fans them out to subscribers;
- ``views``: the two stream endpoints, and the web process's redirect to them;
- ``urls``: the stream process's routes.
"""
