"""File helpers: atomic writes, so that a crash never leaves a half-written output behind, and the check
that a run's directory is resumed with the settings it was made with."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary file keeps the target's suffix, so writers that pick a format from the
    extension (imageio, trimesh) behave as for the real name. On any exception the temporary
    file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix,
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def setting_changes(recorded: Mapping, current: Mapping, ignore: Iterable[str] = (),
                    defaults: Mapping | None = None) -> str:
    """Where ``current`` settings differ from those ``recorded`` with an earlier run, for refusing to
    resume or reuse its directory: ``"name: old there, new now"`` per setting, comma-separated, or
    ``""`` when nothing differs. Names in ``ignore`` may change; a name missing from ``recorded``
    takes its value from ``defaults`` (an option added after the run started ran with its default).
    """
    defaults, ignore = defaults or {}, set(ignore)
    changed = sorted(k for k in current if k not in ignore and recorded.get(k, defaults.get(k)) != current[k])
    return ", ".join(f"{k}: {recorded.get(k, defaults.get(k))!r} there, {current[k]!r} now" for k in changed)


def default_cache_dir() -> Path:
    """The cache directory: ``$VLNCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/vlnce``, else ``~/.cache/vlnce``."""
    env = os.environ.get("VLNCE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vlnce"


def save_png(img, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG, atomically."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, img, extension=".png")
    return Path(path)
