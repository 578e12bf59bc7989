"""The networks of section 3, written layer for layer as the paper lists them.

Notation from the paper: COV(a, b, c, d, e) is Conv2d(a, b, kernel c, stride d,
padding e); LR leaky ReLU; IN instance normalisation; LN layer normalisation.
All models take inputs in [0, 1] (no normalisation layer) and return logits.

Where the paper is terse (checked against the authors' codes): "IN" in the CNNs
is ``InstanceNorm2d`` without learned affine parameters (the paper says only
"IN"); no model normalises its input, while the authors' COVID-19 network maps
x to (x - 0.5) / 0.5 in its forward pass (after a bias-free first convolution
followed by IN this changes only border effects and IN's eps); the authors'
ResNet uses GroupNorm(C, C), which is the affine InstanceNorm used here; and
their default ResNet has one logit with a binary loss where this one has two
logits and cross-entropy (their ``resnet18a2`` variant).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def moons_mlp() -> nn.Sequential:
    """Linear(2, 32)-LR-Linear(32, 64)-LN-LR-Linear(64, 128)-LN-LR-Linear(128, 2) (section 3.1)."""
    return nn.Sequential(
        nn.Linear(2, 32),
        nn.LeakyReLU(),
        nn.Linear(32, 64),
        nn.LayerNorm(64),
        nn.LeakyReLU(),
        nn.Linear(64, 128),
        nn.LayerNorm(128),
        nn.LeakyReLU(),
        nn.Linear(128, 2),
    )


def fashion_mnist_cnn() -> nn.Sequential:
    """COV(1,64,5,2,2)-LR-COV(64,128,5,2,2)-IN-LR-COV(128,256,5,2,2)-IN-LR-COV(256,512,4,1,0)
    -Flatten-LN-LR-Linear(512,10) (section 3.2). 28x28 -> 14 -> 7 -> 4 -> 1."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 5, 2, 2),
        nn.LeakyReLU(),
        nn.Conv2d(64, 128, 5, 2, 2),
        nn.InstanceNorm2d(128),
        nn.LeakyReLU(),
        nn.Conv2d(128, 256, 5, 2, 2),
        nn.InstanceNorm2d(256),
        nn.LeakyReLU(),
        nn.Conv2d(256, 512, 4, 1, 0),
        nn.Flatten(),
        nn.LayerNorm(512),
        nn.LeakyReLU(),
        nn.Linear(512, 10),
    )


def svhn_cnn() -> nn.Sequential:
    """COV(3,32,3,1,1)-LR-COV(32,32,3,2,1)-IN-LR-COV(32,64,3,1,1)-IN-LR-COV(64,64,3,2,1)-IN-LR
    -COV(64,128,3,1,1)-IN-LR-COV(128,128,3,2,1)-IN-LR-COV(128,256,4,1,0)-Flatten-LN-LR-Linear(256,10)
    (section 3.2). 32x32 -> 16 -> 8 -> 4 -> 1."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1),
        nn.LeakyReLU(),
        nn.Conv2d(32, 32, 3, 2, 1),
        nn.InstanceNorm2d(32),
        nn.LeakyReLU(),
        nn.Conv2d(32, 64, 3, 1, 1),
        nn.InstanceNorm2d(64),
        nn.LeakyReLU(),
        nn.Conv2d(64, 64, 3, 2, 1),
        nn.InstanceNorm2d(64),
        nn.LeakyReLU(),
        nn.Conv2d(64, 128, 3, 1, 1),
        nn.InstanceNorm2d(128),
        nn.LeakyReLU(),
        nn.Conv2d(128, 128, 3, 2, 1),
        nn.InstanceNorm2d(128),
        nn.LeakyReLU(),
        nn.Conv2d(128, 256, 4, 1, 0),
        nn.Flatten(),
        nn.LayerNorm(256),
        nn.LeakyReLU(),
        nn.Linear(256, 10),
    )


def resnet18_instancenorm(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """ResNet-18 (He et al. 2016) with every BatchNorm replaced by InstanceNorm (section 3.3).

    One input channel (grayscale CT), two outputs (non-COVID 0, COVID 1). The
    instance norms are affine, as the batch norms they replace were.
    """
    from torchvision.models import resnet18

    def instance_norm(channels: int) -> nn.Module:
        return nn.InstanceNorm2d(channels, affine=True)

    model = resnet18(weights=None, num_classes=num_classes, norm_layer=instance_norm)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {
    "moons": moons_mlp,
    "fashion_mnist": fashion_mnist_cnn,
    "svhn": svhn_cnn,
    "covid": resnet18_instancenorm,
}


def build_model(dataset: str) -> nn.Module:
    """The paper's network for ``dataset``."""
    if dataset not in MODELS:
        raise ValueError(f"dataset={dataset!r} is not supported: use one of {', '.join(MODELS)}")
    return MODELS[dataset]()
