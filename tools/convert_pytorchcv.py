"""Converts pytorchcv's pretrained classifiers (the teachers of GDFQ / IntraQ / FDDA) to
safetensors in pytorchcv's own tensor names, where `compress_nn::pytorchcv::load` reads them.
pytorchcv publishes zipped PyTorch pickles on GitHub, not safetensors on the Hub.

    python3 -m pip install torch pytorchcv safetensors
    python3 tools/convert_pytorchcv.py resnet20_cifar10 resnet20_cifar100 resnet18 mobilenet_w1 mobilenetv2_w1 regnetx006

writes weights/intraq/<name>.safetensors (use --out for another folder).
"""
import argparse
import os

import torch
from pytorchcv.model_provider import get_model
from safetensors.torch import save_file


def main():
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="+")
    p.add_argument("--out", default="weights/intraq")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name in a.names:
        net = get_model(name, pretrained=True).eval()
        sd = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()
              if not k.endswith("num_batches_tracked")}
        path = os.path.join(a.out, f"{name}.safetensors")
        save_file(sd, path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"{name}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()):,} values -> {path}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
