"""CIDERLoss against a line-by-line transcription of the authors' code (deeplearning-wisc/cider,
utils/losses.py: CompLoss and the EMA DisLoss; train_cider.py: loss = w * comp + dis), on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vmfml.losses import create_loss


def _official(features, prototypes, labels, n_cls, proto_m=0.5, temp=0.1, w=1.0):
    """The authors' DisLoss.forward then CompLoss.forward, `.cuda()` removed."""
    prototypes = prototypes.clone()
    for j in range(len(features)):
        prototypes[labels[j].item()] = F.normalize(
            prototypes[labels[j].item()] * proto_m + features[j] * (1 - proto_m), dim=0
        )
    updated = prototypes.detach()
    cls = torch.arange(0, n_cls).contiguous().view(-1, 1)
    mask = 1 - torch.eq(cls, cls.T).float()
    logits = torch.div(torch.matmul(prototypes, prototypes.T), temp)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(n_cls).view(-1, 1), 0)
    mask = mask * logits_mask
    mean_prob_neg = torch.log((mask * torch.exp(logits)).sum(1) / mask.sum(1))
    mean_prob_neg = mean_prob_neg[~torch.isnan(mean_prob_neg)]
    dis = temp / temp * mean_prob_neg.mean()
    # CompLoss(temperature=temp, base_temperature=0.07)
    protos = F.normalize(updated, dim=1)
    proxy_labels = torch.arange(0, n_cls)
    lab = labels.contiguous().view(-1, 1)
    mask = torch.eq(lab, proxy_labels.view(1, -1)).float()
    feat_dot_prototype = torch.div(torch.matmul(features, protos.T), temp)
    logits_max, _ = torch.max(feat_dot_prototype, dim=1, keepdim=True)
    logits = feat_dot_prototype - logits_max.detach()
    log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
    comp = -(temp / 0.07) * (mask * log_prob).sum(1).mean()
    return w * comp + dis, updated


@pytest.mark.parametrize("momentum", [0.5, 0.95])
def test_loss_gradient_and_prototypes_equal_the_authors_code(momentum: float) -> None:
    g = torch.Generator().manual_seed(0)
    n_cls, dim = 5, 8
    x = F.normalize(torch.randn(24, dim, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, n_cls, (24,), generator=g)
    start = F.normalize(torch.randn(n_cls, dim, generator=g, dtype=torch.float64), dim=1)

    loss = create_loss("cider", n_cls, dim, momentum=momentum).double()
    loss.prototypes.copy_(start)
    ours_x = x.clone().requires_grad_(True)
    ours = loss(ours_x, labels)
    ours.backward()

    ref_x = x.clone().requires_grad_(True)
    # the authors' model output is F.normalize(head(x)); the unit rows go through it here too
    ref, updated = _official(F.normalize(ref_x, dim=1), start, labels, n_cls, proto_m=momentum)
    ref.backward()

    assert float(ours) == pytest.approx(float(ref), rel=1e-12)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.prototypes, updated, rtol=0, atol=1e-14)


def test_start_sets_prototypes_to_the_training_class_means_and_state_round_trips() -> None:
    sums = torch.tensor([[3.0, 0.0], [0.0, -2.0], [1.0, 1.0]], dtype=torch.float64)
    loss = create_loss("cider", 3, 2)
    loss.start(lambda: (sums, torch.tensor([3, 2, 2])))
    torch.testing.assert_close(loss.prototypes, F.normalize(sums.float(), dim=1))
    other = create_loss("cider", 3, 2)
    other.restore_state(loss.checkpoint_state())
    assert torch.equal(other.prototypes, loss.prototypes)


def test_options_and_bad_input_are_checked() -> None:
    with pytest.raises(ValueError, match="momentum must be in"):
        create_loss("cider", 3, 4, momentum=1.0)
    with pytest.raises(ValueError, match="unknown option"):
        create_loss("cider", 3, 4, margin=0.1)
    loss = create_loss("cider", 3, 4)
    with pytest.raises(ValueError, match="labels"):
        loss(F.normalize(torch.randn(2, 4), dim=1), torch.tensor([0, 3]))
