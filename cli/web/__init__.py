"""`jrsearch serve`: an HTTP API (FastAPI) and a static search page over one library."""
