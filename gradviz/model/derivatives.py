"""The local derivative of common backward ops, in plain notation, for the inspector.

``grad`` is the gradient flowing in; ``x`` (``self``), ``other`` and ``result``
are the forward op's input, second input and output. Values saved on the node
(a power's exponent, an add's alpha) are written in.
"""

from __future__ import annotations

from typing import Any

_FORMULAS = {
    "AddBackward0": "self: grad    other: grad · alpha",
    "AddBackward1": "self: grad",
    "SubBackward0": "self: grad    other: −grad · alpha",
    "SubBackward1": "self: grad",
    "RsubBackward1": "self: −grad · alpha",
    "MulBackward0": "self: grad · other    other: grad · self",
    "MulBackward1": "self: grad · other",
    "DivBackward0": "self: grad / other    other: −grad · self / other²",
    "DivBackward1": "self: grad / other",
    "NegBackward0": "self: −grad",
    "ExpBackward0": "self: grad · result   (result = eˣ)",
    "LogBackward0": "self: grad / x",
    "SinBackward0": "self: grad · cos(x)",
    "CosBackward0": "self: −grad · sin(x)",
    "SqrtBackward0": "self: grad / (2 · √x)   (infinite at x = 0)",
    "TanhBackward0": "self: grad · (1 − result²)",
    "SigmoidBackward0": "self: grad · result · (1 − result)",
    "ReluBackward0": "self: grad · [result > 0]",
    "SumBackward0": "self: grad, broadcast to x's shape",
    "SumBackward1": "self: grad, broadcast back over the summed dims",
    "MeanBackward0": "self: grad / numel(x), broadcast to x's shape",
    "MeanBackward1": "self: grad / (size of the averaged dims), broadcast back",
    "MmBackward0": "self: grad · mat2ᵀ    mat2: selfᵀ · grad",
    "AddmmBackward0": "self: grad (summed to bias shape)    mat1: grad · mat2ᵀ    "
                      "mat2: mat1ᵀ · grad",
    "TBackward0": "self: gradᵀ",
    "ViewBackward0": "self: grad reshaped to x's shape",
    "ReshapeAliasBackward0": "self: grad reshaped to x's shape",
    "UnsafeViewBackward0": "self: grad reshaped to x's shape",
    "ConvolutionBackward0": "input: grad convolved back with weight (transposed conv)    "
                            "weight: input ⋆ grad    bias: grad summed over batch and space",
    "NativeBatchNormBackward0": "input, weight, bias: through the normalisation with the "
                                "saved batch mean and 1/std",
    "MaxPool2DWithIndicesBackward0": "self: grad routed to the position of each max",
    "MseLossBackward0": "self: 2 · (x − target) · grad / n   (mean reduction)",
    "NllLossBackward0": "self: −grad at each target class / n",
    "LogSoftmaxBackward0": "self: grad − softmax(x) · Σ grad",
    "UnsafeSplitBackward0": "self: the pieces' gradients concatenated",
    "CloneBackward0": "self: grad",
    "AccumulateGrad": "leaf: .grad += grad",
}


def local_derivative(op: str, args: dict[str, Any] | None = None) -> str | None:
    """What ``op`` does to the gradient, or None for an op not in the table."""
    args = args or {}
    if op == "PowBackward0" and isinstance(args.get("exponent"), (int, float)):
        exponent = args["exponent"]
        return f"self: grad · {_number(exponent)} · x^{_number(exponent - 1)}"
    if op == "PowBackward0":
        return "self: grad · exponent · x^(exponent − 1)"
    if op == "PowBackward1":
        return "self: grad · exponent · x^(exponent − 1)    exponent: grad · xᵉ · ln x"
    formula = _FORMULAS.get(op)
    if formula and "alpha" in formula and "alpha" in args:
        alpha = args["alpha"]
        formula = formula.replace(" · alpha", "" if alpha == 1 else f" · {_number(alpha)}")
    return formula


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
