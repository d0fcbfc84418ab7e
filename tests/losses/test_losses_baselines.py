"""Every benchmark loss: finite loss and gradients, and agreement with its reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from vmfml.losses import MetricLoss, create_loss, list_losses

C, D = 4, 8
CLASSIFIERS = {"vmf", "vmf_global", "vmf_accumulate", "vmf_ema", "vmf_learned", "softmax",
               "normalized_softmax", "arcface", "cosface", "proxy_nca", "proxy_anchor"}  # fmt: skip


def batch(seed: int = 0, n: int = 16):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, D, generator=gen)
    labels = torch.arange(n) % C  # 4 samples of each class: every loss finds its tuples
    return features, labels


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_gives_finite_loss_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    loss_fn = create_loss(name, C, D)
    assert isinstance(loss_fn, MetricLoss)
    assert loss_fn.expects_normalized == (name not in ("softmax", "npair"))
    assert loss_fn.has_classifier == (name in CLASSIFIERS)
    features, labels = batch()
    features.requires_grad_(True)
    inputs = F.normalize(features, dim=1) if loss_fn.expects_normalized else features
    loss = loss_fn(inputs, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0
    for pname, param in loss_fn.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname
    if loss_fn.has_classifier:
        assert loss_fn.logits(inputs).shape == (16, C)
    else:
        with pytest.raises(ValueError, match="has_classifier"):
            loss_fn.logits(inputs)


@pytest.mark.parametrize(
    "name", ["softmax", "normalized_softmax", "arcface", "cosface", "proxy_nca", "proxy_anchor"]
)
def test_class_weights_are_seen_by_the_optimizer(name: str) -> None:
    loss_fn = create_loss(name, C, D)
    params = list(loss_fn.parameters())
    assert params and sum(p.numel() for p in params) >= C * D
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    features, labels = batch()
    loss_fn(F.normalize(features, dim=1), labels).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))


def test_npair_is_sohns_loss_on_unnormalized_embeddings() -> None:
    """Against the N-pair loss written out in float64: one (anchor, positive) pair per class,
    cross-entropy of anchor i over the inner products with all positives, plus
    0.25 * 0.002 * (mean |a|^2 + mean |p|^2) as in TensorFlow's npairs_loss."""
    gen = torch.Generator().manual_seed(3)
    features = 2.0 * torch.randn(8, D, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # anchors first, then their positives
    got = create_loss("npair", C, D)(features, labels)
    anchors, positives = features[:4], features[4:]
    logits = anchors @ positives.T
    xent = F.cross_entropy(logits, torch.arange(4))
    l2 = 0.25 * 0.002 * ((anchors**2).sum(1).mean() + (positives**2).sum(1).mean())
    assert float(got) == pytest.approx(float(xent + l2), rel=1e-9)


def test_softmax_matches_torch_cross_entropy() -> None:
    loss_fn = create_loss("softmax", C, D)
    features, labels = batch()
    layer = loss_fn.classifier
    want = F.cross_entropy(features @ layer.weight.t() + layer.bias, labels)
    torch.testing.assert_close(loss_fn(features, labels), want)
    torch.testing.assert_close(loss_fn.logits(features), features @ layer.weight.t() + layer.bias)


def test_normalized_softmax_matches_pml_and_hand_logits() -> None:
    loss_fn = create_loss("normalized_softmax", C, D)
    reference = pml_losses.NormalizedSoftmaxLoss(C, D, temperature=0.05)
    reference.W.data.copy_(loss_fn.loss.W.data)
    features, labels = batch()
    x = F.normalize(features, dim=1)
    torch.testing.assert_close(loss_fn(x, labels), reference(x, labels))
    want = x @ F.normalize(reference.W, dim=0) / 0.05
    torch.testing.assert_close(loss_fn.logits(x), want)
    torch.testing.assert_close(loss_fn(x, labels), F.cross_entropy(want, labels))


def test_arcface_matches_pml_and_its_formula() -> None:
    loss_fn = create_loss("arcface", C, D)
    reference = pml_losses.ArcFaceLoss(C, D, margin=28.6, scale=64)
    reference.W.data.copy_(loss_fn.loss.W.data)
    features, labels = batch()
    x = F.normalize(features.double(), dim=1)
    torch.testing.assert_close(loss_fn(x, labels), reference(x, labels))
    cos = x @ F.normalize(reference.W.double(), dim=0)
    torch.testing.assert_close(loss_fn.logits(x), 64 * cos)
    theta = torch.acos(cos[torch.arange(16), labels].clamp(-1, 1))
    margin = torch.deg2rad(torch.tensor(28.6, dtype=torch.float64))
    with_margin = cos.clone()
    with_margin[torch.arange(16), labels] = torch.cos(theta + margin)  # theta + m < pi here
    assert (theta + margin < torch.pi).all()
    torch.testing.assert_close(loss_fn(x, labels), F.cross_entropy(64 * with_margin, labels))


def test_proxy_logits_rank_classes_by_cosine_to_proxies() -> None:
    features, _ = batch()
    x = F.normalize(features, dim=1)
    for name, scale in [("proxy_nca", 9.0), ("proxy_anchor", 32.0)]:
        loss_fn = create_loss(name, C, D)
        cos = x @ F.normalize(loss_fn.loss.proxies, dim=1).t()
        # proxy_nca: -s ||x - p||^2 = s (2 cos - 2) for unit vectors; proxy_anchor: alpha cos
        want = scale * (2 * cos - 2) if name == "proxy_nca" else scale * cos
        torch.testing.assert_close(loss_fn.logits(x), want, rtol=1e-5, atol=1e-4)


def test_registry_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'tripplet'; valid: \[.*'triplet'"):
        create_loss("tripplet", C, D)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['margn'\].*'margin'"):
        create_loss("triplet", C, D, margn=0.1)
    with pytest.raises(ValueError, match=r"\['momentum'\] for loss 'vmf'.*'init_seed'"):
        create_loss("vmf", C, D, momentum=0.5)  # accumulate has no momentum
    with pytest.raises(ValueError, match=r"\['directions'\] for loss 'vmf_ema'"):
        create_loss("vmf_ema", C, D, directions="global")
    with pytest.raises(ValueError, match="unknown directions 'none'"):
        create_loss("vmf", C, D, directions="none")


def test_registry_passes_options_through() -> None:
    vmf = create_loss("vmf", C, D, directions="ema", momentum=0.7, kappa=4.0, learn_kappa=True)
    assert vmf.directions.momentum == 0.7
    assert vmf.kappa.item() == pytest.approx(4.0)
    assert create_loss("vmf_global", C, D).directions.needs_full_pass
    assert create_loss("triplet", C, D, margin=0.1).loss.margin == 0.1
    assert create_loss("arcface", C, D, scale=30.0).loss.scale == 30.0


def _lifted_by_the_formula(x: torch.Tensor, labels: torch.Tensor, margin: float = 1.0):
    """Oh Song et al. (CVPR 2016) eq. 4 by loops over the pairs, in the input's dtype."""
    dist = torch.cdist(x, x)
    n = len(labels)
    terms = []
    for i in range(n):
        for j in range(i + 1, n):
            if labels[i] != labels[j]:
                continue
            negatives = [margin - dist[a, k] for a in (i, j) for k in range(n)
                         if labels[k] != labels[a]]  # fmt: skip
            inside = torch.logsumexp(torch.stack(negatives), 0) + dist[i, j]
            terms.append(torch.relu(inside) ** 2)
    return torch.stack(terms).sum() / (2 * len(terms))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lifted_structure_matches_pml_and_the_papers_formula(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 24
    # Unequal classes and one singleton (negatives but no positive): labels 0-4, 5 once.
    labels = torch.cat([torch.randint(0, 5, (n - 1,), generator=gen), torch.tensor([5])])
    features = torch.randn(n, D, generator=gen, dtype=torch.float64)
    x = F.normalize(features, dim=1)
    ours = create_loss("lifted_structure", C + 2, D)
    reference = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
    got_x, want_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, want = ours(got_x, labels), reference(want_x, labels)
    got.backward()
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_x.grad, want_x.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.detach(), _lifted_by_the_formula(x, labels))


def test_lifted_structure_matches_pml_on_mined_and_edge_case_pairs() -> None:
    gen = torch.Generator().manual_seed(3)
    n = 12
    x = F.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.arange(n) % 3
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]]
    neg = [(i, j) for i in range(n) for j in range(n) if labels[i] != labels[j]]
    keep_pos = torch.randperm(len(pos), generator=gen)[:10]
    # Negatives for anchors 0-5 only, so some positive pairs have negatives at one end, some at
    # neither; a repeated negative pair counts twice, and a pair (i, i) takes its end's once.
    keep_neg = [k for k, (a, _) in enumerate(neg) if a < 6] + [0, 0]
    a1 = torch.tensor([pos[k][0] for k in keep_pos] + [2])
    p = torch.tensor([pos[k][1] for k in keep_pos] + [2])
    a2 = torch.tensor([neg[k][0] for k in keep_neg])
    nn_ = torch.tensor([neg[k][1] for k in keep_neg])
    from vmfml.losses.baselines import PairwiseLiftedStructureLoss

    for tuples in [(a1, p, a2, nn_), (a1, p, a2[:0], nn_[:0])]:
        ours = PairwiseLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
        reference = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
        got_x, want_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        got, want = ours(got_x, labels, tuples), reference(want_x, labels, tuples)
        assert torch.isfinite(got)
        if got.requires_grad:
            got.backward()
            want.backward()
            torch.testing.assert_close(got_x.grad, want_x.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
