"""PyTorch twin of `cargo xtask bench onexn`: the dense 1x1 convs and MobileNetV2 at 224, batch 1,
on the same threads (oneDNN / MKL-DNN CPU convolution: what a deployer would otherwise use).

    python3 benches/reference/onexn_dense.py [--threads 2]
"""
import argparse
import time

import torch

LAYERS = [
    ("R50 64->256", 64, 256, 56),
    ("R50 128->512", 128, 512, 28),
    ("R50 256->1024", 256, 1024, 14),
    ("R50 512->2048", 512, 2048, 7),
    ("MV2 expand 24->144", 24, 144, 56),
    ("MV2 expand 64->384", 64, 384, 14),
    ("MV2 expand 160->960", 160, 960, 7),
    ("MV2 project 144->24", 144, 24, 56),
    ("MV2 project 576->96", 576, 96, 14),
    ("MV2 head 320->1280", 320, 1280, 7),
]


def median_ms(f, seconds=0.1, reps=5):
    for _ in range(2):
        f()
    times, start = [], time.perf_counter()
    while len(times) < reps or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}")
    print("| layer | batch | PyTorch dense ms |")
    print("| --- | --- | --- |")
    with torch.inference_mode():
        for name, cin, cout, side in LAYERS:
            conv = torch.nn.Conv2d(cin, cout, 1, bias=False).eval()
            for batch in (1, 8):
                x = torch.randn(batch, cin, side, side)
                print(f"| {name} @{side} | {batch} | {median_ms(lambda: conv(x)):.3f} |")
        try:
            import torchvision

            net = torchvision.models.mobilenet_v2().eval()
            x = torch.randn(1, 3, 224, 224)
            print(f"MobileNetV2 1.0 at 224, batch 1, eval: {median_ms(lambda: net(x), seconds=0.5):.2f} ms")
        except ImportError:
            print("torchvision not installed: no MobileNetV2 latency")


if __name__ == "__main__":
    main()
