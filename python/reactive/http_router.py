"""HTTP actions: ``@http_action`` handlers routed by an app's ``http_router()``.

An app's ``http`` module defines ``http = http_router()`` and routes requests to handlers::

    from starlette.responses import JSONResponse
    from reactive import http_action, http_router

    @http_action
    async def hook(ctx, request):
        body = await request.json()
        await ctx.run_mutation("messages:send", body)
        return JSONResponse({"ok": True})

    http = http_router()
    http.route(path="/hook", method="POST", handler=hook)

A handler is ``async def handler(ctx, request)`` (or a plain ``def``): ``ctx`` is an
action context (:class:`~reactive.db.context.ActionCtx`: ``run_query``, ``run_mutation``,
``run_action``, ``scheduler``, ``auth``, ``env``), ``request`` a Starlette ``Request``; it
returns a Starlette ``Response`` (``StreamingResponse`` streams). The server serves the
routes under ``/http/`` (``POST /http/hook``) and, with ``--site-port``, at the root of
that port.

The routing rules are Convex's ``httpRouter`` (``convex/server``), in snake case:

* ``route(path=..., method=..., handler=...)``: an exact path; it must start with ``/``.
* ``route(path_prefix=..., method=..., handler=...)``: every path starting with the
  prefix, which must start and end with ``/``.
* ``method`` is one of ``GET POST PUT DELETE PATCH OPTIONS``; ``HEAD`` requests are
  routed as ``GET``.
* An exact route wins over prefix routes; of the prefix routes, the longest prefix wins.
* Registering the same path (or prefix) and method twice raises ``ValueError`` when the
  module is imported.
* Paths under ``/.files/`` are reserved.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

from reactive.errors import ReactiveError

__all__ = [
    "ROUTABLE_HTTP_METHODS",
    "HttpAction",
    "HttpActionResponseError",
    "HttpRouter",
    "http_action",
    "http_router",
]

ROUTABLE_HTTP_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
"""Methods a route may name (Convex's ``ROUTABLE_HTTP_METHODS``)."""


class HttpActionResponseError(ReactiveError, TypeError):
    """An HTTP action returned something that is not a Starlette ``Response``."""


class HttpAction:
    """An HTTP action: ``handler(ctx, request) -> Response`` (Convex's ``httpAction``).

    Not a client-callable function: it is reached only through an :class:`HttpRouter`
    route (``/api/action`` and the sync protocol cannot call it). Calling the object calls
    the handler directly (useful in unit tests of the app).

    Attributes:
        kind: ``"httpAction"`` (the ``type`` label of the function metrics).
        handler: ``handler(ctx, request)``, ``async def`` or plain ``def``.
    """

    kind: Final = "httpAction"

    def __init__(self, handler: Callable[..., Any]) -> None:
        if isinstance(handler, HttpAction):
            handler = handler.handler
        if not callable(handler):
            raise TypeError(f"@http_action decorates a function, not {handler!r:.60}")
        self.handler: Callable[..., Any] = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        self.__doc__ = handler.__doc__
        self.__name__ = getattr(handler, "__name__", "http_action")
        self.__module__ = getattr(handler, "__module__", __name__)
        self.__qualname__ = getattr(handler, "__qualname__", self.__name__)

    def __call__(self, ctx: Any, request: Any) -> Any:
        """Call the handler directly (no time limit, no logs)."""
        return self.handler(ctx, request)

    def __repr__(self) -> str:
        return f"<httpAction {self.__qualname__}>"


def http_action(handler: Callable[..., Any], /) -> HttpAction:
    """Define an HTTP action: ``@http_action`` over ``async def handler(ctx, request)``.

    Raises:
        TypeError: ``handler`` is not callable.
    """
    return HttpAction(handler)


class HttpRouter:
    """Routes of an app's HTTP actions (Convex's ``HttpRouter``); make one with :func:`http_router`.

    Attributes:
        exact_routes: Path -> method -> action.
        prefix_routes: Method -> path prefix -> action.
    """

    def __init__(self) -> None:
        self.exact_routes: dict[str, dict[str, HttpAction]] = {}
        self.prefix_routes: dict[str, dict[str, HttpAction]] = {}

    def route(
        self,
        *,
        method: str,
        handler: HttpAction,
        path: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Route ``method`` requests for ``path`` (exact) or ``path_prefix`` to ``handler``.

        Raises:
            ValueError: the method is not one of :data:`ROUTABLE_HTTP_METHODS`; both or
                neither of ``path`` and ``path_prefix`` are given; the path does not start
                with ``/``; the prefix does not start and end with ``/``; the path is
                reserved (``/.files``); the path (or prefix) and method are already routed.
            TypeError: ``handler`` is not an ``@http_action``.
        """
        if not isinstance(handler, HttpAction):
            raise TypeError(
                f"route handler must be an @http_action, not {handler!r:.80} "
                "(decorate it with @http_action)"
            )
        if method not in ROUTABLE_HTTP_METHODS:
            raise ValueError(
                f"{method!r:.40} is not an allowed HTTP method (one of "
                f"{', '.join(ROUTABLE_HTTP_METHODS)})"
            )
        if path is not None and path_prefix is not None:
            raise ValueError("a route cannot have both path and path_prefix")
        if path is not None:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"path {path!r:.200} does not start with a /")
            if path == "/.files" or path.startswith("/.files/"):
                raise ValueError(f"path {path!r:.200} is reserved")
            methods = self.exact_routes.setdefault(path, {})
            if method in methods:
                raise ValueError(f"path {path!r:.200} for method {method} is already in use")
            methods[method] = handler
        elif path_prefix is not None:
            if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
                raise ValueError(f"path_prefix {path_prefix!r:.200} does not start with a /")
            if not path_prefix.endswith("/"):
                raise ValueError(f"path_prefix {path_prefix!r:.200} must end with a /")
            if path_prefix.startswith("/.files/"):
                raise ValueError(f"path_prefix {path_prefix!r:.200} is reserved")
            prefixes = self.prefix_routes.setdefault(method, {})
            if path_prefix in prefixes:
                raise ValueError(f"{method} path_prefix {path_prefix!r:.200} is already defined")
            prefixes[path_prefix] = handler
        else:
            raise ValueError("a route needs either path or path_prefix")

    def get_routes(self) -> list[tuple[str, str, HttpAction]]:
        """Every route as ``(path, method, action)``, sorted; a prefix reads ``"/files/*"``."""
        out = [
            (path, method, self.exact_routes[path][method])
            for path in sorted(self.exact_routes)
            for method in sorted(self.exact_routes[path])
        ]
        out += [
            (f"{prefix}*", method, self.prefix_routes[method][prefix])
            for method in sorted(self.prefix_routes)
            for prefix in sorted(self.prefix_routes[method])
        ]
        return out

    def lookup(self, path: str, method: str) -> tuple[HttpAction, str, str] | None:
        """The route of a request: ``(action, method, route path)``, or ``None``.

        ``HEAD`` is looked up as ``GET``. The route path is the exact path or the prefix
        followed by ``*`` (``"/files/*"``).
        """
        if method == "HEAD":
            method = "GET"
        exact = self.exact_routes.get(path, {}).get(method)
        if exact is not None:
            return exact, method, path
        prefixes = self.prefix_routes.get(method, {})
        for prefix in sorted(prefixes, key=len, reverse=True):
            if path.startswith(prefix):
                return prefixes[prefix], method, f"{prefix}*"
        return None

    def __repr__(self) -> str:
        return f"<HttpRouter {len(self.get_routes())} routes>"


def http_router() -> HttpRouter:
    """A new, empty :class:`HttpRouter` (Convex's ``httpRouter()``)."""
    return HttpRouter()
