"""xlwings Server route (optional extra ``xlmnist[server]``): train on another machine, e.g. one with a GPU.

Excel (on the web, Windows or macOS) posts the workbook's values as xlwings' remote-engine payload to
``POST /xlmnist/{train|step|export|reset}?sheet=S``; the server opens it as ``xw.Book(json=payload)``, runs the
same entry points as the desktop add-in (:mod:`xlmnist.excel.book`) and answers with ``book.json()``: the queued
actions (the written parameter blocks, alerts) that the client applies to the open workbook.

The formulas and the full training data stay on the server: the workbook file is looked up by its name in
``XLMNIST_SERVER_BOOKS`` (a folder on the server; client paths are never trusted), so the request only needs
the model sheet's values (Excel on the web caps a request at 5 MB; configure the client to include only the
model sheet).

Licence: xlwings Server and the remote engine are under the PolyForm Noncommercial licence unless you hold an
xlwings PRO licence (set ``XLWINGS_LICENSE_KEY``; ``noncommercial`` for noncommercial use). The core of
xlmnist never imports this module.

    xlmnist serve [--host 127.0.0.1] [--port 8000] [--books DIR]
"""

from __future__ import annotations

import os
from pathlib import Path

from xlmnist.errors import XlmnistError

ACTIONS = ("train", "step", "export", "reset")


def books_dir() -> Path:
    folder = os.environ.get("XLMNIST_SERVER_BOOKS")
    if not folder:
        raise XlmnistError("XLMNIST_SERVER_BOOKS is not set: the folder with the workbooks on this server")
    return Path(folder)


def server_file(book_name: str) -> Path:
    """The server's copy of the workbook the client calls ``book_name`` (its base name only)."""
    name = Path(str(book_name).replace("\\", "/")).name
    path = books_dir() / name
    if not name or not path.is_file():
        raise XlmnistError(f"{name or book_name!r}: no such workbook on the server (in {books_dir()})")
    return path


def create_app():
    """The FastAPI app (imports fastapi and xlwings' remote engine only here)."""
    os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")
    # deferred: xlwings, fastapi and torch (through excel.book) only when the server starts
    import xlwings as xw
    from fastapi import Body, FastAPI, HTTPException

    from xlmnist.excel import book as excel

    app = FastAPI(title="xlmnist", description="Excel Solver, but it is PyTorch: xlwings Server scripts")

    @app.get("/xlmnist/health")
    def health() -> dict:
        return {"ok": True, "actions": list(ACTIONS)}

    @app.post("/xlmnist/{action}")
    def run(action: str, payload: dict = Body(...), sheet: str | None = None) -> dict:  # noqa: B008
        if action not in ACTIONS:
            raise HTTPException(
                status_code=404, detail=f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"
            )
        try:
            book = xw.Book(json=payload)
        except Exception as exc:  # a malformed payload
            raise HTTPException(status_code=400, detail=f"not an xlwings book payload: {exc}") from None
        try:
            path = server_file(book.name)
        except XlmnistError as exc:
            excel.alert(book, str(exc))
            return {**book.json(), "result": {"ok": False, "error": str(exc)}}
        result = excel.ACTIONS[action](book, sheet=sheet, path=path)
        result = {k: v for k, v in result.items() if k != "values"}  # the values travel as actions
        return {**book.json(), "result": result}

    return app


def _cmd_serve(args) -> int:
    try:
        import uvicorn  # deferred: optional server dependency
    except ModuleNotFoundError:
        raise XlmnistError("xlmnist serve needs the server extra: pip install 'xlmnist[server]'") from None
    if args.books:
        os.environ["XLMNIST_SERVER_BOOKS"] = str(Path(args.books).resolve())
    books_dir()
    uvicorn.run(create_app(), host=args.host, port=args.port)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="xlwings Server route: train/step/export/reset over HTTP (extra [server])"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--books", help="folder with the workbooks (default: $XLMNIST_SERVER_BOOKS)")
    p.set_defaults(func=_cmd_serve)
