"""Backbone feature API, the DINO head, diagnostics and optimiser helpers."""

import math

import pytest
import torch
import torch.nn.functional as F

from procvision.models import diagnostics as diag
from procvision.models.backbone import Backbone, random_backbone
from procvision.models.head import DINOHead
from procvision.models.optim import clip_grad_per_param_, param_groups

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def tiny_vit(**kw):
    return Backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, **TINY, **kw).eval()


def test_vit_features_any_size():
    b = tiny_vit()
    assert b.embed_dim == 32 and b.patch_size == 8 and b.is_vit
    for size in (32, 16, 24):
        x = torch.randn(2, 3, size, size)
        f = b.forward_features(x)
        assert f["cls"].shape == (2, 32)
        assert f["patches"].shape == (2, size // 8, size // 8, 32)
        torch.testing.assert_close(b(x), f["cls"])
    # cls is token 0 after the final norm of timm's forward_features
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(b(x), b.model.forward_features(x)[:, 0])


def test_convnet_backbone():
    b = Backbone("resnet18", img_size=32).eval()
    f = b.forward_features(torch.randn(2, 3, 64, 64))
    assert not b.is_vit and b.patch_size is None
    assert f["cls"].shape == (2, 512) and f["patches"].shape == (2, 2, 2, 512)
    torch.testing.assert_close(f["cls"], f["patches"].mean(dim=(1, 2)))
    with pytest.raises(TypeError):
        Backbone("resnet18", patch_size=4)


def test_fingerprint_and_rebuild():
    b = tiny_vit()
    again = Backbone(**b.config)
    again.load_state_dict(b.state_dict())
    assert again.fingerprint() == b.fingerprint()
    with torch.no_grad():
        again.model.cls_token.add_(1e-3)
    assert again.fingerprint() != b.fingerprint()


def test_random_backbone_is_seeded():
    a = random_backbone("vit_tiny_patch16_224", 32, 8, seed=3, **TINY)
    b = random_backbone("vit_tiny_patch16_224", 32, 8, seed=3, **TINY)
    c = random_backbone("vit_tiny_patch16_224", 32, 8, seed=4, **TINY)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not a.training


def test_head_shapes_and_norm_last_layer():
    h = DINOHead(32, out_dim=64, hidden_dim=48, bottleneck_dim=16)
    out = h(torch.randn(5, 32))
    assert out.shape == (5, 64)
    g = h.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # prototypes have unit norm and inputs are normalised: |logit| <= 1
    assert out.abs().max() <= 1 + 1e-5
    w = h.last_layer.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(64))
    assert DINOHead(
        32, 64, 48, 16, norm_last_layer=False
    ).last_layer.parametrizations.weight.original0.requires_grad
    assert sum(isinstance(m, torch.nn.Linear) for m in DINOHead(8, 4, 8, 4, n_layers=1).mlp) == 1


def test_param_groups_exclude_bias_norm_and_frozen():
    h = DINOHead(8, 16, 8, 4)
    groups = {g["name"]: g["params"] for g in param_groups(h.named_parameters())}
    ids = {n: id(p) for n, p in h.named_parameters()}
    decay = {id(p) for p in groups["decay"]}
    no_decay = {id(p) for p in groups["no_decay"]}
    assert ids["mlp.0.weight"] in decay and ids["mlp.0.bias"] in no_decay
    assert ids["last_layer.parametrizations.weight.original1"] in decay
    assert ids["last_layer.parametrizations.weight.original0"] not in decay | no_decay  # frozen g
    b = tiny_vit()
    groups = {g["name"]: g["params"] for g in param_groups(b.named_parameters())}
    assert all(p.ndim >= 2 for p in groups["decay"]) and all(
        p.ndim == 1 for p in groups["no_decay"]
    )


def test_clip_per_parameter():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
    norms = clip_grad_per_param_([a, b], 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))  # below the limit: unchanged
    assert clip_grad_per_param_([torch.zeros(2, requires_grad=True)], 1.0) is None


def test_diagnostics():
    k = 8
    uniform = torch.full((4, k), 1.0 / k)
    assert diag.entropy(uniform).item() == pytest.approx(math.log(k), rel=1e-5)
    onehot = F.one_hot(torch.zeros(4, dtype=torch.long), k).float()
    assert diag.entropy(onehot).item() == pytest.approx(0.0, abs=1e-6)
    assert diag.marginal_entropy(onehot).item() == pytest.approx(0.0, abs=1e-6)
    assert diag.marginal_entropy(torch.eye(k)).item() == pytest.approx(math.log(k), rel=1e-5)
    # KL(p || q) = sum p log(p/q)
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert diag.kl_divergence(p, q.log()).item() == pytest.approx(want, rel=1e-6)
    # collapse: identical rows -> std 0, effective rank 1; orthonormal rows -> rank N
    same = torch.randn(1, 16).expand(10, 16)
    assert diag.cls_std(same).item() == pytest.approx(0.0, abs=1e-6)
    assert diag.effective_rank(same).item() == pytest.approx(1.0, abs=1e-4)
    assert diag.effective_rank(torch.eye(6, 16) * 3).item() == pytest.approx(6.0, rel=1e-5)


def test_kl_identity_used_for_logging():
    """mean over pairs of KL(t_q || s_v) == loss - mean_q H(t_q) (what the module logs)."""
    from procvision.models.loss import pairwise_cross_entropy, student_log_probs, teacher_probs

    g = torch.Generator().manual_seed(0)
    t = teacher_probs(torch.randn(2, 3, 7, generator=g), torch.zeros(1, 7), 0.5)
    s = student_log_probs(torch.randn(5, 3, 7, generator=g), 0.3)
    kls = [diag.kl_divergence(t[q], s[v]) for q in range(2) for v in range(5) if v != q]
    want = torch.stack(kls).mean()
    torch.testing.assert_close(pairwise_cross_entropy(t, s) - diag.entropy(t), want)


def test_head_logits_stay_fp32_under_bf16_autocast():
    head = DINOHead(16, out_dim=32, hidden_dim=16, bottleneck_dim=8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head(x)
    assert y.dtype == torch.float32  # the loss divides these cosines by ~0.04
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = head.last_layer(torch.nn.functional.normalize(head.mlp(x).float(), dim=-1))
    assert z.dtype == torch.bfloat16  # what would happen without the guard
