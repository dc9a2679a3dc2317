"""Database URLs given on the command line (an Optuna ``--storage``, a PostgreSQL MLflow backend): shown without their
password, and checked before any work starts.

A password should not be in a URL at all: PostgreSQL clients read it from ``PGPASSWORD`` or a ``~/.pgpass`` file
(mode 0600), so ``postgresql://user@host:5432/db`` is enough. When a URL does carry one, :func:`redact` is how every
message, log line and tracked value shows it (``postgresql://user:***@host:5432/db``).
"""

from __future__ import annotations

CONNECT_TIMEOUT_S = 5
DRIVER_HINT = {"postgresql": "pip install 'psycopg[binary]' (or the project's extra: pip install -e '.[postgres]')"}


class DatabaseError(RuntimeError):
    """A database URL that cannot be used (the message names the URL without its password)."""


def _split(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme, user, password, rest after the '@')`` of ``scheme://user:password@rest``; the password may hold any
    character (a user may type ``#`` or ``@`` unescaped), so it runs to the last ``@``."""
    if "://" not in url:
        return None
    scheme, tail = url.split("://", 1)
    at = tail.rfind("@")
    if at < 0:
        return None
    userinfo, rest = tail[:at], tail[at + 1:]
    user, sep, password = userinfo.partition(":")
    return scheme, user, password if sep else None, rest


def password_of(url: str) -> str | None:
    parts = _split(url)
    return parts[2] if parts else None


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged when it has none)."""
    parts = _split(url)
    if parts is None or parts[2] is None:
        return url
    scheme, user, _, rest = parts
    return f"{scheme}://{user}:***@{rest}"


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with the URL's password, as typed or decoded, replaced by ``***``."""
    from urllib.parse import unquote

    secret = password_of(url)
    for form in {secret, unquote(secret)} if secret else ():
        text = text.replace(form, "***")
    return text


def check_database(url: str, what: str = "--storage") -> str:
    """Connect once (``SELECT 1``, ``CONNECT_TIMEOUT_S`` to connect) and say so; sqlite URLs are left to the caller.

    Returns:
        ``"<what> <redacted url> (PostgreSQL answers)"``.

    Raises:
        DatabaseError: one line naming ``what`` and the redacted URL: the driver is not installed, no server
        answers, the credentials are refused, or the database does not exist.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_backend_name()
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        hint = DRIVER_HINT.get(url.split("://", 1)[0].split("+", 1)[0].lower(), "install it")
        raise DatabaseError(f"{what} {shown}: its database driver is not installed ({exc}); {hint}") from None
    except Exception as exc:  # noqa: BLE001 -- sqlalchemy's errors for a bad URL or an unknown driver vary
        raise DatabaseError(f"{what} {shown}: not a usable database URL ({type(exc).__name__}: "
                            f"{scrub(str(exc), url)})") from None
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if dialect == "postgresql" else {}
    engine = create_engine(parsed, connect_args=args, poolclass=_null_pool())
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 -- classified below from the driver's message
        raise DatabaseError(f"{what} {shown}: {_reason(exc, parsed, url)}") from None
    finally:
        engine.dispose()
    return f"{what} {shown} ({'PostgreSQL' if dialect == 'postgresql' else dialect} answers)"


def _null_pool() -> type:
    from sqlalchemy.pool import NullPool

    return NullPool


def _reason(exc: BaseException, parsed: object, url: str) -> str:
    """One line saying why a connection failed, without the password."""
    message = scrub(str(getattr(exc, "orig", None) or exc), url)
    lower = message.lower()
    query = getattr(parsed, "query", None) or {}
    host = getattr(parsed, "host", None) or query.get("host") or "localhost"  # ?host=/run/postgresql: a socket
    where = f"{host}:{getattr(parsed, 'port', None) or query.get('port') or 5432}"
    user = getattr(parsed, "username", None) or "(default user)"
    database = getattr(parsed, "database", None) or "(default database)"
    if "password authentication failed" in lower or "no password supplied" in lower or \
            f'role "{user}" does not exist' in lower:
        return (f"the server at {where} refused the credentials of user '{user}' (give the password in PGPASSWORD or "
                f"~/.pgpass rather than in the URL)")
    if f'database "{database}" does not exist' in lower:
        return f"database '{database}' does not exist on the server at {where}"
    if "connection refused" in lower or "timeout expired" in lower or "could not translate host" in lower or \
            "no route to host" in lower or "could not connect" in lower:
        return f"no database server answers at {where}"
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return f"cannot connect: {first[:300]}"
