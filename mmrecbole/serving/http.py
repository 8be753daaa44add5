"""The HTTP service (FastAPI): `create_app(recommender)`; `run_recbole_mm.py --serve` runs it under uvicorn.

    GET  /healthz                          model, dataset, counts
    GET  /recommend?user=ID&k=10&explain=1&include_seen=0
    POST /recommend  {"history": [item ids, oldest first], "k": 10, "explain": false, "exclude_seen": true}
    GET  /users/{user}/history?limit=20    the user's most recent items (newest first), with titles
    POST /items      {"items": [rows of the .item file], "image_dir": folder of <id>.<ext> images on the server}
    GET  /items/{item}                     an item's title, text and image URL
    GET  /items/{item}/image               its image file (from the dataset's image folder)
    GET  /                                 a page: pick a user, see their history and recommendations
    GET  /docs, /openapi.json              FastAPI's OpenAPI docs

Bad input answers 4xx with {"detail": "<one line>"}: 404 for an unknown user or item, 400 for a request the model
cannot answer (k < 1, an empty history, a history on a model without a history path, new items it cannot embed),
422 for a malformed value.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel

from mmrecbole.errors import UnknownIdError, UserError
from mmrecbole.serving.page import PAGE


class NewItems(BaseModel):
    items: List[Dict[str, Any]]
    image_dir: Optional[str] = None


class HistoryRequest(BaseModel):
    history: List[Union[str, int]]
    k: int = 10
    explain: bool = False
    exclude_seen: bool = True


def _one_line(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
    return f"{where or 'request'}: {first.get('msg', 'invalid value')}"


def create_app(recommender) -> FastAPI:
    app = FastAPI(title=f"mmrecbole: {recommender.model_name} on {recommender.dataset_name}",
                  description="Top-k recommendations with explanations from a trained mmrecbole bundle.")

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        status = 404 if isinstance(exc, UnknownIdError) else 400
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "model": recommender.model_name, "dataset": recommender.dataset_name,
                "users": len(recommender.user_index), "items": len(recommender.item_index),
                "sequential": recommender.sequential}

    @app.get("/recommend")
    def recommend_user(user: str, k: int = 10, explain: bool = False, include_seen: bool = False):
        answer = recommender.recommend([user], k=k, exclude_seen=not include_seen, explain=explain)[0]
        return _answer(answer)

    @app.post("/recommend")
    def recommend_history(body: HistoryRequest):
        answer = recommender.recommend_history([str(i) for i in body.history], k=body.k,
                                               exclude_seen=body.exclude_seen, explain=body.explain)
        return _answer(answer)

    @app.post("/items")
    def add_items(body: NewItems):
        added = recommender.add_items(body.items, body.image_dir)
        return {"added": added, "items": len(recommender.item_index)}

    @app.get("/users")
    def users(limit: int = 50):
        return {"users": recommender.known_users()[:max(0, limit)], "total": len(recommender.user_index)}

    @app.get("/users/{user}/history")
    def history(user: str, limit: int = 20):
        items = recommender.history_of(user)
        recent = list(reversed(items))[:max(0, limit)]
        return {"user": user, "length": len(items), "items": [_public(recommender.item(i)) for i in recent]}

    @app.get("/items/{item}")
    def item(item: str):
        return _public(recommender.item(item))

    @app.get("/items/{item}/image")
    def image(item: str):
        path = recommender.item(item)["image"]
        if not path or not os.path.isfile(path):
            raise UnknownIdError(f"item {item} has no image file")
        return FileResponse(path)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.replace("__TITLE__", f"{recommender.model_name} on {recommender.dataset_name}")

    return app


def _answer(answer) -> dict:
    """Recommendations as JSON, each image as its URL on this service instead of a server path."""
    data = answer.to_dict()
    for item in data["items"]:
        item["image"] = f"/items/{item['item_id']}/image" if item["image"] else None
    return data


def _public(item: dict) -> dict:
    """An item as the API shows it: its image as a URL on this service, never a server path."""
    return {"item_id": item["item_id"], "title": item["title"], "text": item["text"],
            "image": f"/items/{item['item_id']}/image" if item["image"] else None}
