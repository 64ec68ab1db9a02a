"""ExReNet's correlation layers (Winkelbauer et al., Eq. 1–4) and their auxiliary triplet matching loss (Eq. 5–7).

Feature maps are (B, C, H, W) and unit-length along C, so every correlation is a cosine in [-1, 1] and the triplet
margin of 1 has a fixed meaning. The first map is the reference keyframe's, the second the query's; channel w of a
correlation indexes the second map's cells row-major (w = y2 * W + x2; the paper's order is transposed, which only
renames channels)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def extensive_correlation(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Eq. 1: every cell of f1 against every cell of f2 -> (B, H2*W2, H1, W1)."""
    B, C, H1, W1 = f1.shape
    c = torch.matmul(f2.flatten(2).transpose(1, 2), f1.flatten(2))  # (B, N2, N1)
    return c.reshape(B, -1, H1, W1)


def guided_correlation(f1: torch.Tensor, f2: torch.Tensor, coarse: torch.Tensor, coarse_shape: tuple[int, int],
                       border: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 2–4: each fine cell of f1 against the d x d fine cells of f2 around the match (argmax) of its parent cell
    in the coarse correlation, d = u (1 + 2 border), u the resolution ratio. Returns (B, H*W, d*d) (candidate k =
    dy * d + dx of the window), the flat index of every candidate in f2 padded by border*u (for the auxiliary loss)
    and each window's top-left cell (y, x) in f2 (B, H*W, 2), which may lie outside f2.

    The candidates are gathered from the full fine correlation rather than computed one by one: at 32 x 24 cells
    the full product is one 768 x 1280 matrix multiply, cheaper on CPU and in ONNX than a per-cell gather of
    feature vectors (which would materialize C x 144 values per cell)."""
    B, C, H, W = f1.shape
    Hc, Wc = coarse_shape
    u = H // Hc
    p = border * u
    d = u * (1 + 2 * border)
    w_max = coarse.argmax(1)                                  # (B, Hc, Wc), flat index into f2's coarse cells
    my, mx = w_max // Wc, w_max % Wc
    # parent coarse cell of every fine cell (nearest upsampling of the match coordinates)
    my = F.interpolate(my[:, None].float(), size=(H, W), mode="nearest")[:, 0].long()
    mx = F.interpolate(mx[:, None].float(), size=(H, W), mode="nearest")[:, 0].long()
    f2p = F.pad(f2, (p, p, p, p))                             # zero features outside the image: correlation 0
    Wp = W + 2 * p
    full = torch.matmul(f1.flatten(2).transpose(1, 2), f2p.flatten(2))  # (B, H*W, Hp*Wp)
    off = torch.arange(d, device=f1.device)
    # window top-left in padded coordinates: (my - border) * u + p = my * u
    rows = (my * u).reshape(B, H * W, 1, 1) + off.reshape(1, 1, d, 1)
    cols = (mx * u).reshape(B, H * W, 1, 1) + off.reshape(1, 1, 1, d)
    idx = (rows * Wp + cols).reshape(B, H * W, d * d)
    g = torch.gather(full, 2, idx)                            # (B, H*W, d*d)
    origin = torch.stack([my * u - p, mx * u - p], -1).reshape(B, H * W, 2).to(f1.dtype)
    return g, idx, origin


def cell_matches(cells1: torch.Tensor, cells2: torch.Tensor, valid: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """n(y, x, w) > 0 of Eq. 7 for every cell pair: (B, n1, n2) bool, from per-pixel matches (B, P) given as
    flat cell indices in each map and a validity mask (pixel seen in both images)."""
    B = cells1.shape[0]
    b = torch.arange(B, device=cells1.device)[:, None].expand_as(cells1)
    flat = (b * n1 + cells1) * n2 + cells2
    pos = torch.zeros(B * n1 * n2, dtype=torch.bool, device=cells1.device)
    pos[flat[valid]] = True
    return pos.reshape(B, n1, n2)


def triplet_matching_loss(corr: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor | None = None,
                          max_negatives: int | None = None, max_positives: int | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 5–7: for every cell (row) and every correct match w of it, the mean hinge max(0, C(q) - C(w) + 1) over
    the candidates q that are not matches; averaged over all (cell, w) with at least one negative.
    corr, pos: (B, N1, K) (K candidates per cell); valid: (B, N1, K) which candidates exist (guided windows run off
    the image). max_negatives / max_positives: an unbiased random subset per cell, for the large guided layer."""
    valid = torch.ones_like(pos) if valid is None else valid
    neg = valid & ~pos
    pos = pos & valid
    c_pos, m_pos = _random_subset(corr, pos, max_positives, generator)
    c_neg, m_neg = _random_subset(corr, neg, max_negatives, generator)
    hinge = torch.relu(c_neg.unsqueeze(-2) - c_pos.unsqueeze(-1) + 1.0)   # (B, N1, K_pos, K_neg)
    m = (m_pos.unsqueeze(-1) & m_neg.unsqueeze(-2)).float()
    n_neg = m_neg.float().sum(-1, keepdim=True).clamp(min=1)              # (B, N1, 1)
    per_pos = (hinge * m).sum(-1) / n_neg                                  # (B, N1, K_pos)
    use = m_pos & (m_neg.any(-1, keepdim=True))
    if not use.any():
        return corr.sum() * 0.0
    return per_pos[use].mean()


def _random_subset(corr: torch.Tensor, mask: torch.Tensor, k: int | None, generator):
    """Up to k entries of each row where mask is set, chosen uniformly (an unbiased sample of the row's mean)."""
    if k is None or corr.shape[-1] <= k:
        return corr, mask
    keys = torch.rand(mask.shape, generator=generator, device=corr.device).masked_fill(~mask, 2.0)
    pick = keys.topk(k, -1, largest=False).indices
    return torch.gather(corr, -1, pick), torch.gather(mask, -1, pick)
