"""`samfast serve`: a local HTTP service for treatment-planning plug-ins (FastAPI + uvicorn).

FastAPI is imported only by samfast.serve.app, so the rest of samfast never needs it.
"""
