"""Music generation backends of the server: the contract (``base``) and its implementations
(``synth``: procedural, no dependencies; ``musicgen``: transformers' MusicGen), imported lazily
by :func:`create_backend`."""

from muse_server.backends.base import (BackendError, MusicBackend, MusicStream, PromptSpec,
                                             backend_names, check_fragment, create_backend,
                                             register_backend)

__all__ = ['BackendError', 'MusicBackend', 'MusicStream', 'PromptSpec', 'backend_names',
           'check_fragment', 'create_backend', 'register_backend']
