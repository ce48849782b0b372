"""The transaction anomaly scorer: an autoencoder in PyTorch over scaled features.

Preprocessing is fitted with scikit-learn (StandardScaler on the tabular columns, PCA on the
merchant text embedding) and applied on the device as plain tensor arithmetic. The raw score is
the reconstruction error; it is calibrated to [0, 1] as the share of held-out history events
that scored lower, so a score of 0.99 means "rarer than 99 % of normal traffic".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from torch import nn

from processor.models.features import FeatureSpec, tabular

log = logging.getLogger(__name__)

CLIP = 10.0
CPU = torch.device("cpu")
QUANTILES = 1001


class Autoencoder(nn.Module):
    def __init__(self, width: int, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, bottleneck),
            nn.ReLU(),
            nn.Linear(bottleneck, hidden),
            nn.ReLU(),
            nn.Linear(hidden, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class Preprocessing:
    """Fitted parameters, kept as arrays so that they save as JSON and run on any device."""

    mean: np.ndarray
    scale: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    pca_scale: np.ndarray
    quantiles: np.ndarray

    def to_json(self) -> dict:
        return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        return cls(**{k: np.asarray(v, dtype=np.float32) for k, v in data.items()})


@dataclass(frozen=True)
class Scores:
    raw: np.ndarray
    calibrated: np.ndarray
    group_shares: np.ndarray  # (n, groups)
    groups: list[str]

    def top(self, row: int, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.group_shares[row])[:k]
        return [(self.groups[i], float(self.group_shares[row, i])) for i in order]


class AnomalyScorer:
    """Scores transactions; built by ``fit`` or loaded from an artifact."""

    def __init__(
        self,
        spec: FeatureSpec,
        prep: Preprocessing,
        net: Autoencoder,
        device: torch.device = CPU,
    ) -> None:
        self.spec = spec
        self.prep = prep
        self.device = device
        self.net = net.to(device).eval()
        self.groups = list(dict.fromkeys(spec.groups))
        self._members = [
            torch.tensor([c for c, g in enumerate(spec.groups) if g == group], device=device)
            for group in self.groups
        ]
        self._t = {
            k: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device)
            for k, v in prep.__dict__.items()
        }

    def design(self, tab: np.ndarray, text: np.ndarray | None) -> torch.Tensor:
        """Scaled, clipped model input on the device."""
        t = self._t
        x = (torch.as_tensor(tab, device=self.device) - t["mean"]) / t["scale"]
        if self.spec.text_dims:
            if text is None:
                raise ValueError("this model uses merchant text embeddings; none were given")
            e = torch.as_tensor(text, device=self.device, dtype=torch.float32)
            z = ((e - t["pca_mean"]) @ t["pca_components"].T) / t["pca_scale"]
            x = torch.cat([x, z], dim=1)
        return x.clamp(-CLIP, CLIP)

    @torch.inference_mode()
    def score_matrix(self, tab: np.ndarray, text: np.ndarray | None) -> Scores:
        x = self.design(tab, text)
        err = (self.net(x) - x) ** 2
        raw = err.mean(dim=1)
        shares = self._explain(x, raw)
        raw_np = raw.double().cpu().numpy()
        q = self.prep.quantiles.astype(np.float64)
        calibrated = np.interp(raw_np, q, np.linspace(0.0, 1.0, len(q)))
        return Scores(raw_np, calibrated, shares.float().cpu().numpy(), self.groups)

    def _explain(self, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Each feature group's share of the score, by counterfactual: how much the error falls
        when that group alone is set to its training mean (0 once scaled). Shares of rows that
        no single group explains can sum to less than 1."""
        n, groups = len(x), len(self._members)
        variants = x.unsqueeze(0).repeat(groups, 1, 1)
        for g, members in enumerate(self._members):
            variants[g][:, members] = 0.0
        flat = variants.reshape(groups * n, -1)
        without = ((self.net(flat) - flat) ** 2).mean(dim=1).reshape(groups, n).T
        drop = (raw.unsqueeze(1) - without).clamp_min(0.0)
        return drop / raw.unsqueeze(1).clamp_min(1e-12)

    def score(self, events: Sequence, text: np.ndarray | None) -> Scores:
        return self.score_matrix(tabular(events, self.spec), text)


def _fit_preprocessing(tab: np.ndarray, text: np.ndarray | None, dims: int) -> Preprocessing:
    scaler = StandardScaler().fit(tab)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    if dims and text is not None:
        pca = PCA(n_components=dims, random_state=0).fit(text)
        pca_scale = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
        pca_mean, components = pca.mean_, pca.components_
    else:
        pca_mean, components, pca_scale = np.zeros(1), np.zeros((0, 1)), np.ones(0)
    return Preprocessing(scaler.mean_, scale, pca_mean, components, pca_scale, np.zeros(2))


def fit_scorer(
    tab: np.ndarray,
    text: np.ndarray | None,
    spec: FeatureSpec,
    calibration_tab: np.ndarray,
    calibration_text: np.ndarray | None,
    epochs: int = 30,
    seed: int = 0,
    device: torch.device = CPU,
) -> AnomalyScorer:
    """Fit preprocessing and the autoencoder on history; calibrate on held-out history."""
    torch.manual_seed(seed)
    prep = _fit_preprocessing(tab, text, spec.text_dims)
    width = len(spec.names)
    # An over-complete code (as the fraud handbook's 15->100->20 net): a compressing bottleneck
    # spends itself on the large, high-variance directions (amount, risk) that anomalies live
    # in, leaving only noise in the error. Measured on the fdh protocol: AP 0.08 -> 0.24.
    net = Autoencoder(width, hidden=max(32, 4 * width), bottleneck=width + 4)
    scorer = AnomalyScorer(spec, prep, net, device)
    x = scorer.design(tab, text).detach()

    scorer.net.train()
    optimiser = torch.optim.Adam(scorer.net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    batch = 256
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch):
            xb = x[order[start : start + batch]]
            loss = ((scorer.net(xb) - xb) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(xb)
        log.debug("epoch=%d loss=%.5f", epoch, total / len(x))
    scorer.net.eval()
    log.info(
        "autoencoder fitted rows=%d features=%d epochs=%d loss=%.4f",
        len(x),
        width,
        epochs,
        total / len(x),
    )

    raw = scorer.score_matrix(calibration_tab, calibration_text).raw
    prep.quantiles = np.quantile(raw, np.linspace(0.0, 1.0, QUANTILES))
    return AnomalyScorer(spec, prep, scorer.net, device)
