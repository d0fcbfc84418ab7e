"""The vMF loss's additive angular margin and sub-centres (issue 24), against float64 references
written here from their definitions: numpy arccos for the margin, brute-force spherical k-means
for the sub-centres, scipy's logsumexp for the mixture's class logits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ive, logsumexp

from vmfml.directions.subcentres import estimate_subcentres
from vmfml.losses import VMFLoss, create_loss
from vmfml.train.config import load_config

C, D, KAPPA = 3, 5, 16.0


def batch(seed: int = 0, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=gen, dtype=torch.float64)
    return x, torch.arange(n) % C


class Pass:
    """A full pass over fixed embeddings, as the trainer's FullPass hands them over."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.x, self.labels, self.calls = x, labels, 0

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError("the sub-centres' refresh must take the sums from its one pass")

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.x, self.labels


def reference_loss(
    cosines: np.ndarray, labels: np.ndarray, margin: float, log_w: np.ndarray
) -> float:
    """Mean cross-entropy of logits log sum_k w_ck exp(kappa cos'_ick), cos' = cos(arccos + m)
    on the true class (cos - m sin m where arccos + m > pi); cosines [B, C, K], log_w [C, K]."""
    cos = cosines.copy()
    rows = np.arange(len(labels))
    theta = np.arccos(np.clip(cos[rows, labels], -1.0, 1.0))
    cos[rows, labels] = np.where(
        theta + margin <= np.pi, np.cos(theta + margin), cos[rows, labels] - margin * np.sin(margin)
    )
    logits = logsumexp(KAPPA * cos + log_w[None], axis=2)
    return float(np.mean(logsumexp(logits, axis=1) - logits[rows, labels]))


# ---- (a) the defaults are today's loss -------------------------------------------------------


@pytest.mark.parametrize("directions", ["accumulate", "global", "ema", "learned"])
def test_margin_0_and_one_subcentre_are_todays_loss_and_gradients(directions: str) -> None:
    x, labels = batch()
    extra = {"subcentres": 1} if directions == "global" else {}
    results = []
    for opts in ({}, {"angular_margin": 0.0, **extra}):
        loss = create_loss("vmf", C, D, seed=3, directions=directions, **opts)
        emb = x.clone().requires_grad_()
        value = loss(emb, labels)
        value.backward()
        results.append((value.detach(), emb.grad))
    (today, today_grad), (new, new_grad) = results
    assert torch.equal(today, new) and torch.equal(today_grad, new_grad)
    # ... and today's loss is the paper's, -mean log softmax(kappa mu . x), in float64.
    mu = create_loss("vmf", C, D, seed=3, directions=directions).directions.directions()
    cos = (F.normalize(x, dim=1) @ mu.double().t()).detach().numpy()[:, :, None]
    expected = reference_loss(cos, labels.numpy(), 0.0, np.zeros((C, 1)))
    assert float(today) == pytest.approx(expected, rel=1e-6)  # mu is float32


def test_default_settings_give_no_new_loss_options() -> None:
    options = load_config(None, {"directions": "global"}).loss_options()
    assert options == {"directions": "global"}
    options = load_config(None, {"directions": "global", "vmf_margin": 0.5, "vmf_subcentres": 3})
    assert options.loss_options() == {
        "directions": "global",
        "angular_margin": 0.5,
        "subcentres": 3,
    }


# ---- (b) the margin ------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.2])
def test_margin_loss_and_gradient_match_a_float64_reference(margin: float) -> None:
    x, labels = batch(1)
    loss = VMFLoss(C, D, kappa=KAPPA, directions="ema", angular_margin=margin).double()
    mu = loss.directions.directions().detach()
    # Row 0 almost opposite its class's mean: theta + m > pi, the monotone branch.
    x[0] = -mu[labels[0]] + 0.01 * x[0]
    emb = x.clone().requires_grad_()
    value = loss.eval()(emb, labels)  # eval: nothing observed, mu stays put
    value.backward()

    cos = (F.normalize(x, dim=1) @ mu.t()).numpy()
    assert np.arccos(cos[0, labels[0]]) + margin > np.pi
    assert float(value.detach()) == pytest.approx(
        reference_loss(cos[:, :, None], labels.numpy(), margin, np.zeros((C, 1))), rel=1e-12
    )

    # The gradient: an independent torch float64 formula through arccos, by autograd.
    ref = x.clone().requires_grad_()
    cosines = F.normalize(ref, dim=1) @ mu.t()
    true = cosines[torch.arange(len(labels)), labels]
    theta = torch.acos(true)
    shifted = torch.where(
        theta + margin <= math.pi, torch.cos(theta + margin), true - margin * math.sin(margin)
    )
    logits = KAPPA * cosines.index_put((torch.arange(len(labels)), labels), shifted)
    F.cross_entropy(logits, labels).backward()
    torch.testing.assert_close(emb.grad, ref.grad, rtol=1e-10, atol=1e-12)


def test_margin_with_per_class_kappas_matches_the_mixture_reference() -> None:
    x, labels = batch(3, n=30)
    loss = VMFLoss(C, D, kappa=KAPPA, class_kappa=0.5, angular_margin=0.4).double()
    loss.directions.observe(F.normalize(x, dim=1), labels)
    loss.end_period(lambda: (_ for _ in ()).throw(AssertionError("accumulate needs no pass")))
    kappas = loss.class_kappas().numpy()
    mu = loss.directions.mu.numpy()
    cos = F.normalize(x, dim=1).numpy() @ mu.T
    rows, y = np.arange(len(labels)), labels.numpy()
    theta = np.arccos(cos[rows, y])
    cos[rows, y] = np.where(
        theta + 0.4 <= np.pi, np.cos(theta + 0.4), cos[rows, y] - 0.4 * np.sin(0.4)
    )
    nu = D / 2 - 1  # log C_d(kappa) from scipy's exponentially scaled Bessel function
    log_c = nu * np.log(kappas) - D / 2 * np.log(2 * np.pi) - (np.log(ive(nu, kappas)) + kappas)
    logits = log_c[None] + kappas[None] * cos
    expected = np.mean(logsumexp(logits, axis=1) - logits[rows, y])
    assert float(loss.eval()(x, labels).detach()) == pytest.approx(expected, rel=1e-10)


def test_margin_loss_passes_gradcheck_and_logits_carry_no_margin() -> None:
    x, labels = batch(2, n=6)
    loss = VMFLoss(C, D, kappa=KAPPA, directions="learned", angular_margin=0.3).double()
    assert torch.autograd.gradcheck(
        lambda e: loss(e, labels), (x.clone().requires_grad_(),), eps=1e-6, atol=1e-6
    )
    plain = VMFLoss(C, D, kappa=KAPPA, directions="learned").double()
    assert torch.equal(loss.logits(x), plain.logits(x))  # the posterior has no margin
    assert float(loss(x, labels).detach()) > float(
        plain(x, labels).detach()
    )  # the margin makes it harder


# ---- (c) the sub-centres -------------------------------------------------------------------------


def modes(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Two classes of 7 unit points in 3 tight, well-apart clumps each (sizes 3, 2, 2)."""
    gen = torch.Generator().manual_seed(seed)
    points, labels, clumps = [], [], []
    for c in range(2):
        centres = F.normalize(torch.randn(3, 3, generator=gen, dtype=torch.float64), dim=1)
        clumps.append(centres)
        for k, size in enumerate((3, 2, 2)):
            noise = 0.05 * torch.randn(size, 3, generator=gen, dtype=torch.float64)
            points.append(F.normalize(centres[k] + noise, dim=1))
            labels += [c] * size
    return torch.cat(points), torch.tensor(labels), clumps


def brute_force_kmeans(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best partition of points into k non-empty clusters by the spherical k-means objective
    sum_k ||sum of cluster k||, over every assignment: its unit centres and their sizes."""
    best, best_value = None, -np.inf
    for assign in itertools.product(range(k), repeat=len(points)):
        assign = np.array(assign)
        if len(set(assign)) < k:
            continue
        sums = np.stack([points[assign == j].sum(0) for j in range(k)])
        value = np.linalg.norm(sums, axis=1).sum()
        if value > best_value + 1e-12:
            best, best_value = sums, value
    assert best is not None
    centres = best / np.linalg.norm(best, axis=1, keepdims=True)
    sizes = np.array([(np.argmax(points @ centres.T, axis=1) == j).sum() for j in range(k)])
    return centres, sizes


def test_subcentres_are_the_brute_force_spherical_kmeans_optimum() -> None:
    x, labels, _ = modes()
    centres, log_weights, estimated = estimate_subcentres(x, labels, 2, 3)
    assert estimated.all()
    for c in range(2):
        points = x[labels == c].numpy()
        want, sizes = brute_force_kmeans(points, 3)
        got = centres[c].numpy()
        # The same centres, in some order.
        order = np.argmax(got @ want.T, axis=1)
        assert sorted(order) == [0, 1, 2]
        np.testing.assert_allclose(got, want[order], atol=1e-12)
        np.testing.assert_allclose(np.exp(log_weights[c].numpy()), sizes[order] / len(points))
        # Every sub-centre is the normalized mean of the points nearest to it.
        nearest = np.argmax(points @ got.T, axis=1)
        for k in range(3):
            mean = points[nearest == k].sum(0)
            np.testing.assert_allclose(got[k], mean / np.linalg.norm(mean), atol=1e-12)


def test_subcentre_loss_matches_the_float64_mixture_reference() -> None:
    x, labels, _ = modes(1)
    train_pass = Pass(x, labels)
    loss = create_loss("vmf", 2, 3, seed=0, directions="global", subcentres=3, angular_margin=0.2)
    loss.double()
    loss.start(train_pass)  # global's start ("data"): one pass, k-means on it
    assert train_pass.calls == 1
    emb, y = batch(4, n=8)[0][:, :3].clone().requires_grad_(), torch.arange(8) % 2
    value = loss(emb, y)
    centres = loss.subcentre_mu.numpy()
    log_w = loss.subcentre_log_weights.numpy()
    cos = np.einsum("bd,ckd->bck", F.normalize(emb.detach(), dim=1).numpy(), centres)
    assert float(value.detach()) == pytest.approx(
        reference_loss(cos, y.numpy(), 0.2, log_w), rel=1e-12
    )
    # The strategy's mean directions came from the same pass: each class's normalized sum.
    for c in range(2):
        mean = x[labels == c].sum(0)
        torch.testing.assert_close(loss.directions.mu[c], mean / mean.norm())
    # The posterior: the mixture's class logits, without the margin.
    plain = reference_loss(cos, y.numpy(), 0.0, log_w)
    assert float(F.cross_entropy(loss.logits(emb), y).detach()) == pytest.approx(plain, rel=1e-12)
    assert torch.autograd.gradcheck(
        lambda e: loss(e, y), (emb.detach().clone().requires_grad_(),), eps=1e-6, atol=1e-6
    )


def test_subcentres_start_as_copies_of_the_random_directions_and_survive_a_checkpoint() -> None:
    x, labels, _ = modes(2)
    loss = create_loss(
        "vmf", 2, 3, seed=0, directions="global", init="random", subcentres=2
    ).double()
    single = create_loss("vmf", 2, 3, seed=0, directions="global", init="random").double()
    train_pass = Pass(x, labels)
    loss.start(train_pass)
    single.start(train_pass)
    assert train_pass.calls == 0  # a random start needs no pass
    emb, y = batch(5, n=6)[0][:, :3], torch.arange(6) % 2
    # Two copies of one direction, each of weight 1/2: the one-centre loss.
    assert float(loss(emb, y)) == pytest.approx(float(single(emb, y)), rel=1e-12)
    loss.end_period(train_pass)
    assert train_pass.calls == 1
    restored = create_loss(
        "vmf", 2, 3, seed=9, directions="global", init="random", subcentres=2
    ).double()
    restored.restore_state(loss.checkpoint_state())
    assert torch.equal(restored.subcentre_mu, loss.subcentre_mu)
    assert torch.equal(restored(emb, y), loss(emb, y))


# ---- (d) bad options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"angular_margin": -0.1}, r"angular_margin must lie in \[0, pi/2\) radians"),
        ({"angular_margin": 1.6}, r"angular_margin must lie in \[0, pi/2\) radians"),
        ({"directions": "global", "subcentres": 0}, "subcentres must be an integer >= 1"),
        ({"directions": "global", "subcentres": 2.5}, "subcentres must be an integer >= 1"),
        ({"directions": "accumulate", "subcentres": 2}, "unknown option.*subcentres"),
        (
            {"directions": "global", "subcentres": 2, "class_kappa": 0.5},
            "class_kappa and subcentres > 1 do not combine",
        ),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(opts: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_loss("vmf", C, D, **opts)


def test_subcentres_off_global_are_refused_by_the_loss_too() -> None:
    with pytest.raises(ValueError, match="subcentres > 1 needs the global directions"):
        VMFLoss(C, D, directions="ema", subcentres=2)


def test_more_subcentres_than_a_class_has_images_are_refused_naming_the_class() -> None:
    x, labels, _ = modes()
    keep = torch.cat([torch.arange(7), torch.tensor([7, 8])])  # class 1 keeps 2 images
    loss = create_loss("vmf", 2, 3, directions="global", subcentres=3)
    with pytest.raises(ValueError, match=r"1 classes have fewer \(class \(images\)\): 1 \(2\)"):
        loss.start(Pass(x[keep], labels[keep]))


def test_a_full_pass_of_class_sums_only_is_refused() -> None:
    loss = create_loss("vmf", 2, 3, directions="global", subcentres=2)
    with pytest.raises(ValueError, match="need a full pass that yields the embeddings"):
        loss.end_period(lambda: (torch.zeros(2, 3), torch.zeros(2)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vmf_margin": -0.5}, r"vmf_margin must be in \[0, pi/2\)"),
        ({"vmf_subcentres": 0}, "vmf_subcentres must be 1 or more"),
        (
            {"vmf_subcentres": 3},
            "--vmf-subcentres does not apply to --loss vmf --directions accumulate",
        ),
        ({"loss": "triplet", "vmf_margin": 0.5}, "--vmf-margin does not apply to --loss triplet"),
    ],
)
def test_bad_flags_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)
