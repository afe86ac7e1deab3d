#!/usr/bin/python3
"""Writes the PyTorch reference fixtures of the parity test (tools/parity/parity.test.ts).

Run from anywhere, with a Python that has torch (Debian's python3-torch works):

    /usr/bin/python3 tools/parity/generate.py

Everything is computed in float64 from weights and inputs that are exactly representable in
float32, so our float32 TF.js models start from the very same numbers. The models are written in
PyTorch's functional API, mirroring @regstack/models layer by layer (NCHW inside, our NHWC/HWIO
layout and variable names in the fixture), and every regulariser mirrors the plugin's documented
objective (and, for RCAD, the reference script train_maxent.py). Mixup's λ and permutation come
from our own seeded generator (tools/parity/mixup-draws.ts, run through tsx), because PyTorch
cannot replay it.
"""
import json
import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(HERE, "fixtures")

BATCH_SIZE = 8
NUM_CLASSES = 5
# PyTorch's BatchNorm2d defaults, which @regstack/models uses too.
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5


# ─── Tensors in our layout ─────────────────────────────────────────────────────────────────────


def as_float32_exact(tensor):
    """Rounds to the nearest float32 and back, so TF.js's float32 copy holds exactly these values."""
    return tensor.float().double()


def encode(tensor, digits):
    flat = tensor.detach().reshape(-1).tolist()
    return {"shape": list(tensor.shape), "values": [float(f"{value:.{digits}g}") for value in flat]}


def encode_exact(tensor):
    # 9 significant digits round-trip any float32.
    return encode(tensor, 9)


def encode_reference(tensor):
    # 10 digits: a relative rounding error of at most 5e-10, far below what float32 can reach.
    return encode(tensor, 10)


# ─── The models, mirroring @regstack/models ───────────────────────────────────────────────────


class Spec:
    """A model's variables in our creation order, with the geometry the forward pass needs."""

    def __init__(self):
        self.shapes = {}  # name -> shape in our layout (conv HWIO, linear [in, out])
        self.trainable = []
        self.running = []

    def convolution(self, name, size, in_channels, out_channels):
        self.shapes[f"{name}.weight"] = [size, size, in_channels, out_channels]
        self.trainable.append(f"{name}.weight")

    def batch_norm(self, name, channels):
        for suffix in ("weight", "bias"):
            self.shapes[f"{name}.{suffix}"] = [channels]
            self.trainable.append(f"{name}.{suffix}")
        for suffix in ("running_mean", "running_var"):
            self.shapes[f"{name}.{suffix}"] = [channels]
            self.running.append(f"{name}.{suffix}")

    def linear(self, name, in_features, out_features):
        self.shapes[f"{name}.weight"] = [in_features, out_features]
        self.shapes[f"{name}.bias"] = [out_features]
        self.trainable += [f"{name}.weight", f"{name}.bias"]


def conv(x, weights, name, stride, padding):
    # Our weights are HWIO; PyTorch's conv2d wants OIHW. PyTorch pads symmetrically, as our
    # `convolve` does (TF.js 'same' would not, for stride 2 on even sizes).
    return F.conv2d(x, weights[f"{name}.weight"].permute(3, 2, 0, 1), stride=stride, padding=padding)


def batch_norm(x, weights, name, mode):
    gamma, beta = weights[f"{name}.weight"], weights[f"{name}.bias"]
    mean, variance = weights[f"{name}.running_mean"], weights[f"{name}.running_var"]
    if mode == "train":
        # Normalises with the biased batch variance, updates running_var with the unbiased one.
        return F.batch_norm(x, mean, variance, gamma, beta, training=True, momentum=BN_MOMENTUM, eps=BN_EPSILON)
    if mode == "frozen-stats":
        # Batch statistics without running statistics: nothing is updated (as the reference's RCAD passes).
        return F.batch_norm(x, None, None, gamma, beta, training=True, momentum=BN_MOMENTUM, eps=BN_EPSILON)
    return F.batch_norm(x, mean, variance, gamma, beta, training=False, momentum=BN_MOMENTUM, eps=BN_EPSILON)


def linear(x, weights, name):
    return x @ weights[f"{name}.weight"] + weights[f"{name}.bias"]


def normalize_inputs(inputs, options):
    # Raw NHWC pixels in [0, 1] -> normalised NCHW: the model owns its normalisation, as ours does.
    mean = torch.tensor(options["mean"])
    std = torch.tensor(options["std"])
    return ((inputs - mean) / std).permute(0, 3, 1, 2)


class SmallCnn:
    """smallCnn: two stages of [conv3x3 (no bias) - BN - ReLU] x2 + max-pool 2x2, then linear."""

    def __init__(self, options):
        self.options = options
        height, width_pixels, channels = options["inputShape"]
        width = options["width"]
        self.spec = Spec()
        in_channels = channels
        for stage, out_channels in enumerate([width, 2 * width]):
            for index in (1, 2):
                self.spec.convolution(f"block{stage + 1}.conv{index}", 3, in_channels, out_channels)
                self.spec.batch_norm(f"block{stage + 1}.bn{index}", out_channels)
                in_channels = out_channels
        self.feature_size = (height // 2 // 2) * (width_pixels // 2 // 2) * in_channels
        self.spec.linear("linear", self.feature_size, options["numClasses"])

    def forward(self, weights, inputs, mode):
        x = normalize_inputs(inputs, self.options)
        for stage in (1, 2):
            for index in (1, 2):
                x = conv(x, weights, f"block{stage}.conv{index}", 1, 1)
                x = F.relu(batch_norm(x, weights, f"block{stage}.bn{index}", mode))
            x = F.max_pool2d(x, 2, 2)
        # Our features flatten the NHWC map: channels vary fastest.
        features = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return linear(features, weights, "linear"), features


class ResNet18:
    """resnet18 (CIFAR variant): 3x3 stem, BasicBlocks [2,2,2,2], 1x1 conv + BN shortcuts, GAP, linear."""

    def __init__(self, options):
        self.options = options
        width = options["width"]
        self.spec = Spec()
        self.spec.convolution("conv1", 3, options["inputShape"][2], width)
        self.spec.batch_norm("bn1", width)
        self.blocks = []
        in_channels = width
        for stage, multiplier in enumerate([1, 2, 4, 8]):
            out_channels = width * multiplier
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                prefix = f"layer{stage + 1}.{index}"
                self.spec.convolution(f"{prefix}.conv1", 3, in_channels, out_channels)
                self.spec.batch_norm(f"{prefix}.bn1", out_channels)
                self.spec.convolution(f"{prefix}.conv2", 3, out_channels, out_channels)
                self.spec.batch_norm(f"{prefix}.bn2", out_channels)
                shortcut = stride != 1 or in_channels != out_channels
                if shortcut:
                    self.spec.convolution(f"{prefix}.shortcut.0", 1, in_channels, out_channels)
                    self.spec.batch_norm(f"{prefix}.shortcut.1", out_channels)
                self.blocks.append((prefix, stride, shortcut))
                in_channels = out_channels
        self.feature_size = in_channels
        self.spec.linear("linear", in_channels, options["numClasses"])

    def forward(self, weights, inputs, mode):
        x = normalize_inputs(inputs, self.options)
        x = F.relu(batch_norm(conv(x, weights, "conv1", 1, 1), weights, "bn1", mode))
        for prefix, stride, shortcut in self.blocks:
            residual = (
                batch_norm(conv(x, weights, f"{prefix}.shortcut.0", stride, 0), weights, f"{prefix}.shortcut.1", mode)
                if shortcut
                else x
            )
            out = F.relu(batch_norm(conv(x, weights, f"{prefix}.conv1", stride, 1), weights, f"{prefix}.bn1", mode))
            out = batch_norm(conv(out, weights, f"{prefix}.conv2", 1, 1), weights, f"{prefix}.bn2", mode)
            x = F.relu(out + residual)
        features = x.mean(dim=(2, 3))
        return linear(features, weights, "linear"), features


def initial_weights(model, generator):
    """PyTorch's default init (U(±1/√fan_in)), non-trivial γ/β, and running statistics warmed up
    by a few train-mode passes so that eval mode (ME-ADA's ascent) sees realistic values."""
    weights = {}
    for name, shape in model.spec.shapes.items():
        if name.endswith("running_mean"):
            values = torch.zeros(shape)
        elif name.endswith("running_var"):
            values = torch.ones(shape)
        elif len(shape) == 4:
            bound = 1 / math.sqrt(shape[0] * shape[1] * shape[2])
            values = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        elif name.startswith("linear"):
            bound = 1 / math.sqrt(model.spec.shapes["linear.weight"][0])
            values = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        elif name.endswith(".weight"):  # batch-norm γ
            values = 0.6 + 0.8 * torch.rand(shape, generator=generator)
        else:  # batch-norm β
            values = 0.4 * torch.rand(shape, generator=generator) - 0.2
        weights[name] = values
    with torch.no_grad():
        for _ in range(5):
            model.forward(weights, as_float32_exact(torch.rand(BATCH_SIZE, *model.options["inputShape"], generator=generator)), "train")
    return {name: as_float32_exact(values) for name, values in weights.items()}


# ─── Losses, as @regstack/regularizer computes them ──────────────────────────────────────────


def soft_cross_entropy(logits, targets, reduction="mean"):
    per_example = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    return per_example.sum() if reduction == "sum" else per_example.mean()


def mean_entropy(logits):
    log_probabilities = F.log_softmax(logits, dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=1).mean()


def one_hot(labels):
    return F.one_hot(labels, NUM_CLASSES).to(torch.get_default_dtype())


def input_gradient(model, weights, inputs, labels, mode):
    """∇ₓ of the SUMMED cross-entropy against hard labels (RCAD's and FGSM's gradient)."""
    x = inputs.clone().requires_grad_(True)
    logits, _ = model.forward(weights, x, mode)
    (gradient,) = torch.autograd.grad(soft_cross_entropy(logits, one_hot(labels), "sum"), x)
    return gradient


# ─── One step per regulariser, as composeRegularizers runs it ───────────────────────────────


def run_case(model, initial, inputs, labels, case):
    """Returns the reference numbers of one step: the named terms, the weight gradients of the
    total, the running statistics after the step, and the case's intermediate tensors."""
    weights = {name: values.clone() for name, values in initial.items()}
    trainable = [weights[name].requires_grad_(True) for name in model.spec.trainable]
    plugin, options = case["plugin"], case.get("options", {})
    # A stack is its plugins joined by "+" (e.g. "rcad+label-smoothing"): each stage below runs for every
    # plugin of the stack that has it, as the stack's stages do.
    plugins = plugin.split("+")
    tensors = {}

    # Batch and target transforms (outside the tape).
    batch_inputs, targets = inputs, one_hot(labels)
    if plugin == "mixup":
        lam, permutation = case["draws"]["lambda"], torch.tensor(case["draws"]["permutation"])
        batch_inputs = lam * inputs + (1 - lam) * inputs[permutation]
        targets = lam * targets + (1 - lam) * targets[permutation]
        tensors["mixedInputs"], tensors["mixedTargets"] = batch_inputs, targets
    if "label-smoothing" in plugins:
        epsilon = options["epsilon"]
        targets = targets * (1 - epsilon) + epsilon / NUM_CLASSES
        tensors["smoothedTargets"] = targets

    # Prepare phase: constants of the step, computed with the weights detached.
    detached = {name: values.detach() for name, values in weights.items()}
    if "rcad" in plugins:
        # Hard labels, not the smoothed targets: the reference's direction is the plain cross-entropy's.
        gradient = input_gradient(model, detached, inputs, labels, "frozen-stats")
        norm = gradient.reshape(gradient.shape[0], -1).norm(dim=1).reshape(-1, 1, 1, 1)
        direction = gradient / (norm + 1e-10)
        perturbed = inputs + options["alpha"] * direction
        tensors.update(inputGradient=gradient, direction=direction, perturbed=perturbed)
    if plugin == "adversarial-training":
        gradient = input_gradient(model, detached, inputs, labels, "frozen-stats")
        epsilon = options["epsilon"]
        adversarial = (inputs + epsilon * gradient.sign()).clamp(0, 1)
        tensors.update(inputGradient=gradient, adversarial=adversarial)
        # A sign is only reproducible where the gradient is clearly away from 0 in float32.
        case["smallestGradientRatio"] = (gradient.abs().min() / gradient.abs().max()).item()
    if plugin == "me-ada":
        mode, eta = options["ascentMode"], options["stepSize"]
        beta, gamma = options["beta"], options["gamma"]
        _, clean_features = model.forward(detached, inputs, mode)
        generated = inputs.clone()
        for _ in range(options["steps"]):
            x = generated.clone().requires_grad_(True)
            logits, features = model.forward(detached, x, mode)
            objective = (
                soft_cross_entropy(logits, one_hot(labels))
                + beta * mean_entropy(logits)
                - gamma * ((features - clean_features) ** 2).mean()
            )
            (gradient,) = torch.autograd.grad(objective, x)
            generated = generated + eta * gradient
        generated = generated.clamp(*options["clip"])
        tensors["generated"] = generated
    # Nothing above may move the running statistics (frozen-stats and eval passes only).
    for name in model.spec.running:
        assert torch.equal(weights[name], initial[name]), name

    # Loss phase: base CE in train mode (updates running statistics), then the plugin's term.
    logits, _ = model.forward(weights, batch_inputs, "train")
    base = soft_cross_entropy(logits, targets)
    terms = {"base": base}
    total = base
    if "rcad" in plugins:
        perturbed_logits, _ = model.forward(weights, tensors["perturbed"], "frozen-stats")
        terms["rcad"] = options["lambda"] * (math.log(NUM_CLASSES) - mean_entropy(perturbed_logits))
        total = base + terms["rcad"]
    if plugin == "entropy-min":
        terms["entropy-min"] = options["lambda"] * mean_entropy(logits)
        total = base + terms["entropy-min"]
    if plugin in ("adversarial-training", "me-ada"):
        generated = tensors["adversarial" if plugin == "adversarial-training" else "generated"]
        generated_logits, _ = model.forward(weights, generated, "frozen-stats")
        terms[plugin] = soft_cross_entropy(generated_logits, one_hot(labels))
        mix = options["weight"]
        total = (1 - mix) * base + mix * terms[plugin]
    terms["total"] = total
    gradients = torch.autograd.grad(total, trainable)
    return {
        "name": case["name"],
        "plugin": plugin,
        "options": options,
        **({"seed": case["draws"]["seed"], "draws": case["draws"]} if plugin == "mixup" else {}),
        **({"smallestGradientRatio": case["smallestGradientRatio"]} if "smallestGradientRatio" in case else {}),
        "terms": {name: value.item() for name, value in terms.items()},
        "tensors": {name: encode_reference(value) for name, value in tensors.items()},
        "gradients": {name: encode_reference(value) for name, value in zip(model.spec.trainable, gradients)},
        "runningStatistics": {name: encode_reference(weights[name]) for name in model.spec.running},
    }


def mixup_draws(seed, alpha):
    """λ and the permutation our mixup plugin draws from `new Random(seed)` (see mixup-draws.ts)."""
    command = ["npx", "tsx", "--conditions=@regstack/source", "tools/parity/mixup-draws.ts", str(seed), str(BATCH_SIZE), str(alpha)]
    return json.loads(subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout)


def reference_setup(model, seed):
    """The fixture's weights, inputs and labels, drawn from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    initial = initial_weights(model, generator)
    inputs = as_float32_exact(torch.rand(BATCH_SIZE, *model.options["inputShape"], generator=generator))
    labels = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)
    return initial, inputs, labels


def float32_errors(model, initial, inputs, labels, case, reference):
    """How far PyTorch itself lands from its float64 result when it runs the same case in float32,
    per tensor: the floor any float32 implementation, ours included, can be held to. Tensors whose
    true value is small by cancellation (e.g. the gradient of a shift that a later batch norm
    removes) lose digits in every float32 implementation."""
    torch.set_default_dtype(torch.float32)
    try:
        single = run_case(model, {name: value.float() for name, value in initial.items()}, inputs.float(), labels, dict(case))
    finally:
        torch.set_default_dtype(torch.float64)
    errors = {}
    for kind in ("tensors", "gradients", "runningStatistics"):
        errors[kind] = {}
        for name, expected in reference[kind].items():
            ours, theirs = torch.tensor(single[kind][name]["values"]), torch.tensor(expected["values"])
            errors[kind][name] = float(f"{((ours - theirs).norm() / theirs.norm()).item():.3g}")
    return errors


def write_fixture(file_name, factory, model, cases, seed):
    initial, inputs, labels = reference_setup(model, seed)
    results = []
    for case in cases:
        result = run_case(model, initial, inputs, labels, dict(case))
        result["float32Error"] = float32_errors(model, initial, inputs, labels, case, result)
        results.append(result)
    fixture = {
        "generator": "tools/parity/generate.py (float64 PyTorch reference; regenerate with /usr/bin/python3 tools/parity/generate.py)",
        "torch": torch.__version__,
        "model": {"factory": factory, "options": model.options},
        "trainable": model.spec.trainable,
        "weights": {name: encode_exact(values) for name, values in initial.items()},
        "batch": {"inputs": encode_exact(inputs), "labels": labels.tolist()},
        "cases": results,
    }
    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, file_name)
    with open(path, "w") as handle:
        json.dump(fixture, handle, separators=(",", ":"))
        handle.write("\n")
    print(f"{os.path.relpath(path, ROOT)}: {os.path.getsize(path) / 1024:.0f} KiB")
    for result in results:
        worst, where = max((error, f"{kind} {name}") for kind, errors in result["float32Error"].items() for name, error in errors.items())
        line = f"  {result['name']}: PyTorch float32 vs float64, worst {worst:.2e} ({where})"
        if "smallestGradientRatio" in result:
            line += f"; smallest |∇x| / largest |∇x| = {result['smallestGradientRatio']:.2e} (sign stability)"
        print(line)


def fixtures():
    """(file, factory, model, cases, seed) of every fixture."""
    # A seed whose draw mixes evenly (λ near 1/2), so both halves of the mix matter.
    draws = mixup_draws(seed=3, alpha=1.0)
    me_ada = {"steps": 3, "stepSize": 2.0, "beta": 10.0, "gamma": 1.0, "weight": 0.5, "clip": [0, 1]}
    fgsm = {"attack": "fgsm", "norm": "linf", "epsilon": 8 / 255, "weight": 0.5}
    cnn_cases = [
        {"name": "erm", "plugin": "none"},
        {"name": "label-smoothing", "plugin": "label-smoothing", "options": {"epsilon": 0.2}},
        {"name": "mixup", "plugin": "mixup", "options": {"mixupAlpha": 1.0}, "draws": draws},
        # λ = 1 (not the reference's 0.2) so that the term's gradient weighs as much as the base loss's.
        {"name": "rcad", "plugin": "rcad", "options": {"alpha": 0.5, "lambda": 1.0}},
        # The paper's stack: the base loss on smoothed targets, RCAD's direction from the hard labels.
        {"name": "rcad+label-smoothing", "plugin": "rcad+label-smoothing", "options": {"alpha": 0.5, "lambda": 1.0, "epsilon": 0.2}},
        {"name": "entropy-min", "plugin": "entropy-min", "options": {"lambda": 0.5}},
        {"name": "fgsm", "plugin": "adversarial-training", "options": fgsm},
        {"name": "me-ada", "plugin": "me-ada", "options": {**me_ada, "ascentMode": "eval"}},
        {"name": "me-ada-frozen-stats", "plugin": "me-ada", "options": {**me_ada, "ascentMode": "frozen-stats"}},
    ]
    cnn = SmallCnn({"inputShape": [8, 8, 1], "width": 4, "numClasses": NUM_CLASSES, "mean": [0.286], "std": [0.353]})
    resnet_cases = [
        {"name": "erm", "plugin": "none"},
        {"name": "rcad", "plugin": "rcad", "options": {"alpha": 1.0, "lambda": 1.0}},
        {"name": "rcad+label-smoothing", "plugin": "rcad+label-smoothing", "options": {"alpha": 1.0, "lambda": 1.0, "epsilon": 0.2}},
        {"name": "fgsm", "plugin": "adversarial-training", "options": fgsm},
    ]
    cifar = {"mean": [125.3 / 255, 123.0 / 255, 113.9 / 255], "std": [63.0 / 255, 62.1 / 255, 66.7 / 255]}
    resnet = ResNet18({"inputShape": [8, 8, 3], "width": 2, "numClasses": NUM_CLASSES, **cifar})
    return [
        ("small-cnn.json", "smallCnn", cnn, cnn_cases, 20221),
        ("resnet18.json", "resnet18", resnet, resnet_cases, 20222),
    ]


def main():
    for file_name, factory, model, cases, seed in fixtures():
        write_fixture(file_name, factory, model, cases, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
