"""The tutorial CIFAR-10 CustomCNN, cnnc's reference model, and a strict loader for weights.

Used by make_fixtures.py. Run directly to prove that a weights file written by cnnc loads into
PyTorch with `load_state_dict(strict=True)` and to print the logits it gives on a batch:

    tools/.venv/bin/python tools/custom_cnn.py WEIGHTS.safetensors [INPUT.npy]
"""

import sys

import torch
from torch import nn


class CustomCNN(nn.Module):
    """3x32x32 -> 3 x [Conv2d 5x5 pad 2 -> ReLU -> MaxPool 2] -> Linear 64 -> ReLU -> Linear 10."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(1024, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    from safetensors.torch import load_file

    model = CustomCNN()
    # strict=True raises on any missing, unexpected or wrongly shaped tensor.
    model.load_state_dict(load_file(argv[1]), strict=True)
    print(f"{argv[1]}: loads into CustomCNN with strict=True")
    if len(argv) == 3:
        import numpy as np

        x = torch.from_numpy(np.load(argv[2]).astype(np.float32))
        model.eval()
        with torch.no_grad():
            print(model(x))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
