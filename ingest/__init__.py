"""The ingest gateway: CloudEvents over HTTP in, durable log records out.

``app.create_app`` builds the ASGI application; ``codec`` turns a request body
into events by content type; ``problems`` renders RFC 9457 problem documents.
"""
