"""Which names may hold a secret: one rule for everything steplog keeps (environment
variables, command-line arguments, URL query parameters), so that a value named like a
token, key or password never reaches the store. False alarms are cheap (a masked value);
a miss is a leaked credential."""

from __future__ import annotations

import functools
import re

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SECRET_WORDS = frozenset({"token", "secret", "secrets", "password", "passwd", "passphrase", "pass", "pw",
                           "credential", "credentials", "creds", "auth", "authorization", "apikey", "key",
                           "signature", "sig", "cookie", "dsn", "privatekey", "jwt", "session", "sessionid",
                           "jsessionid", "sid"})
_SECRET_PARTS = ("password", "passwd", "secret", "apikey", "credential", "privatekey", "accesskey", "authtoken",
                 "accesstoken", "connectionstring")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a variable, argument or parameter named ``name`` may hold a secret: a
    word token, secret, password, pass, pw, credential, auth, key, signature, sig,
    cookie, dsn, jwt or session (``GITHUB_TOKEN``, ``--api-key``, ``apiKey``,
    ``X-Amz-Signature``, ``jsessionid``), or password, secret, apikey, credential,
    privatekey, accesskey inside a word. Counts (``--max-tokens``) and ``--tokenizer``
    are not secrets."""
    words = {w.lower() for w in _WORD.findall(name)}
    if words & _SECRET_WORDS:
        return True
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    return any(part in flat for part in _SECRET_PARTS)
