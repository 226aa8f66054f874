"""A Transformer encoder layer in Relax (``tvm.relax.frontend.nn``) and two references for it.

The layer is the post-norm encoder block of BERT: Q, K and V projections, scaled dot-product
attention over ``heads``, the output projection with the residual and a layer norm, then the MLP
(expand, GELU, reduce) with the second residual and layer norm. Its sizes come from a row of
:data:`~matmul.core.workloads.MODELS` (hidden, heads, intermediate). The input holds ``batch x seq``
tokens as rows of a ``(batch * seq, hidden)`` matrix, so every projection is one 2-D matmul of
``M = batch * seq`` rows; attention splits the rows into ``(batch, heads, seq, hidden / heads)``.

Weights are random from a fixed seed (no download) and stored as PyTorch stores ``nn.Linear``
weights, ``(out, in)``, so each projection is an NT matmul. :func:`reference` runs the same layer
in float64 NumPy, :func:`torch_layer` in PyTorch eager with the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from ..core.workloads import ModelConfig, model_config, positive_int

#: Layer-norm epsilon (PyTorch's default).
EPS = 1e-5
#: Seed of the weights and the input.
SEED = 0
#: The projections, in the order of the module's parameters, with (out, in) sizes as functions of the config.
LINEARS: dict[str, Callable[[ModelConfig], tuple[int, int]]] = {
    "q": lambda c: (c.hidden, c.hidden),
    "k": lambda c: (c.hidden, c.hidden),
    "v": lambda c: (c.hidden, c.hidden),
    "o": lambda c: (c.hidden, c.hidden),
    "up": lambda c: (c.intermediate, c.hidden),
    "down": lambda c: (c.hidden, c.intermediate),
}


@dataclass(frozen=True)
class LayerSpec:
    """One encoder layer: a model row, a sequence length and a batch."""

    config: ModelConfig
    seq: int
    batch: int = 1

    def __post_init__(self) -> None:
        positive_int(self.seq, "seq")
        positive_int(self.batch, "batch")

    @property
    def tokens(self) -> int:
        return self.seq * self.batch

    @property
    def head_dim(self) -> int:
        return self.config.hidden // self.config.heads

    def label(self) -> str:
        return f"{self.config.name}-seq{self.seq}-b{self.batch}"

    def matmul_flops(self) -> int:
        """FLOPs of the layer's matmuls (projections, MLP and both attention products)."""
        c, t = self.config, self.tokens
        proj = 2 * t * c.hidden * (4 * c.hidden + 2 * c.intermediate)
        attention = 2 * 2 * self.batch * c.heads * self.seq * self.seq * self.head_dim
        return proj + attention


def layer_spec(model: str | ModelConfig, seq: int, batch: int = 1) -> LayerSpec:
    """A :class:`LayerSpec` from a model name (see ``MODELS``; an unknown name lists them) or a config."""
    return LayerSpec(model_config(model), seq, batch)


class EncoderLayer(nn.Module):
    """The encoder layer as an ``nn.Module``; ``forward`` maps ``(batch * seq, hidden)`` to the same shape."""

    def __init__(self, spec: LayerSpec):
        c = spec.config
        self.spec = spec
        for name, (out, inp) in ((n, f(c)) for n, f in LINEARS.items()):
            setattr(self, name, nn.Linear(inp, out))
        self.ln1 = nn.LayerNorm(c.hidden, eps=EPS)
        self.ln2 = nn.LayerNorm(c.hidden, eps=EPS)

    def _heads(self, t: nn.Tensor) -> nn.Tensor:
        s = self.spec
        return op.permute_dims(op.reshape(t, (s.batch, s.seq, s.config.heads, s.head_dim)), (0, 2, 1, 3))

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        s = self.spec
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = op.matmul(q, op.permute_dims(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(s.head_dim))
        context = op.matmul(op.softmax(scores, axis=-1), v)
        context = op.reshape(op.permute_dims(context, (0, 2, 1, 3)), (s.tokens, s.config.hidden))
        h = self.ln1(self.o(context) + x)
        return self.ln2(self.down(op.gelu(self.up(h))) + h)


def export(spec: LayerSpec) -> tuple[tvm.IRModule, list[str]]:
    """The layer's Relax module (function ``forward(x, *weights)``) and its weights' names, in order."""
    mod, params = EncoderLayer(spec).export_tvm(
        spec={"forward": {"x": nn.spec.Tensor((spec.tokens, spec.config.hidden), "float32")}})
    return mod, [name for name, _ in params]


def weights(spec: LayerSpec, seed: int = SEED) -> dict[str, np.ndarray]:
    """Float32 weights by parameter name: projections scaled by ``1/sqrt(in)``, layer norms near 1 and 0."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, f in LINEARS.items():
        rows, cols = f(spec.config)
        out[f"{name}.weight"] = (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype("float32")
        out[f"{name}.bias"] = (0.1 * rng.standard_normal(rows)).astype("float32")
    for name in ("ln1", "ln2"):
        out[f"{name}.weight"] = (1 + 0.1 * rng.standard_normal(spec.config.hidden)).astype("float32")
        out[f"{name}.bias"] = (0.1 * rng.standard_normal(spec.config.hidden)).astype("float32")
    return out


def inputs(spec: LayerSpec, seed: int = SEED) -> np.ndarray:
    """The layer's input: ``(batch * seq, hidden)`` float32 from a fixed seed."""
    return np.random.default_rng(seed + 1).standard_normal((spec.tokens, spec.config.hidden)).astype("float32")


_erf = np.frompyfunc(math.erf, 1, 1)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w + b


def reference(spec: LayerSpec, x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The layer in float64 NumPy: the ground truth every build is checked against."""
    s, c = spec, spec.config
    p = {k: v.astype("float64") for k, v in w.items()}
    x = x.astype("float64")

    def linear(name: str, t: np.ndarray) -> np.ndarray:
        return t @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(s.batch, s.seq, c.heads, s.head_dim).transpose(0, 2, 1, 3)

    q, k, v = heads(linear("q", x)), heads(linear("k", x)), heads(linear("v", x))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(s.head_dim)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
    context = context.transpose(0, 2, 1, 3).reshape(s.tokens, c.hidden)
    h = _layer_norm(linear("o", context) + x, p["ln1.weight"], p["ln1.bias"])
    up = linear("up", h)
    gelu = 0.5 * up * (1 + _erf(up / math.sqrt(2)).astype("float64"))
    return _layer_norm(linear("down", gelu) + h, p["ln2.weight"], p["ln2.bias"])


def tolerance(spec: LayerSpec) -> float:
    """Bound on ``max |out - reference|`` for float32 builds: grows with the longest reduction, ``sqrt(K)``.

    Outputs are layer-normed (order 1); each float32 dot product of length K errs by about
    ``sqrt(K) * 2^-24`` relative, amplified through softmax, GELU and two layer norms.
    """
    k = max(spec.config.intermediate, spec.config.hidden, spec.seq)
    return 2e-5 * math.sqrt(k) + 1e-4


def torch_layer(spec: LayerSpec, w: dict[str, np.ndarray]) -> Callable[[np.ndarray | object], object]:
    """The same layer in PyTorch eager (same weights, float32); call it on a ``torch.Tensor`` or an array.

    Raises
    ------
    ImportError
        PyTorch is not installed (the message gives the install command).
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as err:
        raise ImportError(f"PyTorch is not installed ({err}); install the extra: pip install -e '.[torch]'") from None
    s, c = spec, spec.config
    t = {k: torch.from_numpy(v) for k, v in w.items()}

    def heads(u):
        return u.reshape(s.batch, s.seq, c.heads, s.head_dim).transpose(1, 2)

    def forward(x):
        x = torch.as_tensor(x)
        with torch.inference_mode():
            q, k, v = (heads(F.linear(x, t[f"{n}.weight"], t[f"{n}.bias"])) for n in "qkv")
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(s.head_dim), dim=-1) @ v
            att = att.transpose(1, 2).reshape(s.tokens, c.hidden)
            h = F.layer_norm(F.linear(att, t["o.weight"], t["o.bias"]) + x, (c.hidden,), t["ln1.weight"],
                             t["ln1.bias"], EPS)
            mlp = F.linear(F.gelu(F.linear(h, t["up.weight"], t["up.bias"])), t["down.weight"], t["down.bias"])
            return F.layer_norm(mlp + h, (c.hidden,), t["ln2.weight"], t["ln2.bias"], EPS)

    return forward


def _gelu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """GELU with TVM's polynomial erf: the default legalization calls libm's ``erff`` once per lane."""
    def gelu(x: te.Tensor) -> te.Tensor:
        half = tvm.tirx.const(0.5, x.dtype)
        return te.compute(x.shape, lambda *i: x(*i) * (half + topi.fast_erf(x * tvm.tirx.const(0.5**0.5, x.dtype))(*i)
                                                       * half), name="gelu")
    return bb.call_te(gelu, call.args[0], primfunc_name_hint="gelu")


def lower(mod: tvm.IRModule) -> tvm.IRModule:
    """The Relax module lowered to fused TIR PrimFuncs, ready for the schedule pass.

    Transposes are fused into matmuls first (or every call transposes each weight); exp and erf become
    TVM's vectorisable polynomials (softmax through ``FastMathTransform``, GELU through its own
    legalization); then each matmul is fused with its elementwise epilogue.
    """
    return tvm.transform.Sequential([
        relax.transform.FuseTransposeMatmul(),
        relax.transform.FastMathTransform(),
        relax.transform.LegalizeOps(customize_legalize_map={"relax.nn.gelu": _gelu}),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])(mod)


__all__ = [
    "EPS",
    "LINEARS",
    "SEED",
    "EncoderLayer",
    "LayerSpec",
    "export",
    "inputs",
    "layer_spec",
    "lower",
    "reference",
    "tolerance",
    "torch_layer",
    "weights",
]
