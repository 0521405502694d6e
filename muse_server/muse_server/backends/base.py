"""The contract between the music server and its generation backends (docs/INTERFACES.md,
"Server backend contract"), plus the registry that turns a backend name into an instance.

Nothing here imports torch or rclpy: the server must start with the ``synth`` backend on a
machine that has neither, so heavy backends are imported only when asked for by name.

Writing a backend
-----------------
A backend module defines a :class:`MusicBackend` subclass whose constructor takes keyword
options only. The server always passes ``fragment_s`` (seconds of audio each
:meth:`MusicStream.next_fragment` should return, roughly) and forwards backend-specific
options from its command line (``musicgen``: ``model``, ``device``). Unknown options should
raise ``TypeError`` early (the plain Python behaviour of an unexpected keyword), so a typo on the
command line is reported at start-up, not mid-session.
"""

from __future__ import annotations

import abc
import importlib
import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np


class BackendError(RuntimeError):
    """A backend could not be created, could not open a stream, or produced bad audio."""


@dataclass(frozen=True)
class PromptSpec:
    """What to generate: the fields of the wire protocol's ``prompt`` control message."""

    prompt_id: int
    text: str
    style: str = ''
    activity: str = ''
    energy: float = 0.5           # musical energy [0, 1]
    target_bpm: float = 100.0     # tempo asked for [beats/min]
    heart_rate_bpm: float = float('nan')  # listener's heart rate [beats/min]; NaN = unknown

    def __post_init__(self):
        if isinstance(self.prompt_id, bool) or not isinstance(self.prompt_id, int) or self.prompt_id < 0:
            raise ValueError(f'PromptSpec.prompt_id must be an int >= 0, got {self.prompt_id!r}')
        if not isinstance(self.text, str):
            raise ValueError(f'PromptSpec.text must be a str, got {type(self.text).__name__}')
        if not (0.0 <= float(self.energy) <= 1.0):
            raise ValueError(f'PromptSpec.energy must be in [0, 1], got {self.energy!r}')
        if not (math.isfinite(float(self.target_bpm)) and float(self.target_bpm) > 0.0):
            raise ValueError(f'PromptSpec.target_bpm must be a finite number > 0, got {self.target_bpm!r}')


class MusicStream(abc.ABC):
    """One continuous piece of music for one (session, prompt).

    Blocking; the server calls it from a worker thread, never from its event loop, and never
    from two threads at once. Usable as a context manager (closes on exit).
    """

    @abc.abstractmethod
    def next_fragment(self) -> np.ndarray:
        """Generate and return the next fragment: float32, shape ``(n_samples, channels)``,
        values in [-1, 1], ``n_samples > 0``. Each fragment continues the previous one without
        a gap or click (sample-continuous). Raises :class:`BackendError` on failure."""

    def retarget(self, prompt: PromptSpec) -> bool:
        """Steer this running stream to ``prompt`` from its next fragment on, keeping its musical
        context (no new piece). Return True if done; False if this backend cannot (the server then
        opens a new stream conditioned on the audio tail, as before). Called from the same worker
        thread as next_fragment."""
        return False

    def fork(self, prompt: PromptSpec, at_sample: int) -> int | None:
        """Steer this stream to ``prompt`` from stream sample ``at_sample`` (counted from the
        stream's first sample; at most what :meth:`next_fragment` returned so far): the audio
        after that point is generated anew, as :meth:`retarget` would have from there, so the
        listener hears the change without waiting for the audio already sent. Return the
        sample where the next fragment starts (``at_sample`` or a nearby one the backend could
        reach), or None if it cannot (the server then calls :meth:`retarget`). Called from
        the same worker thread as next_fragment."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the stream holds (caches, GPU memory). Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class MusicBackend(abc.ABC):
    """A music generator, created once per server and shared by all its sessions.

    ``open_stream`` may be called from several worker threads at once (one per session); a
    backend that cannot run concurrently serialises internally.
    """

    name: str = ''
    sample_rate: int = 32000   # [Hz]
    channels: int = 1

    @abc.abstractmethod
    def open_stream(self, prompt: PromptSpec, context: np.ndarray | None = None) -> MusicStream:
        """Start music for ``prompt``.

        ``context`` is the tail of the audio already sent to the listener (float32,
        ``(n, channels)``, at ``sample_rate``) or None at a session's start, so the new music
        grows out of the old (MusicGen: audio-prompted continuation; synth: phase and key
        continuity). Raises :class:`BackendError` when the stream cannot be opened.
        """

    def close(self) -> None:
        """Release the backend's resources (model weights) at server shutdown."""


def check_fragment(fragment, channels: int) -> np.ndarray:
    """Validate a backend's fragment and return it as C-contiguous float32 ``(n, channels)``.

    The server calls this on everything a backend returns, so a misbehaving backend produces
    a clear :class:`BackendError` instead of corrupt audio on the wire.
    """
    if not isinstance(fragment, np.ndarray):
        raise BackendError(f'fragment must be a numpy array, got {type(fragment).__name__}')
    if fragment.ndim != 2 or fragment.shape[1] != channels or fragment.shape[0] == 0:
        raise BackendError(
            f'fragment must have shape (n_samples > 0, {channels}), got {fragment.shape}')
    if fragment.dtype != np.float32:
        raise BackendError(f'fragment must be float32, got {fragment.dtype}')
    if not np.isfinite(fragment).all():
        raise BackendError('fragment contains NaN or infinite samples')
    return np.ascontiguousarray(np.clip(fragment, -1.0, 1.0))


BackendFactory = Callable[..., MusicBackend]

# name -> "module:attribute" (imported on first use) or a factory callable.
_REGISTRY: dict[str, Union[str, BackendFactory]] = {
    'synth': 'muse_server.backends.synth:SynthBackend',
    'musicgen': 'muse_server.backends.musicgen:MusicGenBackend',
}

_INSTALL_HINTS = {
    'musicgen': "install the extra: pip install './muse_server[musicgen]' (torch, transformers)",
}


def register_backend(name: str, factory: Union[str, BackendFactory]) -> None:
    """Make ``name`` available to :func:`create_backend` (tests register tiny backends here).

    ``factory`` is a callable taking keyword options, or a ``'module:attribute'`` string
    imported on first use.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f'backend name must be a non-empty str, got {name!r}')
    if isinstance(factory, str) and ':' not in factory:
        raise ValueError(f"backend factory string must be 'module:attribute', got {factory!r}")
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str, **options) -> MusicBackend:
    """Create the backend registered as ``name`` with keyword ``options``.

    ``name`` is a registered name or a ``'module:attribute'`` path to any factory (so a test or
    a third-party backend can be served without registering it first). Raises
    :class:`BackendError` for an unknown name, a backend whose dependencies are not installed,
    or options it rejects.
    """
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif isinstance(name, str) and ':' in name:
        factory = name
    else:
        raise BackendError(f"unknown backend {name!r}; expected one of {backend_names()} "
                           "or a 'module:attribute' path")
    if isinstance(factory, str):
        module_name, attribute = factory.split(':', 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = _INSTALL_HINTS.get(name, 'is the package installed completely?')
            raise BackendError(f'backend {name!r} cannot be imported ({exc}); {hint}') from exc
        try:
            factory = getattr(module, attribute)
        except AttributeError:
            raise BackendError(
                f'backend {name!r}: module {module_name} defines no {attribute}') from None
    try:
        backend = factory(**options)
    except TypeError as exc:
        raise BackendError(f'backend {name!r} rejected options {sorted(options)}: {exc}') from exc
    if not isinstance(backend, MusicBackend):
        raise BackendError(f'backend {name!r} factory returned {type(backend).__name__}, '
                           'not a MusicBackend')
    return backend
