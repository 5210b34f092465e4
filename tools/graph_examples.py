#!/usr/bin/env python3
"""PyTorch definitions of the two small graph examples shipped in models/, whose state_dict names
the specs reproduce exactly (used by tools/make_graph_fixtures.py):

- `SEResNet` (models/se_resnet.{yaml,cnn}): a CIFAR-sized ResNet whose basic blocks rescale their
  residual branch with torchvision's `SqueezeExcitation` (`se.fc1`, `se.fc2`: global average pool,
  1x1 conv, ReLU, 1x1 conv, sigmoid, then the `[C,1,1]` gate times the `[C,H,W]` map).
- `UNet` (models/unet.{yaml,cnn}): a two-level U-Net whose decoder concatenates the encoder's
  features (`torch.cat([skip, upsampled], 1)`), ending in a classifier head so that it trains with
  cross-entropy.
"""

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation


class SEBasicBlock(nn.Module):
    """torchvision's BasicBlock with a squeeze-and-excitation gate on the residual branch."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcitation(planes, planes // 4)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SEResNet(nn.Module):
    """3x32x32 -> conv 16 -> SE blocks 16, 32 (stride 2) -> global average pool -> fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(SEBasicBlock(16, 16))
        self.layer2 = nn.Sequential(SEBasicBlock(16, 32, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """3x32x32: encoder 16@32, 32@16, bottleneck 64@8; decoder up to 32@16 and 16@32, each level
    concatenating the encoder's features of its size before its convolution; classifier head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.enc1 = conv_bn_relu(3, 16)
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = conv_bn_relu(16, 32)
        self.pool2 = nn.MaxPool2d(2)
        self.mid = conv_bn_relu(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = conv_bn_relu(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = conv_bn_relu(32, 16)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool1(e1))
        m = self.mid(self.pool2(e2))
        d2 = self.dec2(torch.cat([e2, self.up2(m)], 1))
        d1 = self.dec1(torch.cat([e1, self.up1(d2)], 1))
        return self.head(torch.flatten(self.avgpool(d1), 1))
