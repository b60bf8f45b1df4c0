"""One training step of CIFAR ResNet-20 (option-B shortcuts), batch 128, and of MobileNetV2 1.0
with a stride-1 stem, batch 64, both on 3x32x32 inputs and 2 CPU threads: the PyTorch twin of
`cargo xtask bench train-step`. Run it in the same session as the Rust bench and compare the
medians.

    python3 -m pip install torch numpy   # CPU use; the wheel pulls the CUDA libraries too
    python3 benches/reference/resnet20_step.py
"""
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for b in range(3):
                layers.append(Block(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        mid = cin * t
        layers = [conv_bn(cin, mid, 1)] if t != 1 else []
        layers += [conv_bn(mid, mid, 3, stride, mid), conv_bn(mid, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 1.0 (10 classes) with the stem at stride 1, as the zoo's
    `MobileNetV2Config::new(1.0, 10).input(3, 32).small_input()`."""

    def __init__(self):
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 1)], 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, 10)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def main(steps=5):
    for name, net, batch in [("ResNet-20", ResNet20(), 128), ("MobileNetV2", MobileNetV2(), 64)]:
        step(name, net, batch, steps)


def step(name, net, batch, steps):
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.arange(batch) % 10
    fwd, bwd, upd, inf = [], [], [], []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        net.eval()
        with torch.no_grad():
            net(x).sum().item()
        net.train()
        t4 = time.perf_counter()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            upd.append(t3 - t2)
            inf.append(t4 - t3)
    f, b, u, e = (statistics.median(v) * 1e3 for v in (fwd, bwd, upd, inf))
    print(f"{name}, batch {batch}: PyTorch {torch.__version__}, 2 threads: step {f + b + u:.0f} ms (forward {f:.0f}, backward {b:.0f}, SGD {u:.1f}); inference forward {e:.0f} ms")


if __name__ == "__main__":
    main()
