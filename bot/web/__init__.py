"""The operators' dashboard over HTTP: the ASGI app (app.py), its charts and its server."""
