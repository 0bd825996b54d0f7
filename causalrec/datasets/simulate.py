"""A recommendation-log simulator with known per-item causal effects.

The logging policy recommends items to users it expects to click (confounded exposure):
exposure and the untreated outcome both rise with user activity and with a match between the
topic of the user's profile text and the item's topic. Rows per item are heavy-tailed (Zipf).
Potential outcomes are simulated, so every row carries its true effect and each item's true
ATE is the average of those over its rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SimulatedLog", "simulate_log", "load_sample"]

TOPICS = {
    "sports": ["football", "marathon training", "cycling", "the gym", "tennis", "hiking trails",
               "basketball", "swimming", "yoga", "rock climbing"],
    "cooking": ["baking bread", "vegan recipes", "italian food", "spicy curries", "barbecue",
                "pastry", "fermentation", "street food", "coffee brewing", "meal prep"],
    "technology": ["programming", "smartphones", "gaming PCs", "machine learning", "gadgets",
                   "open source", "robotics", "home automation", "drones", "cyber security"],
    "fashion": ["sneakers", "vintage clothing", "streetwear", "handbags", "designer jackets",
                "sustainable fashion", "watches", "denim", "summer dresses", "jewellery"],
    "travel": ["backpacking", "city breaks", "beach resorts", "road trips", "camping",
               "train journeys", "island hopping", "ski holidays", "museums abroad", "cruises"],
    "music": ["jazz", "vinyl records", "guitar", "live concerts", "classical piano", "hip hop",
              "music festivals", "synthesizers", "indie bands", "opera"],
    "gardening": ["houseplants", "vegetable patches", "roses", "composting", "bonsai",
                  "succulents", "garden design", "orchids", "herb gardens", "lawn care"],
    "finance": ["index funds", "budgeting", "crypto", "real estate", "saving for retirement",
                "stock picking", "personal loans", "frugal living", "dividends", "tax tips"],
}
FILLERS = ["Always looking for something new.", "Weekend person.", "Night owl.",
           "Shops mostly on the phone.", "Loves a good deal.", "Reads reviews first.",
           "Buys gifts for friends.", "Prefers quality over quantity.", ""]
GROUPS = ["A", "B", "C", "D"]
DEVICES = ["mobile", "desktop", "tablet"]


@dataclass
class SimulatedLog:
    """A simulated log with its ground truth.

    Attributes
    ----------
    data : the log, one row per opportunity.
    truth : one row per item: ``item, true_ate, n, n_treated, n_control, topic, planted``.
    row_truth : per row of ``data``: true ``propensity``, expected outcomes ``mu0``, ``mu1``
        without / with the recommendation, and the row's ``effect`` (``mu1 - mu0``).
    group_truth : one row per item and user group: ``item, group, true_ate, n``.
    roles : keyword arguments naming the columns for ``estimate_item_effects``.
    params : the simulation settings.
    item_features : one row per simulated item (``item, topic, provider, quality``): what is
        known about items before their effects are seen (``quality`` is a numeric score that
        moves the effect only when ``effect_features > 0``).
    """

    data: pd.DataFrame
    truth: pd.DataFrame
    group_truth: pd.DataFrame
    roles: dict
    params: dict = field(default_factory=dict)
    row_truth: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _profile_text(rng, topic: str, noise_topic: str | None) -> str:
    words = list(rng.choice(TOPICS[topic], size=3, replace=False))
    if noise_topic is not None:
        words[2] = str(rng.choice(TOPICS[noise_topic]))
    return f"Into {words[0]}, {words[1]} and {words[2]}. {rng.choice(FILLERS)}".strip()


def simulate_log(n_items: int = 200, n_users: int = 2000, n_rows: int = 40_000, *,
                 outcome: str = "binary", numeric_confounding: float = 1.0,
                 text_confounding: float = 1.0, effect_scale: float = 1.0,
                 popularity_skew: float = 1.0, n_topics: int = 5, n_groups: int = 2,
                 effect_disparity: float = 0.0, exposure_disparity: float = 0.0,
                 disparity_share: float = 0.3, n_providers: int = 8,
                 effect_heterogeneity: float | None = None, effect_features: float = 0.0,
                 nonlinear: bool = False, seed: int = 0) -> SimulatedLog:
    """Simulate a confounded recommendation log with known per-item effects.

    Parameters
    ----------
    outcome : "binary" (column ``clicked``) or "continuous" (column ``watch_minutes``).
    numeric_confounding, text_confounding : strength of confounding through the numeric
        columns (activity, hour, tenure) and through the topic of ``user_text``. Set one to 0
        to make the other the only route.
    effect_scale : multiplies every item's effect (0 gives no effect anywhere).
    popularity_skew : Zipf exponent of rows per item (larger: heavier head, thinner tail).
    effect_disparity : on a share ``disparity_share`` of items (``truth.planted``), the effect
        for users outside the first group is multiplied by ``1 - effect_disparity``.
    exposure_disparity : logit decrease of exposure for users outside the first group.
    effect_heterogeneity : None (default) keeps the effect on the logit scale above. A number
        h >= 0 makes the effect additive on the outcome scale instead: row i of item k gets
        ``tau_k + h * s * w_k'z_i``, with tau_k the item's effect at its base rate, s the mean
        |tau_k| over items, z_i the standardised user activity, hour, tenure and device
        (mobile), and w_k (norm ~1) a shared direction mixed with an item's own (drawn from a
        separate random stream, so the exposure and the users are those of the default). So h
        is the within-item spread of the effect in units of the typical item effect; h = 0
        gives a constant effect per item (no heterogeneity; binary outcomes clip at 0 and 1).
    effect_features : how much of the item effects the item features explain. At 1 each
        item's logit-scale effect gains ``0.3 quality + topic shift`` (shifts ~ N(0, 0.3^2)),
        about as much variance as the feature-free part; 0 (default) leaves the effects, and
        the whole log, as without the option.
    nonlinear : exposure and outcome get item-specific thresholds on activity, squared terms,
        a periodic hour effect and a topic-match x activity interaction (see
        ``_nonlinear_terms``), so no GLM in the confounders is right for either. Off (the
        default) draws exactly the linear log of earlier versions.
    """
    if outcome not in {"binary", "continuous"}:
        raise ValueError(f"outcome must be 'binary' or 'continuous', got {outcome!r}")
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be in [1, {len(TOPICS)}]")
    if not 1 <= n_groups <= len(GROUPS):
        raise ValueError(f"n_groups must be in [1, {len(GROUPS)}]")
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)[:n_topics]

    # users: topic (only visible through the profile text), activity, tenure, group, device
    u_topic = rng.integers(n_topics, size=n_users)
    noisy = rng.random(n_users) < 0.2
    noise_topic = rng.integers(n_topics, size=n_users)
    u_text = np.array([_profile_text(rng, topics[t], topics[o] if z else None)
                       for t, o, z in zip(u_topic, noise_topic, noisy)], dtype=object)
    u_activity = rng.normal(size=n_users)
    u_tenure = rng.exponential(2.0, size=n_users)
    u_group = rng.choice(n_groups, size=n_users, p=_group_shares(n_groups))
    u_device = rng.choice(len(DEVICES), size=n_users, p=[0.6, 0.3, 0.1])

    # items: topic, exposure and click base rates, effect on the logit scale, provider
    i_topic = rng.integers(n_topics, size=n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** popularity_skew
    i_expose = rng.normal(-1.0, 0.6, size=n_items) + 0.4 * np.log(popularity / popularity.max())
    i_base = rng.normal(-2.0, 0.5, size=n_items)
    i_effect = effect_scale * np.where(rng.random(n_items) < 0.25, 0.0,
                                       rng.gamma(2.0, 0.25, size=n_items))
    i_effect -= effect_scale * 0.15 * (rng.random(n_items) < 0.1)
    planted = rng.random(n_items) < disparity_share if effect_disparity else np.zeros(n_items, bool)
    i_provider = rng.integers(n_providers, size=n_items)
    # item features from a separate stream, so the main stream (and every default log) is unchanged
    feature_rng = np.random.default_rng([seed, 1])
    i_quality = feature_rng.normal(size=n_items)
    topic_shift = feature_rng.normal(0.0, 0.3, size=n_topics)
    if effect_features:
        i_effect = i_effect + effect_scale * effect_features * (0.3 * i_quality + topic_shift[i_topic])
    i_text = np.array([f"{topics[t].title()} item: {', '.join(rng.choice(TOPICS[topics[t]], 2, replace=False))}"
                       f" (ref {k})" for k, t in enumerate(i_topic)], dtype=object)

    # opportunities
    item = rng.choice(n_items, size=n_rows, p=popularity / popularity.sum())
    user = rng.integers(n_users, size=n_rows)
    hour = rng.integers(24, size=n_rows)
    activity, tenure, group = u_activity[user], u_tenure[user], u_group[user]
    match = (u_topic[user] == i_topic[item]).astype(float)
    hour_z = (hour - 11.5) / 6.9
    tenure_z = (tenure - 2.0) / 2.0

    expose_logit = (i_expose[item]
                    + numeric_confounding * (0.9 * activity + 0.3 * hour_z - 0.3 * tenure_z)
                    + text_confounding * 1.6 * (match - 1.0 / n_topics)
                    - exposure_disparity * (group > 0))
    if nonlinear:
        expose_extra, base_extra = _nonlinear_terms(seed, n_items, item, activity, hour_z,
                                                    tenure_z, match, numeric_confounding,
                                                    text_confounding)
        expose_logit = expose_logit + expose_extra
    propensity = _sigmoid(np.clip(expose_logit, -3.5, 3.5))
    treated = (rng.random(n_rows) < propensity).astype(np.int64)

    base = (i_base[item]
            + numeric_confounding * (0.8 * activity + 0.2 * hour_z + 0.3 * tenure_z)
            + text_confounding * 1.4 * (match - 1.0 / n_topics))
    if nonlinear:
        base = base + base_extra
    effect = i_effect[item] * (1.0 + 0.2 * activity)
    effect = np.where(planted[item] & (group > 0), effect * (1.0 - effect_disparity), effect)
    if effect_heterogeneity is not None:
        z = np.column_stack([activity, hour_z, tenure_z, (u_device[user] == 0) / 0.49 - 1.22])
        y0, y1 = _additive_outcomes(outcome, base, i_base, i_effect, item, z,
                                    float(effect_heterogeneity), planted[item] & (group > 0),
                                    effect_disparity, np.random.default_rng([seed, 17]))
        y = (rng.random(n_rows) < np.where(treated == 1, y1, y0)).astype(np.int64)
        outcome_col = "clicked"
        if outcome == "continuous":
            y = np.where(treated == 1, y1, y0) + rng.normal(0.0, 3.0, size=n_rows)
            outcome_col = "watch_minutes"
    elif outcome == "binary":
        y0, y1 = _sigmoid(base), _sigmoid(base + effect)
        y = (rng.random(n_rows) < np.where(treated == 1, y1, y0)).astype(np.int64)
        outcome_col = "clicked"
    else:
        y0, y1 = 10.0 + 4.0 * base, 10.0 + 4.0 * (base + effect)
        y = np.where(treated == 1, y1, y0) + rng.normal(0.0, 3.0, size=n_rows)
        outcome_col = "watch_minutes"
    row_effect = y1 - y0

    data = pd.DataFrame({
        "user_id": user, "item_id": item,
        "recommended": treated, outcome_col: y,
        "user_activity": activity, "hour": hour, "tenure": tenure,
        "device": np.array(DEVICES, dtype=object)[u_device[user]],
        "user_group": np.array(GROUPS, dtype=object)[group],
        "user_text": u_text[user], "item_text": i_text[item],
        "item_provider": np.array([f"provider_{p}" for p in range(n_providers)], dtype=object)[i_provider[item]],
        "propensity": propensity,
    })
    truth = _truth(data.assign(_effect=row_effect), ["item_id"])
    truth = truth.assign(topic=np.array(topics, dtype=object)[i_topic[truth["item"]]],
                         planted=planted[truth["item"]])
    group_truth = _truth(data.assign(_effect=row_effect), ["item_id", "user_group"])
    roles = _roles(outcome_col)
    params = dict(n_items=n_items, n_users=n_users, n_rows=n_rows, outcome=outcome,
                  numeric_confounding=numeric_confounding, text_confounding=text_confounding,
                  effect_scale=effect_scale, popularity_skew=popularity_skew, n_topics=n_topics,
                  n_groups=n_groups, effect_disparity=effect_disparity,
                  exposure_disparity=exposure_disparity, disparity_share=disparity_share,
                  effect_features=effect_features, nonlinear=nonlinear, seed=seed)
    if effect_heterogeneity is not None:
        params["effect_heterogeneity"] = effect_heterogeneity
    row_truth = pd.DataFrame({"propensity": propensity, "mu0": y0, "mu1": y1, "effect": row_effect})
    item_features = pd.DataFrame({
        "item": np.arange(n_items), "topic": np.array(topics, dtype=object)[i_topic],
        "provider": np.array([f"provider_{p}" for p in i_provider], dtype=object),
        "quality": i_quality})
    return SimulatedLog(data, truth, group_truth, roles, params, row_truth, item_features)


def _additive_outcomes(outcome, base, i_base, i_effect, item, z, h, damped, disparity, rng):
    """Expected outcomes without / with the recommendation when the effect is additive on the
    outcome scale and varies linearly with the user features z (see ``effect_heterogeneity``)."""
    if outcome == "binary":
        y0 = _sigmoid(base)
        tau = _sigmoid(i_base + i_effect) - _sigmoid(i_base)  # item effect at its base rate
    else:
        y0, tau = 10.0 + 4.0 * base, 4.0 * i_effect
    shared = rng.normal(size=z.shape[1])
    own = rng.normal(size=(len(tau), z.shape[1]))
    w = (0.6 * shared / np.linalg.norm(shared)
         + 0.8 * own / np.linalg.norm(own, axis=1, keepdims=True))
    scale = np.abs(tau).mean()
    effect = tau[item] + h * scale * np.einsum("ij,ij->i", z, w[item])
    effect = np.where(damped, effect * (1.0 - disparity), effect)
    y1 = np.clip(y0 + effect, 0.0, 1.0) if outcome == "binary" else y0 + effect
    return y0, y1


def _nonlinear_terms(seed, n_items, item, activity, hour_z, tenure_z, match, numeric, text):
    """Non-linear additions to the exposure and outcome logits. Their item parameters come
    from a generator of their own, so the linear draws (and the default log) stay as they are.
    A threshold on |activity| and a periodic hour effect enter both logits (item-specific
    strength), plus a step at an item-specific activity threshold (item-specific assignment)
    and a topic-match x activity interaction: a linear fit leaves confounding behind in both
    models."""
    rng = np.random.default_rng([seed, 16])
    threshold = rng.normal(0.0, 0.4, size=n_items)
    curve_e, curve_y = rng.normal(0.0, 0.5, size=(2, n_items))
    # even functions of symmetric features: a linear fit in them recovers nothing
    far = (np.abs(activity) > 1.0) - 0.317
    wave = np.cos(3.0 * hour_z)
    step = (activity > threshold[item]) - 0.5
    expose = (numeric * ((1.5 + curve_e[item]) * far + 0.8 * step + 0.6 * wave
                         + 0.3 * (tenure_z ** 2 - 1.0))
              + text * 0.8 * match * activity)
    base = (numeric * ((1.2 + curve_y[item]) * far + 0.6 * step + 0.5 * wave
                       - 0.3 * (tenure_z ** 2 - 1.0))
            + text * 0.6 * match * activity)
    return expose, base


def _roles(outcome_col: str) -> dict:
    return dict(item="item_id", treatment="recommended", outcome=outcome_col,
                confounders=["user_activity", "hour", "tenure"],
                categorical=["device", "user_group"], text=["user_text"])


def _group_shares(n_groups: int) -> np.ndarray:
    shares = np.linspace(1.5, 1.0, n_groups)
    return shares / shares.sum()


def _truth(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per-segment true ATE: the mean of the rows' individual effects."""
    out = (frame.groupby(keys, sort=True)
           .agg(true_ate=("_effect", "mean"), n=("_effect", "size"),
                n_treated=("recommended", "sum"))
           .reset_index())
    out["n_control"] = out["n"] - out["n_treated"]
    return out.rename(columns={"item_id": "item", "user_group": "group"})


SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data"
SAMPLE_SETTINGS = dict(n_items=120, n_users=1500, n_rows=30_000, popularity_skew=0.7,
                       effect_disparity=0.6, exposure_disparity=0.5, seed=2026)


def load_sample() -> SimulatedLog:
    """The bundled sample log (``data/sample_log.parquet``) with its truth.

    Falls back to regenerating it (same seed) when the files are not next to the package.
    """
    log_path, truth_path = SAMPLE_DIR / "sample_log.parquet", SAMPLE_DIR / "sample_truth.csv"
    if not (log_path.exists() and truth_path.exists()):
        return simulate_log(**SAMPLE_SETTINGS)
    group_path = SAMPLE_DIR / "sample_group_truth.csv"
    group_truth = pd.read_csv(group_path) if group_path.exists() else None
    return SimulatedLog(pd.read_parquet(log_path), pd.read_csv(truth_path), group_truth,
                        _roles("clicked"), dict(SAMPLE_SETTINGS))


def write_sample(directory: Path = SAMPLE_DIR) -> None:
    """Regenerate the bundled sample files."""
    from ..utils.io import write_files

    sim = simulate_log(**SAMPLE_SETTINGS)
    write_files(directory, {"sample_log.parquet": sim.data.to_parquet(index=False),
                            "sample_truth.csv": sim.truth.to_csv(index=False),
                            "sample_group_truth.csv": sim.group_truth.to_csv(index=False)})
