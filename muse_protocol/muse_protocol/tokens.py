"""Where the shared secret between bridge and server comes from: an argument, a file, or the
environment. Used by both ends, so the rules cannot differ."""

from __future__ import annotations

import os

TOKEN_ENV = 'MUSE_SERVER_TOKEN'


def resolve_token(token: str | None, token_file: str | None, env=None) -> str | None:
    """``token``, else the first line of ``token_file``, else ``$MUSE_SERVER_TOKEN``, else None.

    Raises ``ValueError`` naming the file when it is given but unreadable or empty.
    """
    if token:
        return token
    if token_file:
        try:
            with open(token_file, encoding='utf-8') as handle:
                text = handle.read().strip()
        except OSError as exc:
            raise ValueError(f'token file {token_file}: cannot read it ({exc.strerror})') from None
        if not text:
            raise ValueError(f'token file {token_file} is empty; expected the token on one line')
        return text
    return (env if env is not None else os.environ).get(TOKEN_ENV) or None
