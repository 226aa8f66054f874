"""The rule-based schedule as a parametrised template, and its measured sweep.

:func:`~matmul.rules.apply_config` schedules any legal
:class:`~matmul.rules.RuleConfig` (TM, TN, TK, register rows, j-pack, unroll,
B packing, loop order), so the rule template has a search space of its own.
:func:`candidate_configs` enumerates a deterministic slice of it for one
shape: the rules' own config, every single-knob move away from it (each other
register tile, TK, TN, TM, unroll step, B packing, loop order; the knobs that
depend on the moved one are re-derived by the rules), and seeded pairs of such
moves. The learned variant ranks exactly this set, so its pick is always a
config the template can apply.

:func:`sweep_workload` measures every candidate of one workload against the
rules' config, ABBA-interleaved, and keeps the results as *template tuning
records* in ``<tuning root>/<profile>/template/<workload key>.json`` beside
the MetaSchedule database: each record holds the config, both medians and
the speedup over the rules. The file is rewritten atomically after every
measured config, so a killed sweep resumes where it stopped, and a file that
does not parse is reported and never overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .hardware import HostFacts, host_facts
from .kernel import check_dtype, check_layout
from .rules import RuleConfig, RuleError, decide, vector_registers
from .workloads import MatmulShape, Workload

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


def config_key(config: RuleConfig) -> tuple:
    return tuple(getattr(config, k) for k in KNOBS)


def config_name(config: RuleConfig) -> str:
    """The variant name that schedules ``config``: ``rule_based[tm=...,...]``."""
    return "rule_based[" + ",".join(f"{k}={getattr(config, k)}" for k in KNOBS) + "]"


def config_from_dict(d: dict[str, Any]) -> RuleConfig:
    """A checked config from a record's ``config`` mapping (RuleError if illegal)."""
    missing = [k for k in KNOBS if k not in d]
    if missing:
        raise RuleError(f"config lacks the knob(s) {', '.join(missing)}; knobs are: {', '.join(KNOBS)}")
    return RuleConfig(**{k: d[k] for k in KNOBS}).check()


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
    mp, np_, _ = base.padded(shape)
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
    overrides goes through :func:`~matmul.rules.decide`, so the knobs a move
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
    from .tuning import profile_dir

    return profile_dir(facts, root) / TEMPLATE_DIR


def record_path(shape: MatmulShape, dtype: str = "float32", layout: str = "NN", *,
                facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    from .tuning import workload_key

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
            float(rec["speedup"])
        except (KeyError, TypeError, ValueError) as err:
            raise TemplateError(f"record {n} of {path} is malformed ({err}); the file was left untouched") from None
    return data


def workload_files(facts: HostFacts | None = None, root: str | Path | None = None) -> list[Path]:
    d = template_dir(facts, root)
    return sorted(d.glob("*.json")) if d.is_dir() else []


# --------------------------------------------------------------------------- the sweep
@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    shape: MatmulShape
    path: Path
    measured: int  # configs measured in this run
    total: int  # configs on file
    best_speedup: float


def sweep_workload(
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    configs: int = CONFIGS_DEFAULT,
    calls: int = 10,
    facts: HostFacts | None = None,
    root: str | Path | None = None,
) -> SweepOutcome:
    """Measure the workload's candidate configs against the rules' config.

    Each candidate is built, verified against the float64 reference, and
    timed ABBA beside the rules' config (at least ``calls`` calls per block,
    more for short kernels so that a block lasts :data:`~matmul.paired.BLOCK_S`); its record
    holds both medians and the speedup. Configs already on file are not
    measured again. The rules' config is measured against itself too: its
    speedup shows the noise of the measurement.
    """
    from .candidates import prepare
    from .paired import BLOCK_S, calls_for, time_pair
    from .report import atomic_write
    from .tuning import _target_key

    facts = facts or host_facts()
    check_dtype(dtype)
    check_layout(layout)
    path = record_path(shape, dtype, layout, facts=facts, root=root)
    data = read_records(path, facts) or {
        "schema": SCHEMA, "profile": facts.profile, "target": str(facts.target()),
        "workload": {"M": shape.M, "K": shape.K, "N": shape.N, "dtype": dtype, "layout": layout},
        "records": [],
    }
    done = {config_key(config_from_dict(r["config"])) for r in data["records"]}
    todo = [c for c in candidate_configs(shape, facts, dtype=dtype, layout=layout, limit=configs)
            if config_key(c) not in done]
    measured = 0
    if todo:
        rule = prepare("rule_based", shape, layout=layout, dtype=dtype, facts=facts)
        calls = calls_for(rule, calls, BLOCK_S)
        for cfg in todo:
            cand = prepare(config_name(cfg), shape, layout=layout, dtype=dtype, facts=facts)
            ta, tb = time_pair(rule, cand, blocks=2, calls=calls)
            rule_s, cfg_s = statistics.median(ta), statistics.median(tb)
            data["records"].append({
                "config": cfg.as_dict(), "rule_s": rule_s, "config_s": cfg_s, "speedup": rule_s / cfg_s,
                "calls": calls, "blocks": "ABBA", "target": list(_target_key(facts.target())),
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            })
            atomic_write(path, json.dumps(data, indent=1) + "\n")  # after each config: a kill loses one
            measured += 1
    best = max((float(r["speedup"]) for r in data["records"]), default=float("nan"))
    return SweepOutcome(shape, path, measured, len(data["records"]), best)


def sweep(
    loads: Sequence[Workload] | Iterable[Workload],
    *,
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> list[SweepOutcome]:
    loads = list(loads)
    if not loads:
        raise ValueError("no workloads to sweep")
    out = []
    for n, w in enumerate(loads, 1):
        res = sweep_workload(w.shape, **kwargs)
        out.append(res)
        if progress:
            progress(f"[{n}/{len(loads)}] {w.id}: {res.measured} measured now, {res.total} on file, "
                     f"best {res.best_speedup:.3f}x the rules' config")
    return out


__all__ = [
    "CONFIGS_DEFAULT",
    "KNOBS",
    "SweepOutcome",
    "TemplateError",
    "candidate_configs",
    "config_from_dict",
    "config_key",
    "config_name",
    "read_records",
    "record_path",
    "sweep",
    "sweep_workload",
    "template_dir",
    "workload_files",
]
