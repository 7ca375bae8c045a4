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

Security: bind to 127.0.0.1 unless the network is trusted; with ``--token`` (or ``XLMNIST_SERVER_TOKEN``)
every POST needs ``Authorization: Bearer <token>`` (xlwings' ``auth`` setting sends it); a request body is
limited to ``XLMNIST_SERVER_MAX_BYTES`` (default 20 MB) and must state its length; answers never name the
server's folders (paths are shown relative to the workbook folder); a bad payload or sheet is a 4xx.

    xlmnist serve [--host 127.0.0.1] [--port 8000] [--books DIR] [--token TOKEN]
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from xlmnist.errors import XlmnistError
from xlmnist.excel import web

ACTIONS = ("train", "step", "export", "reset", "cancel")
OFFICE_ORIGINS = r"https://.*\.officescripts\.microsoftusercontent\.com"  # Office Scripts' fetch origin
MAX_BYTES = 20 * 1024 * 1024  # default request body limit (Excel on the web sends at most 5 MB)


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
        raise XlmnistError(f"{name or book_name!r}: no such workbook on the server")
    return path


def max_bytes() -> int:
    text = os.environ.get("XLMNIST_SERVER_MAX_BYTES", "")
    try:
        return int(text) if text else MAX_BYTES
    except ValueError:
        raise XlmnistError(f"XLMNIST_SERVER_MAX_BYTES={text!r}: not a number of bytes") from None


def scrub(value, folder: Path):
    """``value`` (str/list/dict) with the server's folder removed from every path it mentions."""
    if isinstance(value, str):
        for prefix in {str(folder.resolve()), str(folder)}:
            value = value.replace(prefix + os.sep, "").replace(prefix, ".")
        return value
    if isinstance(value, list):
        return [scrub(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, folder) for k, v in value.items()}
    return value


def check_payload(payload: dict, sheet: str | None) -> None:
    """A 4xx message when the payload is not a remote-engine book or ``sheet`` is not one of its sheets."""
    sheets = payload.get("sheets")
    if not isinstance(sheets, list) or not sheets or not all(isinstance(s, dict) for s in sheets):
        raise ValueError("not an xlwings book payload: no sheets")
    names = [s.get("name") for s in sheets]
    index = (
        payload.get("book", {}).get("active_sheet_index") if isinstance(payload.get("book"), dict) else None
    )
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(sheets):
        raise ValueError(f"active_sheet_index {index!r}: the payload has {len(sheets)} sheets")
    if sheet is not None and sheet not in names:
        raise ValueError(f"sheet {sheet!r}: not in the payload (it has {len(names)} sheets)")


def create_app(token: str | None = None):
    """The FastAPI app (imports fastapi and xlwings' remote engine only here). ``token``: required bearer
    token of every POST (default: ``XLMNIST_SERVER_TOKEN``; none = no authentication)."""
    os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")
    # deferred: xlwings, fastapi and torch (through excel.book) only when the server starts
    # deferred: fastapi and xlwings are the optional [server] extra
    import xlwings as xw
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from xlmnist.excel import book as excel

    token = token if token is not None else os.environ.get("XLMNIST_SERVER_TOKEN") or None
    limit = max_bytes()
    app = FastAPI(title="xlmnist", description="Excel Solver, but it is PyTorch: xlwings Server scripts")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.method == "POST":
            if token is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "the request must state its Content-Length"}, status_code=411)
            if int(length) > limit:
                return JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        return await call_next(request)

    origins = [o.strip() for o in os.environ.get("XLMNIST_SERVER_ORIGINS", "").split(",") if o.strip()]
    app.add_middleware(
        CORSMiddleware, allow_origins=origins, allow_origin_regex=OFFICE_ORIGINS, allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )  # fmt: skip

    @app.get("/xlwings/alert", response_class=HTMLResponse)
    def alert(prompt: str = "", title: str = "", buttons: str = "ok", mode: str = "", callback: str = ""):
        return web.alert_html(prompt, title, buttons, callback)

    @app.get("/xlmnist/taskpane.html", response_class=HTMLResponse)
    def taskpane():
        return web.taskpane_html(xw.__version__)

    def manifest(request):
        return Response(web.manifest_xml(str(request.base_url)), media_type="application/xml")

    manifest.__annotations__["request"] = Request  # a real class: the local import is not a global name
    app.get("/xlmnist/manifest.xml")(manifest)

    @app.get("/xlmnist/icon.png")
    def icon():
        return Response(web.icon_png(), media_type="image/png")

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
            check_payload(payload, sheet)
            book = xw.Book(json=payload)
        except Exception as exc:  # a malformed payload
            raise HTTPException(status_code=400, detail=f"bad payload: {str(exc).splitlines()[0]}") from None
        try:
            folder = books_dir()
            path = server_file(book.name)
        except XlmnistError as exc:
            excel.alert(book, str(exc))
            return {**book.json(), "result": {"ok": False, "error": str(exc)}}
        result = excel.ACTIONS[action](book, sheet=sheet, path=path)
        result = {k: v for k, v in result.items() if k != "values"}  # the values travel as actions
        return scrub({**book.json(), "result": result}, folder)

    return app


def _cmd_serve(args) -> int:
    try:
        import uvicorn  # deferred: optional server dependency
    except ModuleNotFoundError:
        raise XlmnistError("xlmnist serve needs the server extra: pip install 'xlmnist[server]'") from None
    if args.books:
        os.environ["XLMNIST_SERVER_BOOKS"] = str(Path(args.books).resolve())
    books_dir()
    uvicorn.run(create_app(token=args.token), host=args.host, port=args.port)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="xlwings Server route: train/step/export/reset over HTTP (extra [server])"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--books", help="folder with the workbooks (default: $XLMNIST_SERVER_BOOKS)")
    p.add_argument(
        "--token", default=None, help="require 'Authorization: Bearer TOKEN' (default: $XLMNIST_SERVER_TOKEN)"
    )
    p.set_defaults(func=_cmd_serve)
