"""The losses the benchmark compares the vMF loss with, behind one interface.

Every loss here is an nn.Module with `forward(embeddings [B, D], labels [B]) -> scalar`,
`expects_normalized` (False only for softmax cross-entropy, which is given the features before
L2 normalization) and `has_classifier` (True when the loss holds one weight vector or proxy per
class, and so offers `logits(embeddings) -> [B, C]`).

Metric-learning losses come from pytorch-metric-learning (PML), not rewritten here; each builder
below sets the hyperparameters its authors recommend, with the citation next to them, including
the learning rate of the loss's own parameters relative to the network's (`lr_multiplier`,
applied through `param_groups`, vmfml.losses.base).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, regularizers
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor, nn

from vmfml import distributed

from .base import BaseLoss, check_batch, check_rows, refuse_unusable

__all__ = [
    "PMLClassifierLoss",
    "PMLLoss",
    "PairwiseLiftedStructureLoss",
    "SoftmaxCrossEntropyLoss",
    "arcface_loss",
    "contrastive_loss",
    "cosface_loss",
    "lifted_structure_loss",
    "multi_similarity_loss",
    "normalized_softmax_loss",
    "npair_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "softmax_loss",
    "triplet_loss",
]


class SoftmaxCrossEntropyLoss(BaseLoss):
    """Softmax cross-entropy over a linear classifier with bias, on the un-normalized features.

    The conventional classification baseline of the paper's claim 1; the classifier trains at
    the network's learning rate, as the final layer of any classification network does.

    Args:
        num_classes: number of classes C.
        embed_dim: feature size D.
    """

    expects_normalized: bool = False
    has_classifier: bool = True

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of features [B, D] with labels [B]; a 0-d tensor."""
        labels = check_batch(embeddings, labels, self.embed_dim, self.num_classes)
        return F.cross_entropy(self.logits(embeddings), labels)

    def logits(self, embeddings: Tensor) -> Tensor:
        """W x + b [B, C] for features [B, D] (an all-zero row is a valid feature here)."""
        check_rows(embeddings, self.embed_dim, directional=False)
        return self.classifier(embeddings.to(self.classifier.weight.dtype))


class PMLLoss(BaseLoss):
    """A pytorch-metric-learning loss (and optional miner) behind the benchmark interface.

    Args:
        loss: the PML loss; a loss with parameters (proxies, class weights) is a submodule here,
            so the optimizer sees its parameters through this module's `.parameters()`.
        num_classes: number of training classes C (labels are checked against it).
        embed_dim: embedding size D.
        miner: a PML miner whose tuples are passed to the loss.
        lr_multiplier: the learning rate of the loss's parameters relative to the network's.
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        num_classes: int,
        embed_dim: int,
        miner: BaseMiner | None = None,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.lr_multiplier = lr_multiplier
        self.loss = loss
        self.miner = miner
        self.num_classes = num_classes
        self.embed_dim = embed_dim

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The PML loss of embeddings [B, D] with labels [B]; a 0-d tensor.

        Under torchrun the loss (and the miner) sees the global batch of all processes
        (`distributed.global_batch`), so that tuples form across processes and W processes
        train what one process does with the same global batch.
        """
        labels = check_batch(embeddings, labels, self.embed_dim, self.num_classes)
        embeddings = distributed.global_batch(embeddings)
        labels = distributed.global_batch(labels)
        # Checked on the global batch, so that every process refuses the same step.
        refuse_unusable(embeddings, directional=self.expects_normalized)
        indices = None if self.miner is None else self.miner(embeddings, labels)
        return self.loss(embeddings, labels, indices)


class UnnormalizedPMLLoss(PMLLoss):
    """A PML loss trained on the embeddings before L2 normalization (retrieval still uses the
    normalized ones)."""

    expects_normalized: bool = False


class PMLClassifierLoss(PMLLoss):
    """A PML loss with one weight vector or proxy per class, which therefore gives class logits.

    Args:
        loss: the PML loss (must have `get_logits`).
        num_classes: number of classes C.
        embed_dim: embedding size D.
        logit_scale: multiplies PML's `get_logits` so that the softmax of `logits` is the
            posterior the loss trains (e.g. the proxy-anchor alpha); PML's distances (smaller =
            closer) are negated first.
        lr_multiplier: the learning rate of the proxies or class weights relative to the
            network's.
    """

    has_classifier: bool = True

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        num_classes: int,
        embed_dim: int,
        logit_scale: float = 1.0,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__(loss, num_classes, embed_dim, lr_multiplier=lr_multiplier)
        self.logit_scale = logit_scale

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class logits [B, C] of embeddings [B, D], in the scale the loss trains them."""
        check_rows(embeddings, self.embed_dim, directional=self.expects_normalized)
        weight = next(self.loss.parameters())
        out = self.loss.get_logits(embeddings.to(weight.dtype))
        if not self.loss.distance.is_inverted:
            out = -out
        return self.logit_scale * out


def softmax_loss(num_classes: int, embed_dim: int) -> SoftmaxCrossEntropyLoss:
    """Softmax cross-entropy with a linear classifier (weights and bias)."""
    return SoftmaxCrossEntropyLoss(num_classes, embed_dim)


def triplet_loss(
    num_classes: int, embed_dim: int, *, margin: float = 0.2, type_of_triplets: str = "semihard"
) -> PMLLoss:
    """Triplet loss on semi-hard triplets.

    FaceNet (Schroff, Kalenichenko and Philbin, CVPR 2015): squared Euclidean distance between
    unit embeddings, margin alpha = 0.2, semi-hard negatives (farther than the positive, but
    within the margin) mined in the batch.
    """
    distance = distances.LpDistance(power=2)
    loss = losses.TripletMarginLoss(margin=margin, distance=distance)
    miner = miners.TripletMarginMiner(
        margin=margin, type_of_triplets=type_of_triplets, distance=distance
    )
    return PMLLoss(loss, num_classes, embed_dim, miner=miner)


def contrastive_loss(
    num_classes: int, embed_dim: int, *, pos_margin: float = 0.0, neg_margin: float = 1.0
) -> PMLLoss:
    """Contrastive loss over all pairs in the batch.

    Hadsell, Chopra and LeCun (CVPR 2006): Euclidean distance, positives pulled together
    (pos_margin 0), negatives pushed beyond a margin m; m = 1 on the unit sphere (distances lie
    in [0, 2]), which is also PML's default.
    """
    loss = losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin)
    return PMLLoss(loss, num_classes, embed_dim)


class PairwiseLiftedStructureLoss(losses.LiftedStructureLoss):
    """PML's LiftedStructureLoss, computed in memory linear in the number of pairs.

    PML builds a [positive pairs x negative pairs] mask to find the negatives of each positive
    pair's two ends: about B^3 / C entries for a batch of B images of C classes (372 million at B = 256,
    1.5 GB a float32 copy, and about 67 s a step on 2 CPU cores; 17x softmax's step at B = 128, BENCHMARKS.md
    5.6). The negatives of the pair (i, j) are those of anchor i and those of anchor j, so the
    log-sum-exp over them is logaddexp(L_i, L_j), where L_a is the log-sum-exp over anchor a's
    own negative pairs: one pass over the negative pairs and one over the positive pairs. Same
    loss and gradients as PML's (tested against it in float64), pairs from a miner included.
    """

    def _compute_loss(
        self, pos_pairs: Tensor, neg_pairs: Tensor, indices_tuple: tuple[Tensor, ...]
    ) -> dict:
        a1, p, a2, _ = indices_tuple
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        remaining_neg = self.distance.margin(self.neg_margin, neg_pairs)
        rows = int(torch.cat([a1, p, a2]).max()) + 1
        # L_a = shift_a + log(sum exp(x - shift_a)) over anchor a's negative pairs; the shift
        # (each anchor's largest term) only keeps exp in range, so it carries no gradient.
        fill = torch.full((rows,), -torch.inf, dtype=remaining_neg.dtype, device=a2.device)
        shift = fill.scatter_reduce(0, a2, remaining_neg.detach(), "amax")
        has_neg = torch.isfinite(shift)
        shift = torch.where(has_neg, shift, torch.zeros_like(shift))
        sums = torch.zeros_like(shift).index_add(0, a2, torch.exp(remaining_neg - shift[a2]))
        # Anchors without negatives get a finite stand-in far below any term (exp of it is 0),
        # so that no -inf (and no NaN gradient) enters logaddexp.
        floor = torch.finfo(shift.dtype).min / 4
        lse = torch.where(has_neg, shift + torch.log(torch.where(has_neg, sums, 1.0)), floor)
        # PML takes the union of the two ends' negative pairs: a pair (i, i) has them once.
        union = torch.where(a1 == p, lse[a1], torch.logaddexp(lse[a1], lse[p]))
        # ... and a positive pair none of whose ends has a negative gets 0, as in PML.
        neg_pairs_loss = torch.where(has_neg[a1] | has_neg[p], union, 0.0).unsqueeze(1)
        remaining_pos = self.distance.margin(pos_pairs.unsqueeze(1), self.pos_margin)
        # Each positive pair is counted in both orders, hence the halving (as in PML).
        loss_per_pos_pair = torch.relu(neg_pairs_loss + remaining_pos) ** 2 / 2
        return {
            "loss": {"losses": loss_per_pos_pair, "indices": (a1, p), "reduction_type": "pos_pair"}
        }


def lifted_structure_loss(
    num_classes: int, embed_dim: int, *, neg_margin: float = 1.0, pos_margin: float = 0.0
) -> PMLLoss:
    """Lifted structured embedding loss.

    Oh Song, Xiang, Jegelka and Savarese (CVPR 2016), eq. 4: smooth log-sum-exp over the
    negatives of both ends of each positive pair, Euclidean distance, margin alpha = 1. PML's
    loss, computed in linear memory (PairwiseLiftedStructureLoss).
    """
    loss = PairwiseLiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin)
    return PMLLoss(loss, num_classes, embed_dim)


def npair_loss(num_classes: int, embed_dim: int, *, reg_lambda: float = 0.002) -> PMLLoss:
    """Multi-class N-pair loss (Sohn, NeurIPS 2016): softmax over inner products of each anchor
    with one positive per class in the batch.

    As in the paper, on un-normalized embeddings with an L2 penalty on their norms: Sohn's
    reference implementation (TensorFlow's `npairs_loss`, reg_lambda = 0.002) adds
    0.25 * lambda * (mean |anchor|^2 + mean |positive|^2), which is 0.5 * lambda times the mean
    squared norm over the batch. (On the unit sphere the logits would be cosines in [-1, 1], a
    softmax too flat to train well: R@1 77.5 in the first benchmark, the last of all losses.)
    The batch needs at least two samples of some classes (a class-balanced sampler).
    """
    loss = losses.NPairsLoss(
        distance=distances.DotProductSimilarity(normalize_embeddings=False),
        embedding_regularizer=regularizers.LpRegularizer(power=2),
        embedding_reg_weight=0.5 * reg_lambda,
    )
    return UnnormalizedPMLLoss(loss, num_classes, embed_dim)


def multi_similarity_loss(
    num_classes: int,
    embed_dim: int,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float = 0.1,
) -> PMLLoss:
    """Multi-similarity loss with its pair miner.

    Wang, Han, Huang, Dong and Scott (CVPR 2019): cosine similarity, alpha = 2, beta = 50,
    lambda (base) = 0.5 as in the authors' released code, mining margin epsilon = 0.1.
    """
    loss = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
    miner = miners.MultiSimilarityMiner(epsilon=epsilon)
    return PMLLoss(loss, num_classes, embed_dim, miner=miner)


def proxy_nca_loss(
    num_classes: int, embed_dim: int, *, softmax_scale: float = 9.0
) -> PMLClassifierLoss:
    """Proxy-NCA: softmax over negative squared distances to one learned proxy per class.

    Movshovitz-Attias, Toshev, Leung, Ioffe and Singh (ICCV 2017), with unit embeddings and
    proxies. softmax_scale = 9 is the setting of the commonly used re-implementation (both unit
    vectors scaled by 3), which Teh, DeVries and Taylor (ProxyNCA++, ECCV 2020) identify as the
    low temperature (1/9) the loss needs; PML's default scale of 1 barely trains.

    Proxies train at 100x the network's learning rate. The original authors released no code;
    the re-implementations train proxies far faster than the network, but with Adam and eps 1.0,
    where the ratio does not carry over to AdamW: dichotomies/proxy-nca (README: --lr-proxynca 1
    against lr 0.045, about 22x, on CUB and Cars) and ProxyNCA++ (euwern/proxynca_pp,
    config/cub.json: proxies 4e2 against 4e-3). 100x is Proxy-Anchor's rate for the same kind of
    parameter under AdamW (below), our choice for the optimizer used here.
    """
    loss = losses.ProxyNCALoss(num_classes, embed_dim, softmax_scale=softmax_scale)
    return PMLClassifierLoss(
        loss, num_classes, embed_dim, logit_scale=softmax_scale, lr_multiplier=100.0
    )


def proxy_anchor_loss(
    num_classes: int, embed_dim: int, *, margin: float = 0.1, alpha: float = 32.0
) -> PMLClassifierLoss:
    """Proxy-Anchor loss (Kim, Kim, Cho and Kwak, CVPR 2020): cosine similarity, margin
    delta = 0.1, scale alpha = 32, proxies at 100x the network's learning rate (the authors'
    tjddus9597/Proxy-Anchor-CVPR2020, code/train.py: `{'params': criterion.parameters(),
    'lr': float(args.lr) * 100}` in an AdamW whose weight decay applies to the proxies too).
    """
    loss = losses.ProxyAnchorLoss(num_classes, embed_dim, margin=margin, alpha=alpha)
    return PMLClassifierLoss(loss, num_classes, embed_dim, logit_scale=alpha, lr_multiplier=100.0)


def normalized_softmax_loss(
    num_classes: int, embed_dim: int, *, temperature: float = 0.05
) -> PMLClassifierLoss:
    """Normalized softmax (Zhai and Wu, "Classification is a strong baseline for deep metric
    learning", BMVC 2019): cosine logits to normalized class weights, temperature 0.05. Class
    weights at the network's learning rate, as in the authors' azgo14/classification_metric_learning
    (metric_learning/train_classification.py: one SGD over model and loss parameters).
    """
    loss = losses.NormalizedSoftmaxLoss(num_classes, embed_dim, temperature=temperature)
    return PMLClassifierLoss(loss, num_classes, embed_dim)


def arcface_loss(
    num_classes: int, embed_dim: int, *, margin: float = 28.6, scale: float = 64.0
) -> PMLClassifierLoss:
    """ArcFace (Deng, Guo, Xue and Zafeiriou, CVPR 2019): additive angular margin m = 0.5 rad
    (PML takes degrees: 28.6), scale s = 64. `logits` are s cos(theta), without the margin.
    Class weights at the network's learning rate, as in the authors' deepinsight/insightface
    (arcface_torch/train_v2.py: one SGD group each for backbone and partial FC, same lr;
    arcface_mxnet/sample_config.py: fc7_lr_mult = 1.0).
    """
    loss = losses.ArcFaceLoss(num_classes, embed_dim, margin=margin, scale=scale)
    return PMLClassifierLoss(loss, num_classes, embed_dim)


def cosface_loss(
    num_classes: int, embed_dim: int, *, margin: float = 0.35, scale: float = 64.0
) -> PMLClassifierLoss:
    """CosFace (Wang et al., CVPR 2018): additive cosine margin m = 0.35, scale s = 64.
    `logits` are s cos(theta), without the margin. Class weights at the network's learning rate:
    the CosFace authors released no training code; insightface's CosFace setting
    (arcface_mxnet/sample_config.py: s 64, m 0.35, fc7_lr_mult = 1.0) is the reference used.
    """
    loss = losses.CosFaceLoss(num_classes, embed_dim, margin=margin, scale=scale)
    return PMLClassifierLoss(loss, num_classes, embed_dim)
