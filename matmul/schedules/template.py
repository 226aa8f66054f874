"""The rule-based schedule as a parametrised template: its candidate configs and their record files.

:func:`~matmul.schedules.rules.apply_config` schedules any legal
:class:`~matmul.schedules.rules.RuleConfig` (TM, TN, TK, register rows, j-pack, unroll,
B packing, loop order), so the rule template has a search space of its own.
:func:`candidate_configs` enumerates a deterministic slice of it for one
shape: the rules' own config, every single-knob move away from it (each other
register tile, TK, TN, TM, unroll step, B packing, loop order; the knobs that
depend on the moved one are re-derived by the rules), and seeded pairs of such
moves. The learned variant ranks exactly this set, so its pick is always a
config the template can apply.

:func:`matmul.measure.sweep.sweep_workload` measures every candidate of one workload against the
rules' config, ABBA-interleaved, and keeps the results as *template tuning
records* in ``<tuning root>/<profile>/template/<workload key>.json`` beside
the MetaSchedule database: each record holds the config, both medians and
the speedup over the rules. The file is rewritten atomically after every
measured config, so a killed sweep resumes where it stopped, and a file that
does not parse is reported and never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

from ..core.hardware import HostFacts, host_facts
from ..core.store import profile_dir, workload_key
from ..core.workloads import MatmulShape
from .rules import RuleConfig, RuleError, decide, vector_registers

#: Version of the template record files; a file of another version is refused.
SCHEMA = 1
#: Sub-folder of a profile's tuning folder that holds the template records.
TEMPLATE_DIR = "template"
#: Candidates per shape unless told otherwise.
CONFIGS_DEFAULT = 28
#: The knobs of a config, in file and table order.
KNOBS = tuple(f.name for f in dataclasses.fields(RuleConfig))
_TK_CHOICES = (64, 128, 192, 256, 384, 512, 768)
_UNROLL_CHOICES = (1, 2, 4, 8)


class TemplateError(RuntimeError):
    """A template record file is corrupt, of another version or of another profile."""


#: Knobs added after :data:`SCHEMA` 1's records were written, with the value a record without them means.
#: A name leaves them out at that value, so the names of older configs do not change.
LATER_KNOBS: dict[str, Any] = {"kparts": 1}


def config_key(config: RuleConfig) -> tuple:
    return tuple(getattr(config, k) for k in KNOBS)


def config_name(config: RuleConfig) -> str:
    """The variant name that schedules ``config``: ``rule_based[tm=...,...]``."""
    return "rule_based[" + ",".join(f"{k}={getattr(config, k)}" for k in KNOBS
                                    if LATER_KNOBS.get(k, ...) != getattr(config, k)) + "]"


def config_from_dict(d: dict[str, Any]) -> RuleConfig:
    """A checked config from a record's ``config`` mapping (RuleError if illegal)."""
    missing = [k for k in KNOBS if k not in d and k not in LATER_KNOBS]
    if missing:
        raise RuleError(f"config lacks the knob(s) {', '.join(missing)}; knobs are: {', '.join(KNOBS)}")
    return RuleConfig(**{k: d.get(k, LATER_KNOBS.get(k)) for k in KNOBS}).check()


# --------------------------------------------------------------------------- the candidate set
def _register_tiles(shape: MatmulShape, lanes: int, regs: int) -> list[tuple[int, int]]:
    """(mr, jpack) tiles that fit the registers: per vector count, the tallest tile and a 4-row one."""
    tiles = []
    for nv in range(1, 5):
        top = min(8, shape.M, (regs - nv - 1) // nv)
        for mr in sorted({top, min(4, top)}, reverse=True):
            if mr >= 1:
                tiles.append((mr, nv * lanes))
    return tiles


def _moves(shape: MatmulShape, base: RuleConfig, lanes: int, regs: int) -> list[dict[str, Any]]:
    """Single-knob override sets away from ``base``."""
    moves: list[dict[str, Any]] = []
    for mr, jp in _register_tiles(shape, lanes, regs):
        if (mr, jp) != (base.mr, base.jpack):
            moves.append({"mr": mr, "jpack": jp})
    for tk in _TK_CHOICES:
        if tk != base.tk and tk <= shape.K and shape.K % tk == 0 and tk % lanes == 0:
            moves.append({"tk": tk})
    mp, np_, _ = base.tiled(shape)
    for f in (1, 2, 4, 8):
        tn = base.jpack * f
        if tn != base.tn and tn <= np_ and np_ % tn == 0:
            moves.append({"tn": tn})
    for div in (1, 2, 4, 8):
        tm = -(-mp // div // base.mr) * base.mr
        if tm != base.tm and tm >= base.mr and mp % tm == 0:
            moves.append({"tm": tm})
    for u in _UNROLL_CHOICES:
        if u != base.unroll and base.tk % u == 0:
            moves.append({"unroll": u})
    moves.append({"pack_b": not base.pack_b})
    moves.append({"order": "ifirst" if base.order == "jfirst" else "jfirst"})
    return moves


def candidate_configs(
    shape: MatmulShape,
    facts: HostFacts,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    limit: int = CONFIGS_DEFAULT,
) -> list[RuleConfig]:
    """A deterministic, legal set of template configs for one shape; the rules' own config first.

    Up to ``limit`` configs: the rules' config, then single-knob moves, then
    pairs of moves drawn with a seed derived from the shape. Each set of
    overrides goes through :func:`~matmul.schedules.rules.decide`, so the knobs a move
    leaves free are chosen by the rules for the moved ones.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    base = decide(shape, facts, dtype=dtype, layout=layout).config
    regs = vector_registers(facts)
    moves = _moves(shape, base, base.vector, regs)
    rng = random.Random(f"{shape.M}x{shape.K}x{shape.N}-{dtype}-{layout}")
    pairs = [{**a, **b} for n, a in enumerate(moves) for b in moves[n + 1:] if not set(a) & set(b)]
    rng.shuffle(pairs)
    out: dict[tuple, RuleConfig] = {config_key(base): base}
    for overrides in moves + pairs:
        if len(out) >= limit:
            break
        try:
            cfg = decide(shape, facts, dtype=dtype, layout=layout, overrides=overrides).config
        except RuleError:
            continue  # e.g. a pinned TN that the pinned j-pack does not divide
        out.setdefault(config_key(cfg), cfg)
    return list(out.values())


# --------------------------------------------------------------------------- record files
def template_dir(facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    return profile_dir(facts, root) / TEMPLATE_DIR


def record_path(shape: MatmulShape, dtype: str = "float32", layout: str = "NN", *,
                facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    return template_dir(facts, root) / f"{workload_key(shape, dtype, layout)}.json"


def read_records(path: Path, facts: HostFacts | None = None) -> dict[str, Any]:
    """A template record file, checked. ``{}`` if it does not exist.

    Raises
    ------
    TemplateError
        The file does not parse, is of another schema, or was measured on
        another profile. The file is left as it is.
    """
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TemplateError(f"template record file {path} is corrupt ({err}); it was left untouched: "
                            "repair or move it away, then sweep again") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("records"), list):
        raise TemplateError(f"template record file {path} is not a schema-{SCHEMA} record file; "
                            "it was left untouched: move it away, then sweep again")
    profile = (facts or host_facts()).profile
    if data.get("profile") != profile:
        raise TemplateError(f"{path} was measured on profile {data.get('profile')!r}, not {profile!r}; "
                            "records from one CPU must never serve another")
    for n, rec in enumerate(data["records"]):
        try:
            config_from_dict(rec["config"])
            if "rule_config" in rec:  # the rules' config the speedup is over (records of later sweeps)
                config_from_dict(rec["rule_config"])
            float(rec["speedup"])
        except (KeyError, TypeError, ValueError) as err:
            raise TemplateError(f"record {n} of {path} is malformed ({err}); the file was left untouched") from None
    return data


def record_basis(rec: dict, recs: list[dict]) -> tuple:
    """The key of the rules' config a record's speedup is over: its ``rule_config``, else the first record's
    config (sweeps before ``rule_config`` measured the rules' config first, against itself)."""
    return config_key(config_from_dict(rec.get("rule_config") or recs[0]["config"]))


def workload_files(facts: HostFacts | None = None, root: str | Path | None = None) -> list[Path]:
    d = template_dir(facts, root)
    return sorted(d.glob("*.json")) if d.is_dir() else []


__all__ = [
    "CONFIGS_DEFAULT",
    "KNOBS",
    "TEMPLATE_DIR",
    "TemplateError",
    "candidate_configs",
    "config_from_dict",
    "config_key",
    "config_name",
    "read_records",
    "record_basis",
    "record_path",
    "template_dir",
    "workload_files",
]
