"""Fingerprints for the latent cache: the same in every process, on every rank and after a restart.

Nothing here hashes a ``repr`` that carries an address or ``hash()`` (salted per process). What goes in:

- plain values (None, bools, numbers, strings, bytes, enums, paths) by value; tensors and numpy arrays by
  dtype, shape and bytes; lists, tuples, dicts and sets by their items;
- functions by their code: bytecode, constants (nested code objects included), names, defaults, closure
  values and the globals they read; a function from an installed package (site-packages or the standard
  library) by its code alone, without following its globals;
- other objects by their type, the code of their ``__call__``/``forward`` and their attributes.

An object with none of these (a C object whose ``repr`` names an address) cannot be fingerprinted: it
is refused, unless the caller gave ``cache_key`` (``lenient``), when its type name stands in for it.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import site
import stat
import sysconfig
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._errors import VarMixupError
from ._vae import find_modules

__all__ = ["Unfingerprintable", "file_fingerprint", "hash_tensor", "object_fingerprint", "vae_fingerprint"]

_MAX_DEPTH = 12
_MAX_NODES = 200_000
_BEHAVIOUR = ("__call__", "forward")
_READ_CHUNK = 1 << 20
_ADDRESS = " at 0x"


class Unfingerprintable(Exception):
    """An object the fingerprint cannot see into; ``path`` says where it was found."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def hash_tensor(h: Any, name: str, t: Tensor, *, batched: bool = False) -> None:
    """Hash dtype, shape and bytes; with ``batched``, item by item, so the batch size does not matter."""
    t = t.detach().to("cpu").contiguous()
    for item in (t if batched else [t]):
        h.update(f"{name}:{item.dtype}:{tuple(item.shape)}".encode())
        if item.numel():
            h.update(item.reshape(-1).view(torch.uint8).numpy().tobytes())


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Folders of installed code: the standard library and site-packages."""
    paths = {sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # virtualenvs with an old site module
        pass
    paths.add(os.path.dirname(os.__file__))
    return tuple(sorted(os.path.join(os.path.realpath(p), "") for p in paths if p))


def _is_library_code(code: types.CodeType) -> bool:
    filename = code.co_filename
    if not os.path.isabs(filename):
        return filename.startswith("<frozen")
    return os.path.realpath(filename).startswith(_library_roots())


def _code_names(code: types.CodeType) -> list[str]:
    """The global names a code object (and the code nested in its constants) may read."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_code_names(const))
    return list(dict.fromkeys(names))


class _Hasher:
    """Feeds a stable description of an object graph into one sha256."""

    def __init__(self, *, lenient: bool) -> None:
        self.h = hashlib.sha256()
        self.lenient = lenient
        self._memo: dict[int, int] = {}
        self._alive: list[Any] = []  # keeps memoised objects alive, so their ids stay unique
        self._nodes = 0

    def put(self, tag: str, text: str | bytes = b"") -> None:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        self.h.update(f"{tag}:{len(data)}:".encode())
        self.h.update(data)

    def opaque(self, obj: Any, path: str, reason: str) -> None:
        if not self.lenient:
            raise Unfingerprintable(path, reason)
        self.put("opaque", f"{type(obj).__module__}.{type(obj).__qualname__}")

    def feed(self, obj: Any, path: str, depth: int = 0) -> None:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise Unfingerprintable(path, f"the object graph has more than {_MAX_NODES} parts")
        if self._plain(obj):
            return
        if id(obj) in self._memo:
            self.put("ref", str(self._memo[id(obj)]))
            return
        if depth > _MAX_DEPTH:
            self.opaque(obj, path, f"nested more than {_MAX_DEPTH} levels deep")
            return
        self._memo[id(obj)] = len(self._memo)
        self._alive.append(obj)
        self._compound(obj, path, depth + 1)

    def _plain(self, obj: Any) -> bool:
        """Values hashed by value; True when ``obj`` was one."""
        if obj is None or isinstance(obj, (bool, int, float, complex, str)) and not isinstance(obj, enum.Enum):
            self.put(type(obj).__name__, repr(obj))
        elif isinstance(obj, (bytes, bytearray)):
            self.put("bytes", bytes(obj))
        elif isinstance(obj, enum.Enum):
            self.put("enum", f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}")
        elif isinstance(obj, (torch.dtype, torch.device)):
            self.put("torch", str(obj))
        elif isinstance(obj, os.PathLike):
            self.put("path", os.fspath(obj))
        elif isinstance(obj, type):
            self.put("type", f"{obj.__module__}.{obj.__qualname__}")
        elif isinstance(obj, types.ModuleType):
            self.put("module", obj.__name__)
        else:
            return False
        return True

    def _compound(self, obj: Any, path: str, depth: int) -> None:
        if isinstance(obj, Tensor):
            hash_tensor(self.h, "tensor", obj)
        elif type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and hasattr(obj, "tobytes"):
            self.put("ndarray", f"{obj.dtype.str}{getattr(obj, 'shape', ())}")
            self.put("data", obj.tobytes())
        elif isinstance(obj, (list, tuple)):
            self.put(type(obj).__qualname__, str(len(obj)))
            for i, item in enumerate(obj):
                self.feed(item, f"{path}[{i}]", depth)
        elif isinstance(obj, dict):
            self.put(type(obj).__qualname__, str(len(obj)))
            for key, value in obj.items():
                self.feed(key, f"{path}.keys()", depth)
                self.feed(value, f"{path}[{key!r}]", depth)
        elif isinstance(obj, (set, frozenset)):
            self._set(obj, path, depth)
        elif isinstance(obj, types.CodeType):
            self._code(obj, path, depth)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, path, depth)
        elif isinstance(obj, types.MethodType):
            self.put("method", obj.__func__.__name__)
            self.feed(obj.__func__, f"{path}.__func__", depth)
            self.feed(obj.__self__, f"{path}.__self__", depth)
        elif isinstance(obj, functools.partial):
            self.put("partial")
            self.feed((obj.func, obj.args, obj.keywords), path, depth)
        elif isinstance(obj, (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodWrapperType,
                              types.MethodDescriptorType, types.ClassMethodDescriptorType)):
            self._builtin(obj, path, depth)
        else:
            self._object(obj, path, depth)

    def _set(self, obj: Any, path: str, depth: int) -> None:
        digests = []
        for item in obj:  # the order of a set changes between processes: hash each item apart, then sort
            sub = _Hasher(lenient=self.lenient)
            sub.feed(item, f"{path}{{}}", depth)
            digests.append(sub.h.hexdigest())
        self.put("set", ",".join(sorted(digests)))

    def _code(self, code: types.CodeType, path: str, depth: int) -> None:
        self.put("code", code.co_code)
        self.put("names", "\0".join(code.co_names + code.co_varnames + code.co_freevars + code.co_cellvars))
        self.put("flags", f"{code.co_argcount},{code.co_kwonlyargcount},{code.co_flags}")
        self.feed(code.co_consts, f"{path}.co_consts", depth)

    def _function(self, fn: types.FunctionType, path: str, depth: int) -> None:
        where = f"{path}<{fn.__module__}.{fn.__qualname__}>"
        self.put("function")
        self._code(fn.__code__, where, depth)
        self.feed(fn.__defaults__, f"{where}.__defaults__", depth)
        self.feed(fn.__kwdefaults__, f"{where}.__kwdefaults__", depth)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                value = None
            self.put("closure", name)
            self.feed(value, f"{where}.<closure {name}>", depth)
        if _is_library_code(fn.__code__):
            return  # installed code changes with its package: its own code is enough
        for name in _code_names(fn.__code__):
            if name in fn.__globals__:
                self.put("global", name)
                self.feed(fn.__globals__[name], f"{where}.<global {name}>", depth)

    def _builtin(self, obj: Any, path: str, depth: int) -> None:
        self.put("builtin", f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}")
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, (types.ModuleType, type)):
            self.feed(owner, f"{path}.__self__", depth)

    def _object(self, obj: Any, path: str, depth: int) -> None:
        cls = type(obj)
        self.put("object", f"{cls.__module__}.{cls.__qualname__}")
        for name in _BEHAVIOUR:
            owner = next((c for c in cls.__mro__ if name in vars(c)), None)
            fn = vars(owner).get(name) if owner not in (None, object, nn.Module) else None
            if isinstance(fn, types.FunctionType):
                self.feed(fn, f"{path}.{name}", depth)
        state = self._state(obj)
        if state is None:
            text = repr(obj)
            if _ADDRESS in text or text.startswith("<"):
                self.opaque(obj, path, f"a {cls.__qualname__} has no attributes to fingerprint and its repr "
                            f"names no value ({text[:60]})")
            else:
                self.put("repr", text)
            return
        for name, value in state:
            self.put("attr", name)
            self.feed(value, f"{path}.{name}", depth)

    @staticmethod
    def _state(obj: Any) -> list[tuple[str, Any]] | None:
        """An object's attributes from ``__dict__`` and ``__slots__``; None when it has neither."""
        attrs = getattr(obj, "__dict__", None)
        state = list(attrs.items()) if isinstance(attrs, dict) else None
        for cls in type(obj).__mro__:
            if "__slots__" not in vars(cls):
                continue
            state = state or []  # a Python class with __slots__: its slots are all its state
            slots = vars(cls)["__slots__"]
            for slot in ([slots] if isinstance(slots, str) else slots):
                if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                    state.append((slot, getattr(obj, slot)))
        return state


def object_fingerprint(obj: Any, *, what: str, lenient: bool = False, attributes: bool = False) -> str:
    """sha256 of ``obj`` as the module docstring describes; raises ``VarMixupError`` naming the part of
    ``obj`` (``what`` names ``obj`` itself) that cannot be fingerprinted, unless ``lenient``. With
    ``attributes``, ``obj`` is a dict of attributes, named ``what.<name>``."""
    hasher = _Hasher(lenient=lenient)
    try:
        if attributes:
            for name, value in obj.items():
                hasher.put("attr", name)
                hasher.feed(value, f"{what}.{name}")
        else:
            hasher.feed(obj, what)
    except Unfingerprintable as exc:
        raise VarMixupError(
            f"cannot fingerprint {exc.path} for the latent cache: {exc.reason}; a cache could then serve latents "
            "of another version of it. Pass cache_key='<a string that changes whenever it changes>' or "
            "cache_path=None"
        ) from None
    return hasher.h.hexdigest()


def vae_fingerprint(vae: Any, cache_key: str | None) -> str:
    """A hash of the VAE's type, its ``config`` and every weight and buffer of every ``nn.Module`` it holds
    (:func:`find_modules`: attributes, bound methods, partials, dicts, lists), plus ``cache_key``.

    Raises when no module can be found and no ``cache_key`` names the weights.
    """
    h = hashlib.sha256(f"{type(vae).__module__}.{type(vae).__qualname__}".encode())
    config = getattr(vae, "config", None)
    if config is not None:
        h.update(object_fingerprint(config, what="vae.config", lenient=True).encode())
    if cache_key is not None:
        h.update(b"cache_key:" + cache_key.encode())
    found = find_modules(vae, tensors=True)
    for path, obj in found.items():
        h.update(f"{path}:{type(obj).__module__}.{type(obj).__qualname__}".encode())
        state = obj.state_dict(keep_vars=False) if isinstance(obj, nn.Module) else {"": obj}
        for name in sorted(state):
            if isinstance(state[name], Tensor):
                hash_tensor(h, f"{path}.{name}", state[name])
    if not found and cache_key is None:
        raise VarMixupError(
            f"cannot fingerprint the weights of the VAE ({type(vae).__name__}): it is not an nn.Module and holds "
            "no nn.Module or tensor in its attributes, so a cache could serve latents of other weights; pass "
            "cache_key='<a string that changes whenever the weights change>' or cache_path=None"
        )
    return h.hexdigest()


_FILE_LISTS = ("samples", "imgs", "targets")


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_fingerprint(dataset: Any, samples: Sequence[tuple[Any, Any]], *, mode: str, lenient: bool,
                     progress: Callable[[int], None] | None = None) -> str:
    """A file-backed dataset (``samples`` of ``(path, label)``): its other attributes (transforms, loader,
    classes...) by :func:`object_fingerprint`, every label, and every file by

    - ``mode="stat"``: path, size, mtime, ctime and inode (one ``stat`` per file). ``cp -p`` and ``touch``
      can set the mtime but not the ctime, and a replaced file gets a new inode or ctime;
    - ``mode="content"``: the sha256 of its bytes and its path relative to ``dataset.root`` (one read of
      every file), the same on every machine that holds the same files.
    """
    root = getattr(dataset, "root", None)
    skip = set(_FILE_LISTS) | ({"root"} if mode == "content" else set())
    attrs = {k: v for k, v in vars(dataset).items() if k not in skip}
    h = hashlib.sha256(f"files:{mode}:{type(dataset).__module__}.{type(dataset).__qualname__}:{len(samples)}".encode())
    h.update(object_fingerprint(attrs, what="dataset", lenient=lenient, attributes=True).encode())
    for i, (path, label) in enumerate(samples):
        path = os.fspath(path)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{path} is not a regular file")
            if mode == "stat":
                entry = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
            else:
                name = os.path.relpath(path, os.fspath(root)) if root is not None else os.path.basename(path)
                entry = f"{name}\0{st.st_size}\0{_file_digest(path)}"
        except OSError as exc:
            raise VarMixupError(f"dataset file {path} cannot be read ({exc})") from exc
        h.update(f"{entry}\0{label!r}\n".encode("utf-8", "surrogatepass"))
        if progress is not None and i % 4096 == 4095:
            progress(4096)
    return h.hexdigest()

