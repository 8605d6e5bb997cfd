"""Function definitions, function paths, and loading an app's functions and schema.

``@query``, ``@mutation``, ``@action`` and their ``internal_*`` forms define functions.

An app is a directory or importable package of Python modules (README, "Use it"). A function
``list`` defined in ``chat/messages.py`` has the path ``"messages:list"``; one in
``chat/admin/users.py`` is ``"admin/users:get"``. Paths are canonicalized as the wire spec
§14 says: split at the last ``:`` (none means ``default``), strip a trailing ``.js``, so
``"messages"``, ``"messages.js:default"`` and ``"messages:default"`` name one function.

Typed calls: a decorated function is a ``Function[R, P]``, ``R`` what its handler returns
and ``P`` the handler's parameters after ``ctx``, so ``await db.query(messages.list,
channel="x")`` is checked by mypy and pyright (argument names and types, and the result).
A program that does not import the app's code uses :class:`QueryReference`,
:class:`MutationReference` and :class:`ActionReference` objects instead, typed with the
argument ``TypedDict`` and the result (``python -m reactive codegen --py`` writes them).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    Protocol,
    TypedDict,
    TypeVar,
    overload,
)

from reactive.errors import FunctionNotFoundError, SchemaError
from reactive.schema import DatabaseSchema, Validator, v

if sys.version_info >= (3, 13):
    from typing import ParamSpec
else:  # a ParamSpec default (PEP 696) needs typing_extensions before 3.13
    from typing_extensions import ParamSpec

__all__ = [
    "ActionReference",
    "App",
    "Function",
    "FunctionKind",
    "FunctionReference",
    "MutationReference",
    "NoArgs",
    "QueryReference",
    "action",
    "call_arguments",
    "canonicalize_path",
    "function_path",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "load_app",
    "mutation",
    "query",
]

FunctionKind = Literal["query", "mutation", "action"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_COMPONENT = re.compile(r"^[A-Za-z0-9_.]{1,64}$")


R = TypeVar("R")
K = TypeVar("K", bound=str)
A = TypeVar("A", bound=Mapping[str, Any])
P = ParamSpec("P", default=...)
_P = ParamSpec("_P")  # the decorators' and calls' own (PEP 696: no default after R)


class Function(Generic[R, P]):
    """A registered function: its kind, validators and handler.

    Generic in what the handler returns and in its parameters after ``ctx``: ``async def
    add(ctx, text: str) -> int`` decorated is a ``Function[int, (text: str)]``, so
    ``await db.mutation(notes.add, text="x")`` is an ``int`` for mypy and pyright, and a
    wrong argument name or type is a type error. ``Function[int]`` is one of any
    parameters.

    Calling it calls the handler directly (useful in unit tests of the app).

    Attributes:
        kind: ``"query"``, ``"mutation"`` or ``"action"``.
        handler: ``handler(ctx, **args)``, ``async def`` or plain ``def``.
        args: Validator of the argument object, or ``None`` (any object).
        returns: Validator of the return value, or ``None``.
        internal: Whether clients are refused (only other functions may call it).
        path: Canonical path once loaded with an app (``"messages:list"``).
    """

    def __init__(
        self,
        kind: FunctionKind,
        handler: Callable[Concatenate[Any, P], Any],
        args: Mapping[str, Validator] | Validator | None,
        returns: Validator | None,
        internal: bool,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"@{kind} decorates a function, not {handler!r:.60}")
        self.kind: FunctionKind = kind
        self.handler = handler
        from reactive.pytypes import is_model, validator_from_type

        self.args_type: Any = None
        """The Python type ``args=`` was given as (a dataclass, TypedDict or model), if any."""
        self.returns_type: Any = returns if is_model(returns) else None
        """The dataclass or model ``returns=`` was given as: embedded callers get one back."""
        if args is None or isinstance(args, Validator):
            self.args = args
        elif isinstance(args, Mapping):
            self.args = v.object(args)
        elif isinstance(args, type):
            self.args = validator_from_type(args, f"@{kind}(args=...)")
            if self.args.to_json().get("type") != "object":
                raise SchemaError(f"@{kind}(args=...) takes a dict, or a type with fields")
            self.args_type = args
        else:
            raise SchemaError(f"@{kind}(args=...) takes a dict of validators")
        if returns is not None and not isinstance(returns, Validator):
            returns = validator_from_type(returns, f"@{kind}(returns=...)")
        self.returns = returns
        self.internal = internal
        self.is_async = inspect.iscoroutinefunction(handler)
        self.path: str | None = None
        self.__doc__ = handler.__doc__
        self.__name__ = getattr(handler, "__name__", "function")
        self.__module__ = getattr(handler, "__module__", __name__)
        self.__qualname__ = getattr(handler, "__qualname__", self.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly (no transaction, no validation)."""
        return self.handler(*args, **kwargs)

    def __repr__(self) -> str:
        prefix = "internal_" if self.internal else ""
        return f"<{prefix}{self.kind} {self.path or self.__qualname__}>"


def _decorator(kind: FunctionKind, internal: bool) -> Any:
    def deco(
        fn: Callable[..., Any] | None = None,
        /,
        *,
        args: Mapping[str, Validator] | Validator | None = None,
        returns: Validator | None = None,
    ) -> Function[Any] | Callable[[Callable[..., Any]], Function[Any]]:
        if fn is not None:
            return Function(kind, fn, args, returns, internal)
        return lambda f: Function(kind, f, args, returns, internal)

    prefix = "internal_" if internal else ""
    deco.__name__ = f"{prefix}{kind}"
    deco.__doc__ = (
        f"Define a {'internal ' if internal else ''}{kind}: ``@{prefix}{kind}`` or "
        f"``@{prefix}{kind}(args={{...}}, returns=...)``."
    )
    return deco


class _Wrap(Protocol):
    """What ``@query(args=...)`` returns: it wraps the handler into a typed function."""

    # An async def matches here first, never the last overload (its R is not a coroutine).
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[Any, _P], Coroutine[Any, Any, R]], /
    ) -> Function[R, _P]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, _P], R], /) -> Function[R, _P]: ...

    # mypy refuses ``def f(ctx, **args)`` above (``ctx=`` could be one of ``args``, and
    # Concatenate's ctx is positional-only), so such a handler does reach these two.
    @overload
    def __call__(  # type: ignore[overload-cannot-match]
        self, fn: Callable[..., Coroutine[Any, Any, R]], /
    ) -> Function[R]: ...

    @overload
    def __call__(self, fn: Callable[..., R], /) -> Function[R]: ...  # type: ignore[overload-cannot-match]


class _Decorator(Protocol):
    """``@query`` and ``@query(args=..., returns=...)`` (and the other kinds), typed.

    The function keeps the handler's result type (awaited, for an ``async def``) and its
    parameters after ``ctx``; a handler whose ``ctx`` mypy cannot take positionally only
    (``def f(ctx, **args)``: ``ctx=`` could also be one of ``args``) keeps its result type.
    """

    # An async def matches here first, never the last overload (its R is not a coroutine).
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[Any, _P], Coroutine[Any, Any, R]], /
    ) -> Function[R, _P]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, _P], R], /) -> Function[R, _P]: ...

    # mypy refuses ``def f(ctx, **args)`` above (``ctx=`` could be one of ``args``, and
    # Concatenate's ctx is positional-only), so such a handler does reach these two.
    @overload
    def __call__(  # type: ignore[overload-cannot-match]
        self, fn: Callable[..., Coroutine[Any, Any, R]], /
    ) -> Function[R]: ...

    @overload
    def __call__(self, fn: Callable[..., R], /) -> Function[R]: ...  # type: ignore[overload-cannot-match]

    @overload
    def __call__(self, *, args: Any = None, returns: Any = None) -> _Wrap: ...


query: _Decorator = _decorator("query", False)
mutation: _Decorator = _decorator("mutation", False)
action: _Decorator = _decorator("action", False)
internal_query: _Decorator = _decorator("query", True)
internal_mutation: _Decorator = _decorator("mutation", True)
internal_action: _Decorator = _decorator("action", True)


def canonicalize_path(path: str) -> str:
    """The canonical form ``"module/path:function"`` of a function path (spec §14).

    Raises:
        FunctionNotFoundError: the path is not a valid function path (the message says
            which part is wrong).
    """
    if not isinstance(path, str) or not path:
        raise FunctionNotFoundError(f"{path!r} is not a valid path to a function")
    module, sep, name = path.rpartition(":")
    if not sep:
        module, name = path, "default"
    if module.endswith(".js") or module.endswith(".py"):
        module = module[:-3]
    components = module.split("/")
    ok = (
        bool(module)
        and not module.startswith("/")
        and all(_COMPONENT.match(c) and any(ch.isalnum() for ch in c) for c in components)
        and _IDENTIFIER.match(name) is not None
        and any(ch != "_" for ch in name)
    )
    if not ok:
        raise FunctionNotFoundError(
            f"{path[:200]!r} is not a valid path to a function: expected "
            "'module/path:function' with identifier parts"
        )
    return f"{module}:{name}"


class NoArgs(TypedDict):
    """The arguments of a function that takes none (``args={}``).

    A generated reference typed with it may be called without an argument dict.
    """


class FunctionReference(Generic[K, R, P]):
    """A function named by its path, typed without the app's code.

    ``K`` is the kind (``Literal["query"]``, ...), ``R`` the result and ``P`` the call's
    arguments after the reference. Use the subclasses: ``QueryReference[R, Args]`` is a
    query taking one argument dict ``Args`` (a ``TypedDict``) and returning ``R``.
    ``python -m reactive codegen --py FILE`` writes one per public function of an app, so
    ``await client.query(api.messages.list, {"channel": "x"})`` is checked by mypy and
    pyright; the ``query``, ``mutation``, ``action`` and ``subscribe`` calls of
    :class:`~reactive.client.Client` and :class:`~reactive.Database` accept them.

    Attributes:
        kind: ``"query"``, ``"mutation"`` or ``"action"``.
        path: The canonical path (``"messages:list"``).

    Raises:
        FunctionNotFoundError: (constructing one) ``path`` is not a valid function path.
    """

    kind: ClassVar[FunctionKind]

    def __init__(self, path: str) -> None:
        self.path = canonicalize_path(path)

    def __repr__(self) -> str:
        return f"<{self.kind} reference {self.path}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FunctionReference):
            return NotImplemented
        return (self.kind, self.path) == (other.kind, other.path)

    def __hash__(self) -> int:
        return hash((self.kind, self.path))


class QueryReference(FunctionReference[Literal["query"], R, [A]]):
    """A query by path: ``QueryReference[R, Args]`` (see :class:`FunctionReference`)."""

    kind: ClassVar[FunctionKind] = "query"


class MutationReference(FunctionReference[Literal["mutation"], R, [A]]):
    """A mutation by path: ``MutationReference[R, Args]`` (see :class:`FunctionReference`)."""

    kind: ClassVar[FunctionKind] = "mutation"


class ActionReference(FunctionReference[Literal["action"], R, [A]]):
    """An action by path: ``ActionReference[R, Args]`` (see :class:`FunctionReference`)."""

    kind: ClassVar[FunctionKind] = "action"


def function_path(target: str | Function[Any] | FunctionReference[Any, Any]) -> str:
    """The path a client sends to call ``target``.

    A string is returned as it is, a reference gives its path, a function its path once
    loaded with an app (:func:`load_app`), and otherwise one derived from where it is
    defined: the module under the app's package (``chat.admin.users`` ->
    ``"admin/users"``, the first package dropped) and the handler's name.

    Raises:
        FunctionNotFoundError: a function defined in ``__main__`` (it has no path), or
            ``target`` is none of these.
    """
    if isinstance(target, str):
        return target
    if isinstance(target, FunctionReference):
        return target.path
    if isinstance(target, Function):
        if target.path is not None:
            return target.path
        module = target.__module__
        if module == "__main__":
            raise FunctionNotFoundError(
                f"{target!r} is defined in __main__: it has no path in an app"
            )
        _, dot, rest = module.partition(".")
        return canonicalize_path(f"{(rest if dot else module).replace('.', '/')}:{target.__name__}")
    raise FunctionNotFoundError(
        f"expected a path, a function or a function reference, not {type(target).__name__}"
    )


def _is_argument_object(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, Mapping)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
        or (hasattr(value, "model_dump") and hasattr(type(value), "model_fields"))
    )


def call_arguments(
    target: str | Function[Any] | FunctionReference[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """The argument object of a call ``db.query(target, *args, **kwargs)`` (and the like).

    * nothing: ``None`` (no arguments);
    * one argument object (a dict or other mapping, a dataclass or pydantic instance, or
      ``None``): it, a mapping as a ``dict`` (the dict form);
    * keyword arguments: a dict of them (the keyword form);
    * for a :class:`Function`, positional arguments: bound to the handler's parameters
      after ``ctx`` in order, as its signature says (keywords may follow).

    Raises:
        TypeError: an argument object together with keyword arguments; positional
            arguments for a path or reference (they take one argument dict), more of them
            than the handler's parameters, or one also given by keyword.
    """
    if len(args) == 1 and not kwargs and type(args[0]) is dict:
        return args[0]  # the common call, one argument dict: as the general case below
    if len(args) == 1 and _is_argument_object(args[0]):
        if kwargs:
            raise TypeError(
                "pass the arguments either as one dict or as keyword arguments, not both "
                f"(got a {type(args[0]).__name__} and {', '.join(map(repr, kwargs))})"
            )
        value = args[0]
        return dict(value) if isinstance(value, Mapping) and type(value) is not dict else value
    if not args:
        return dict(kwargs) if kwargs else None
    if not isinstance(target, Function):
        if len(args) == 1 and not kwargs:
            # One value that is not an object (a list, a string...): the call's argument
            # check refuses it with ArgumentValidationError, as it refuses any bad argument.
            return args[0]
        raise TypeError(
            f"{function_path(target)!r} takes one argument dict or keyword arguments, "
            f"not {len(args)} positional argument(s)"
        )
    names = [
        p.name
        for p in list(inspect.signature(target.handler).parameters.values())[1:]
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    if len(args) > len(names):
        raise TypeError(
            f"{target!r} takes {len(names)} positional argument(s) after ctx, {len(args)} given"
        )
    out = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name in out:
            raise TypeError(f"{target!r} got argument {name!r} twice")
        out[name] = value
    return out


@dataclass
class App:
    """An app's functions and schema.

    Attributes:
        functions: Canonical path -> function.
        schema: The schema from the app's ``schema`` module, or ``None``.
        name: The package name the app was imported as.
        auth_providers: The ``providers`` list of the app's ``auth`` module (as written;
            the server parses it), or ``None``.
        crons: The ``crons`` object of the app's ``crons`` module (``cron_jobs()``), or
            ``None``.
        http: The ``http`` object of the app's ``http`` module (``http_router()``), or
            ``None``.
    """

    functions: dict[str, Function[Any]] = field(default_factory=dict)
    schema: DatabaseSchema | None = None
    name: str = ""
    auth_providers: Any = None
    crons: Any = None
    http: Any = None

    def lookup(self, path: str) -> Function[Any]:
        """The function at ``path`` (any accepted spelling).

        Raises:
            FunctionNotFoundError: no function there.
        """
        canonical = canonicalize_path(path)
        fn = self.functions.get(canonical)
        if fn is None:
            raise FunctionNotFoundError(f"could not find public function for {canonical!r}")
        return fn


def _register_module(app: App, module: ModuleType, module_path: str) -> None:
    for attr, value in vars(module).items():
        if not isinstance(value, Function):
            continue
        if value.__module__ != module.__name__:
            continue  # imported from another module of the app: registered there
        name = "default" if attr == "default" else attr
        if _IDENTIFIER.match(name) is None:
            continue
        path = f"{module_path}:{name}"
        value.path = value.path or path
        app.functions[path] = value
    if module_path == "auth":
        app.auth_providers = getattr(module, "providers", None)
    if module_path == "crons":
        app.crons = getattr(module, "crons", None) or getattr(module, "default", None)
    if module_path == "http":
        app.http = getattr(module, "http", None) or getattr(module, "default", None)
    if module_path.rsplit("/", 1)[-1] == "schema":
        schema = getattr(module, "schema", None)
        if schema is None:
            schema = getattr(module, "default", None)
        if isinstance(schema, DatabaseSchema):
            app.schema = schema


def load_app(app: str | Path | ModuleType | App | None) -> App:
    """Import an app and collect its functions and schema.

    Args:
        app: A directory (imported as a package named after it, its parent put on
            ``sys.path``), an importable package name, a module, or an ``App``.

    Raises:
        FunctionNotFoundError: the directory or package does not exist.
        SchemaError: the schema module is invalid.
    """
    if app is None:
        return App()
    if isinstance(app, App):
        return app
    if isinstance(app, ModuleType):
        package = app
    else:
        text = str(app)
        path = Path(text)
        if path.is_dir():
            path = path.resolve()
            parent = str(path.parent)
            if parent not in sys.path:
                sys.path.insert(0, parent)
            package_name = path.name
            if not package_name.isidentifier():
                raise FunctionNotFoundError(
                    f"app directory {path} must be named like a Python package"
                )
            existing = sys.modules.get(package_name)
            if (
                existing is not None
                and getattr(existing, "__path__", None)
                and Path(next(iter(existing.__path__))).resolve() != path
            ):
                raise FunctionNotFoundError(
                    f"a different package named {package_name!r} is already imported"
                )
            package = importlib.import_module(package_name)
        else:
            try:
                package = importlib.import_module(text)
            except ModuleNotFoundError as exc:
                raise FunctionNotFoundError(
                    f"app {text!r} is neither a directory nor an importable package"
                ) from exc
    out = App(name=package.__name__)
    if not hasattr(package, "__path__"):
        _register_module(out, package, package.__name__.rsplit(".", 1)[-1])
        return out
    prefix = package.__name__ + "."
    relative: set[str] = set()
    for root in package.__path__:
        base = Path(root)
        for file in base.rglob("*.py"):
            parts = file.relative_to(base).with_suffix("").parts
            if any(p.startswith(("_", ".")) or not p.isidentifier() for p in parts):
                continue
            relative.add(".".join(parts))
    for name in sorted(relative):
        module = importlib.import_module(prefix + name)
        _register_module(out, module, name.replace(".", "/"))
    return out
