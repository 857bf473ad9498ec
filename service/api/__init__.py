"""The HTTP layer: FastAPI app, routers, request/response schemas and the error shape."""
