"""Where the suite's files live, how they are written, and where they came from.

* Atomic writes: a file is either its old or its new content, never half of
  either, and a replaced file keeps its permissions (a new one gets the
  umask's), so a shipped database stays readable after ``prune``.
* Provenance: the commit and the UTC time stamped into every file the suite
  writes (evidence, datasets, models, sweeps).
* The per-CPU-profile folders of the tuning root and the key of one
  workload inside them, shared by the MetaSchedule database, the rule
  template's records and the learned model's data.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import tvm

from .hardware import HardwareError, HostFacts, host_facts
from .kernel import ALL_DTYPES, check_dtype, check_layout
from .workloads import MatmulShape

#: Environment variable naming the folder that holds the per-profile tuning databases.
ROOT_ENV = "MATMUL_TUNING_ROOT"
#: The repository (or installed project) folder that holds ``tuning_db/``, ``models/`` and ``evidence/``.
PROJECT_DIR = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- atomic files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The mode a file written at ``path`` should get: the old file's, else the umask's."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def atomic_write(path: str | Path, text: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file.

    The new file keeps the mode of the file it replaces (a new file: the
    umask's), not ``mkstemp``'s owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` over ``dst`` so that ``dst`` is always either old or new, never half."""
    atomic_write(dst, Path(src).read_bytes())


# --------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def commit() -> str:
    """The short git commit of the project, or ``"unknown"`` outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=PROJECT_DIR)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict[str, str]:
    """``{"commit": ..., "date": ...}`` for a file about to be written."""
    return {"commit": commit(), "date": utc_now()}


# --------------------------------------------------------------------------- tuning folders
def default_root() -> Path:
    """``$MATMUL_TUNING_ROOT``, else ``tuning_db/`` of the project (the shipped one)."""
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else PROJECT_DIR / "tuning_db"


def profile_dir(facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    """The tuning folder of one CPU profile."""
    return Path(root or default_root()) / (facts or host_facts()).profile


#: The file in a profile folder that holds the facts of the machine its records were measured on.
FACTS_FILE = "facts.json"


def write_profile_facts(facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    """Save the measuring machine's facts beside its records (once; the same profile keeps the first machine's).

    Records of other profiles are only usable by a cross-profile model when their machine is known, so every
    command that measures into a profile folder calls this.
    """
    facts = facts or host_facts()
    path = profile_dir(facts, root) / FACTS_FILE
    if not path.exists():
        d = facts.as_dict()
        d.pop("target_overridden", None)
        atomic_write(path, json.dumps({**d, **provenance()}, indent=1) + "\n")
    return path


def read_profile_facts(pdir: str | Path) -> HostFacts:
    """The facts saved in a profile folder (see :func:`write_profile_facts`).

    Raises
    ------
    HardwareError
        No facts file, one that does not parse, or one for another profile than the folder's name.
    """
    path = Path(pdir) / FACTS_FILE
    if not path.is_file():
        raise HardwareError(f"{path} is missing: the machine the records of {Path(pdir).name} were measured on "
                            "is unknown (it is written by `python -m matmul tune` and `ml sweep`)")
    try:
        facts = HostFacts.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError, HardwareError) as err:
        raise HardwareError(f"{path} is corrupt ({err}); it is left as it is") from None
    if facts.profile != Path(pdir).name:
        raise HardwareError(f"{path} describes profile {facts.profile}, not the folder's {Path(pdir).name}")
    return facts


def workload_key(shape: MatmulShape, dtype: str = "float32", layout: str = "NN") -> str:
    """A file-name-safe key for one workload, e.g. ``NN-float32-M128-K768-N768``."""
    return f"{check_layout(layout)}-{check_dtype(dtype, ALL_DTYPES)}-M{shape.M}-K{shape.K}-N{shape.N}"


def target_key(target: tvm.target.Target) -> tuple:
    """What must match for a record measured on one target to serve another: kind, mcpu, cores, and every
    other attribute that changes the code (``mattr``, ...)."""
    attrs = target.attrs
    extra = tuple(sorted((str(k), str(v)) for k, v in attrs.items() if k not in ("kind", "mcpu", "num-cores", "keys",
                                                                                  "tag")))
    return (str(target.kind.name), str(attrs.get("mcpu", "")), int(attrs.get("num-cores", 0)), *extra)


__all__ = [
    "FACTS_FILE", "PROJECT_DIR", "ROOT_ENV", "atomic_copy", "atomic_write", "commit", "default_root", "profile_dir",
    "provenance", "read_profile_facts", "target_key", "utc_now", "workload_key", "write_profile_facts",
]
