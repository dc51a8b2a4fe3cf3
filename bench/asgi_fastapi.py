"""FastAPI JSON endpoint for bench/asgi.sh: a path parameter and a query parameter,
validated and serialized by FastAPI (pydantic), as a typical API route is."""

from typing import Optional

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None):
    return {"item_id": item_id, "q": q}
