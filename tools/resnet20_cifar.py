#!/usr/bin/env python3
"""He et al.'s CIFAR ResNet-20 written the torchvision way: the reference PyTorch definition of
models/resnet20_cifar.{yaml,cnn}.

Three stages of three basic blocks (16, 32 and 64 channels) on 3x32x32 images, with torchvision's own
`BasicBlock` and a 1x1-convolution projection shortcut (`downsample`, option B of the paper) where
the shape changes, so the state_dict names are torchvision's: `conv1`, `bn1`,
`layer1.0.conv1`, ..., `layer2.0.downsample.0`, `layer2.0.downsample.1`, ..., `fc`.
272,474 parameters with 10 classes.

Used by tools/make_graph_fixtures.py; run on its own it prints the parameter count.
"""

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-10: conv 3x3 -> 3 stages x 3 BasicBlocks -> global average pool -> fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, 3, stride=1)
        self.layer2 = self._make_layer(32, 3, stride=2)
        self.layer3 = self._make_layer(64, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        # torchvision's ResNet initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


if __name__ == "__main__":
    print(sum(p.numel() for p in ResNet20().parameters()))
