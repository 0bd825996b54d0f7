"""The report's first screen: which items to recommend more and which less, how sure that is,
what the change would do to the outcome's total, and what could not be estimated. Every
sentence is written from the numbers of the log at hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..estimate.positivity import ONE_ARM_MAX
from .html import column_decimals, escape, format_number, html_table, paragraph

__all__ = ["first_screen_html", "popularity_verdict", "choose_items", "policy_change"]

STATUS_REASONS = {
    "no_treated": "never recommended",
    "no_control": "recommended every time it was a candidate",
    "too_few_rows": "fewer than {min_rows_per_arm} recommended or not-recommended rows",
    "too_few_units": "its rows come from too few units (users, sessions) to cross-fit models "
                     "of its own (per_item)",
    "no_overlap": "the arms' propensities do not meet (or more than {max_clipped:.0%} of rows "
                  "clipped, or more than " + f"{ONE_ARM_MAX:.0%}" + " in a level of a categorical "
                  "confounder that one arm never reaches): the effect would be an extrapolation",
    "poor_overlap": "an arm's effective sample size below {min_ess:g}: estimated, not ranked",
    "constant_outcome": "the outcome never varies within the item",
    "fit_failed": "the models gave no finite estimate",
}


def choose_items(table: pd.DataFrame):
    """(recommend more, recommend less, established): items called by the ranking's
    Benjamini-Hochberg test in each direction; when none is called in a direction, the
    three items ranked highest (lowest) as candidates, with ``established`` False there."""
    ranked = table[table["rank"].notna()].sort_values("rank", kind="stable")
    more = ranked[ranked["bh_positive"].astype(bool)]
    less = ranked[ranked["bh_negative"].astype(bool)].iloc[::-1]
    established = (len(more) > 0, len(less) > 0)
    if not len(more):
        more = ranked.head(3)
    if not len(less):
        less = ranked.tail(3).iloc[::-1]
    return more, less, established


def policy_change(more: pd.DataFrame, less: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Change in the outcome's total if each item to recommend more were recommended in all
    its not-recommended candidate rows (``n_control`` more recommendations) and each item to
    recommend less were no longer recommended (``n_treated`` fewer). Valued at the shrunk
    effects (the items were chosen on their estimates: raw values would carry the winner's
    curse); se from the posterior sds with the items taken as independent."""
    added = more["n_control"].to_numpy(float)
    removed = less["n_treated"].to_numpy(float)
    change = float(added @ more["posterior_mean"].to_numpy(float)
                   - removed @ less["posterior_mean"].to_numpy(float))
    se = float(np.sqrt((added**2) @ more["posterior_sd"].to_numpy(float) ** 2
                       + (removed**2) @ less["posterior_sd"].to_numpy(float) ** 2))
    z = stats.norm.ppf(1 - alpha / 2)
    return dict(change=change, se=se, low=change - z * se, high=change + z * se,
                added=float(added.sum()), removed=float(removed.sum()))


def popularity_verdict(table: pd.DataFrame, popularity: str, k: int, alpha: float = 0.05):
    """Spearman correlation of the popularity column with the shrunk effect over the ranked
    items, its interval (Fisher z, Bonett-Wright se), the naive / causal top-k overlap and a
    sentence that says what these numbers say, or None with fewer than 4 items."""
    ranked = table[table["rank"].notna()]
    if popularity is None or len(ranked) < 4:
        return None
    score = ranked["posterior_mean"] if "posterior_mean" in ranked else ranked["ate"]
    rho = float(stats.spearmanr(ranked[popularity], score).statistic)
    half = stats.norm.ppf(1 - alpha / 2) * np.sqrt((1 + rho**2 / 2) / max(len(ranked) - 3, 1))
    low, high = np.tanh(np.arctanh(np.clip(rho, -0.999999, 0.999999)) + np.array([-half, half]))
    low, high = min(low, rho), max(high, rho)  # a perfect correlation has no spread
    k = min(k, len(ranked))
    naive = set(ranked.nlargest(k, popularity).index)
    causal = set(ranked.nsmallest(k, "rank").index)
    shared = len(naive & causal)
    numbers = (f"Spearman correlation of the naive score ({popularity}) with the shrunk effect "
               f"{format_number(rho)} [{format_number(low)}, {format_number(high)}] over "
               f"{len(ranked)} items; {shared} of the naive top {k} are in the causal top {k}")
    if low > 0:
        lead = ("Popular items tend to have larger effects here, but popularity is not the "
                "effect" if shared < k else "Here popularity picks the same top items as "
                "the causal effect")
    elif high < 0:
        lead = "Popular items have smaller effects here: ranking by popularity misleads"
    else:
        lead = "Popularity does not predict the causal effect here"
    return dict(rho=rho, low=float(low), high=float(high), shared=shared, k=k,
                text=f"{lead} ({numbers}).")


def _names(labels) -> str:
    names = [f"'{v}'" for v in labels]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _signed(value, decimals) -> str:
    text = format_number(value, decimals)
    return ("+" + text) if text and float(value) > 0 else text


def _count(value) -> str:
    """A row count, blank where the table does not have it."""
    return "" if pd.isna(value) else format_number(int(value))


def _evidence(frame, labels, verdict, decimals, top_k) -> pd.DataFrame:
    interval = lambda lo, hi: [f"[{_signed(a, decimals)}, {_signed(b, decimals)}]"
                               for a, b in zip(frame[lo], frame[hi])]
    out = pd.DataFrame({
        "item": labels.loc[frame.index].to_numpy(),
        "effect (shrunk)": [_signed(v, decimals) for v in frame["posterior_mean"]],
        "95% interval": interval("posterior_low", "posterior_high"),
        "raw effect": [_signed(v, decimals) for v in frame["ate"]],
        "raw 95% CI": interval("ci_low", "ci_high"),
        "rows": [_count(v) for v in frame["n"]],
        "recommended / not": [f"{_count(a)} / {_count(b)}"
                              for a, b in zip(frame["n_treated"], frame["n_control"])],
        "overlap": verdict.loc[frame.index].to_numpy(),
        "status": frame["status"].to_numpy() if "status" in frame else "ok",
        "P(effect > 0)": frame["prob_positive"].to_numpy(float),
        f"P(in top {top_k})": frame["prob_top_k"].to_numpy(float),
    })
    if "share_outside_support" in frame:
        out["overlap"] = [f"{v} ({s:.0%} outside)" for v, s in
                          zip(out["overlap"], frame["share_outside_support"])]
    return out


def first_screen_html(table, labels, verdict, *, popularity, outcome, settings, top_k,
                      fdr, total_outcome=None) -> str:
    """The answer box. ``settings``: the estimator's alpha, min_rows_per_arm, min_ess and
    max_clipped (those it has); ``total_outcome``: the outcome's total in the log, or None."""
    alpha = settings.get("alpha", 0.05)
    out = ""
    if "rank" not in table.columns or not table["rank"].notna().any():
        out += paragraph("No item has a usable estimate, so nothing can be recommended.", "warn")
        return f'<div class="answer">{out}{_not_estimated(table, settings)}</div>'
    more, less, (more_ok, less_ok) = choose_items(table)
    ranked = table[table["rank"].notna()]
    decimals = column_decimals(pd.concat([ranked["posterior_mean"], ranked["ate"]]))
    p_decimals = column_decimals(pd.concat([ranked["prob_positive"], ranked["prob_top_k"]]))
    p_columns = {"P(effect > 0)": p_decimals, f"P(in top {top_k})": p_decimals}
    fdr_text = f"a {fdr:.0%} false discovery rate"
    headline = []
    for frame, established, word, sign in ((more, more_ok, "more", "positive"),
                                           (less, less_ok, "less", "negative")):
        names = _names(labels.loc[frame.index])
        if established:
            text = (f"Recommend {word}: {len(frame)} item(s), {names} (effect shown to be "
                    f"{sign} at {fdr_text}).")
            weak = frame.index[verdict.loc[frame.index] == "limited"]
            if len(weak):
                text += (f" Of these, {_names(labels.loc[weak])} rest(s) on limited overlap: "
                         "read with care.")
        else:
            text = (f"No item is shown to {'help' if word == 'more' else 'hurt'} at "
                    f"{fdr_text}; the {'best' if word == 'more' else 'lowest'} ranked are "
                    f"{names}.")
        headline.append(text)
    out += "".join(f'<p class="headline">{escape(h)}</p>' for h in headline)
    for title, frame, established in (("Recommend more", more, more_ok),
                                      ("Recommend less", less, less_ok)):
        caption = (f"{title}: {len(frame)} item(s)" if established else
                   f"{title}: candidates only, not established at {fdr_text}")
        out += html_table(_evidence(frame, labels, verdict, decimals, top_k), caption=caption,
                          decimals=p_columns)
    out += "<h3>" + escape(f"What that change would do to total {outcome}") + "</h3>"
    out += _change_text(more if more_ok else more.iloc[:0], less if less_ok else less.iloc[:0],
                        alpha, outcome, total_outcome)
    out += "<h3>What could not be estimated</h3>" + _not_estimated(table, settings)
    limited = int((verdict == "limited").sum())
    if limited:
        out += paragraph(f"{limited} of the {len(ranked)} ranked items have limited overlap "
                         "(see the overlap section): read their estimates with care.", "warn")
    verdict_pop = popularity_verdict(table, popularity, top_k, alpha)
    if verdict_pop is not None:
        out += paragraph(verdict_pop["text"])
    out += ('<p class="note">Every item: <a href="#items">the full table</a> (sortable, '
            'searchable), also as <a href="items.csv">items.csv</a> next to this report.</p>')
    return f'<div class="answer">{out}</div>'


def _change_text(more, less, alpha, outcome, total_outcome) -> str:
    if not len(more) and not len(less):
        return paragraph("No item is established in either direction, so no change of the "
                         "recommendations is supported by this log.")
    change = policy_change(more, less, alpha)
    if not np.isfinite(change["change"]):
        return paragraph("The effects table has no row counts per arm, so the change in the "
                         "total that these recommendations would make cannot be computed.")
    policy = []
    if len(more):
        policy.append(f"recommending the {len(more)} item(s) to recommend more in all their "
                      f"{format_number(change['added'])} candidate rows where they were not")
    if len(less):
        policy.append(f"no longer recommending the {len(less)} item(s) to recommend less in "
                      f"their {format_number(change['removed'])} recommended rows")
    share = ""
    if total_outcome:
        share = (f", against {format_number(total_outcome)} in the log "
                 f"({_signed(100 * change['change'] / total_outcome, None)}%)")
    decimals = column_decimals([change["change"], change["low"], change["high"]])
    text = (f"Policy change: {' and '.join(policy)}. Expected change in total {outcome}: "
            f"{_signed(change['change'], decimals)} [{_signed(change['low'], decimals)}, "
            f"{_signed(change['high'], decimals)}] ({1 - alpha:.0%} interval){share}.")
    assumption = ("Assumes each item's average effect applies to the rows that change (no "
                  "interference between items or users; rows not recommended respond as the "
                  "average candidate row does) and that items' errors are independent; valued "
                  "at shrunk effects, which correct for choosing items on their estimates.")
    return f'<p class="headline">{escape(text)}</p>' + paragraph(assumption, "note")


def _not_estimated(table, settings) -> str:
    if "status" not in table.columns:
        return paragraph("Every item has an estimate.")
    counts = table["status"].value_counts()
    missing = counts.drop("ok", errors="ignore")
    if not len(missing):
        return paragraph(f"All {len(table)} items were estimated (status 'ok').")
    fill = dict(min_rows_per_arm="the minimum number of", min_ess="min_ess", max_clipped=0.3)
    fill.update({k: v for k, v in settings.items() if v is not None})
    frame = pd.DataFrame({"status": missing.index, "items": missing.to_numpy(),
                          "why": [_reason(s, fill) for s in missing.index]})
    return (paragraph(f"{int(missing.sum())} of {len(table)} items have no ranked estimate:")
            + html_table(frame))


def _reason(status, fill) -> str:
    template = STATUS_REASONS.get(status, status)
    try:
        return template.format(**fill)
    except (ValueError, KeyError):  # a placeholder without a number: say it without one
        return template.split("{")[0].strip()
