"""PyTorch-CPU training-step timings for `npm run bench` (tools/bench/run.mjs).

The models mirror @regstack/models layer for layer (same convolutions without bias, batch norm with
PyTorch's defaults, pooling and linear head, the same input normalisation inside the model), and a
step does what the regstack trainer does per batch: forward, cross-entropy, backward, global-norm
clip at 1, coupled weight decay 5e-4 and SGD with Nesterov momentum 0.9.

Usage: /usr/bin/python3 tools/bench/torch_step.py, then JSON lines on stdin:
{"command": "init", "model": {"name": "small-cnn" | "resnet18", "width": int, "inputShape": [h, w, c],
"numClasses": int, "mean"?: [float], "std"?: [float]}, "batchSize": int, "seed": int,
"baseLoss"?: "single" | "two-view"} → {"available": true, "version": str};
{"command": "step", "variant": "erm" | "rcad" | "rcad+label-smoothing", "threads": int} → {"ms": float};
{"command": "exit"}.

With "baseLoss": "two-view" a step's base loss is the reference script's 0.5·[CE(x) + CE(aug(x))], aug
being a random crop with 4-pixel zero padding and a horizontal flip per example, drawn and applied to the
whole batch with torch ops inside the timed step (as @regstack/datasets' standardAugmentation does ours).
Without torch, the first reply is {"available": false, "reason": str}.
"""

import json
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as error:  # the bench reports the rest without PyTorch
    sys.stdout.write(json.dumps({"available": False, "reason": f"cannot import torch: {error}"}) + "\n")
    sys.exit(0)

# CIFAR-10 statistics, the default when init names none (harness.mjs passes the model's).
MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


class Normalize(nn.Module):
    """The model owns its input normalisation, as @regstack/models does."""

    def __init__(self, channels, mean=None, std=None):
        super().__init__()
        mean = ((mean or MEAN) * channels)[:channels]
        std = ((std or STD) * channels)[:channels]
        self.register_buffer("scale", torch.tensor([1 / s for s in std]).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, -1, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


def conv_bn(in_channels, out_channels, stride=1, size=3):
    return [
        nn.Conv2d(in_channels, out_channels, size, stride=stride, padding=(size - 1) // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class SmallCnn(nn.Module):
    """packages/models/src/small-cnn.ts: [conv3×3-BN-ReLU ×2, max-pool 2×2] at width and 2·width, linear."""

    def __init__(self, width, input_shape, num_classes, mean=None, std=None):
        super().__init__()
        height, image_width, channels = input_shape
        layers = [Normalize(channels, mean, std)]
        in_channels = channels
        for out_channels in (width, 2 * width):
            for _ in range(2):
                layers += conv_bn(in_channels, out_channels) + [nn.ReLU(inplace=True)]
                in_channels = out_channels
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear((height // 2 // 2) * (image_width // 2 // 2) * in_channels, num_classes)

    def forward(self, x):
        return self.linear(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, out_channels, stride)
        self.conv2, self.bn2 = conv_bn(out_channels, out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(*conv_bn(in_channels, out_channels, stride, size=1))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """packages/models/src/resnet.ts: CIFAR ResNet-18 (3×3 stem, no max-pool), stages width·[1, 2, 4, 8]."""

    def __init__(self, width, input_shape, num_classes, mean=None, std=None):
        super().__init__()
        channels = input_shape[2]
        self.normalize = Normalize(channels, mean, std)
        self.conv1, self.bn1 = conv_bn(channels, width)
        blocks = []
        in_channels = width
        for stage, multiplier in enumerate((1, 2, 4, 8)):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, width * multiplier, stride))
                in_channels = width * multiplier
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.blocks(out)
        return self.linear(out.mean(dim=(2, 3)))


MODELS = {"small-cnn": SmallCnn, "resnet18": ResNet18}


def set_frozen_statistics(model, frozen):
    """RCAD's passes use batch statistics without updating the running ones (the reference script)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.0 if frozen else 0.1


def crop_and_flip(inputs, padding=4):
    """Random crop with zero padding, then a horizontal flip with probability 0.5, per example, as one
    gather over the padded batch (the whole batch at once, as a PyTorch user would on tensors)."""
    batch, channels, height, width = inputs.shape
    padded = F.pad(inputs, (padding, padding, padding, padding))
    rows = torch.randint(0, 2 * padding + 1, (batch, 1)) + torch.arange(height).view(1, -1)
    columns = torch.randint(0, 2 * padding + 1, (batch, 1)) + torch.arange(width).view(1, -1)
    flips = torch.rand(batch, 1) < 0.5
    columns = torch.where(flips, columns.flip(1), columns)
    return padded[
        torch.arange(batch).view(-1, 1, 1, 1),
        torch.arange(channels).view(1, -1, 1, 1),
        rows.view(batch, 1, height, 1),
        columns.view(batch, 1, 1, width),
    ]


def make_step(model, variant, optimizer, num_classes, two_view=False):
    def base_loss(inputs, labels, smoothing=0.0):
        loss = F.cross_entropy(model(inputs), labels, label_smoothing=smoothing)
        if two_view:
            loss = 0.5 * (loss + F.cross_entropy(model(crop_and_flip(inputs)), labels, label_smoothing=smoothing))
        return loss

    def apply_update(total):
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return total.item()

    def erm(inputs, labels):
        return apply_update(base_loss(inputs, labels))

    def rcad(inputs, labels, alpha=1.0, weight=0.2, smoothing=0.0):
        # The reference's direction: ∇x of the summed plain CE at the clean inputs, normalised per example.
        set_frozen_statistics(model, True)
        clean = inputs.detach().requires_grad_(True)
        gradient, = torch.autograd.grad(F.cross_entropy(model(clean), labels, reduction="sum"), clean)
        norm = gradient.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10
        perturbed = (inputs + alpha * gradient / norm).detach()
        set_frozen_statistics(model, False)
        base = base_loss(inputs, labels, smoothing)
        set_frozen_statistics(model, True)
        log_probabilities = F.log_softmax(model(perturbed), dim=1)
        set_frozen_statistics(model, False)
        entropy = -(log_probabilities.exp() * log_probabilities).sum(dim=1).mean()
        return apply_update(base + weight * (math.log(num_classes) - entropy))

    def rcad_label_smoothing(inputs, labels):
        # @regstack/label-smoothing's default ε = 0.1 on the base loss; the direction stays plain CE.
        return rcad(inputs, labels, smoothing=0.1)

    return {"erm": erm, "rcad": rcad, "rcad+label-smoothing": rcad_label_smoothing}[variant]


def build(request):
    torch.manual_seed(request.get("seed", 0))
    spec = request["model"]
    height, width, channels = spec["inputShape"]
    model = MODELS[spec["name"]](spec["width"], spec["inputShape"], spec["numClasses"], spec.get("mean"), spec.get("std"))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    batch = request["batchSize"]
    # NCHW: PyTorch's native layout, as a PyTorch user would run it.
    inputs = torch.rand(batch, channels, height, width)
    labels = torch.randint(0, spec["numClasses"], (batch,))
    two_view = request.get("baseLoss", "single") == "two-view"
    steps = {name: make_step(model, name, optimizer, spec["numClasses"], two_view) for name in ("erm", "rcad", "rcad+label-smoothing")}
    return steps, inputs, labels


def serve():
    """One JSON request per line on stdin, one JSON reply per line on stdout, so that the caller can
    interleave PyTorch steps with its own: a burst of load from other jobs then hits both alike."""
    steps = inputs = labels = None
    for line in sys.stdin:
        request = json.loads(line)
        command = request["command"]
        if command == "init":
            steps, inputs, labels = build(request)
            reply = {"available": True, "version": torch.__version__}
        elif command == "step":
            torch.set_num_threads(request["threads"])
            start = time.perf_counter()
            steps[request["variant"]](inputs, labels)
            reply = {"ms": (time.perf_counter() - start) * 1000}
        elif command == "exit":
            break
        else:
            reply = {"error": f"unknown command {command}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
