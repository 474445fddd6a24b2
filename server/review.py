"""Expert review pages: officers score the samples devices upload, and see whether they agree.

`/review` shows one sample at a time, the oldest waiting for this rater (rules in
`server.review_store`), blind to the model's score unless `[review] show_model_score`, and never
with another rater's score. The page works with the keyboard alone (static/review.js); without
script it is a plain form. A skipped sample is remembered in the login session only, so it comes
back in a later session rather than being lost from the queue.

`/review/agreement` turns the ratings of finished samples into the figures of `server.agreement`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from server import agreement, review_store
from server.auth import current_user, require_role
from server.config import ReviewConfig
from server.request_db import get_db

bp = Blueprint("review", __name__)

SKIPPED_KEY = "review_skipped"
SKIPPED_MAX = 200
PLOT_W, PLOT_H, PLOT_PAD = 640.0, 320.0, 40.0


def _config() -> ReviewConfig:
    return current_app.config["MGS_CONFIG"].review


def _username() -> str:
    user = current_user()
    assert user is not None
    return str(user["username"])


def _skipped() -> list[int]:
    return [int(i) for i in session.get(SKIPPED_KEY, []) if isinstance(i, int)]


@bp.route("/review")
@require_role("officer")
def queue() -> str:
    config = _config()
    db = get_db()
    username = _username()
    skipped = _skipped()
    current = review_store.next_sample(db, username, config.raters_per_sample, skipped)
    eyes: list[dict[str, Any]] = []
    if current is not None and current["image"] and current["image"]["kind"] == "face":
        eyes = review_store.device_eyes(current["meta"], current["image"]["width"], current["image"]["height"])
    # Positions only: the device's per-eye scores reach the page only when the model's score may.
    markers = [{"x": e["x"], "y": e["y"]} for e in eyes]
    eye_scores = [e["score"] for e in eyes] if config.show_model_score else []
    return render_template(
        "review.html",
        title="Review",
        sample=current,
        markers=markers,
        eye_scores=eye_scores,
        progress=review_store.progress(db, username, config.raters_per_sample),
        skipped=len(skipped),
        config=config,
    )


@bp.route("/review/samples/<int:sample_id>/image")
@require_role("officer")
def image(sample_id: int) -> Response:
    mime, data = review_store.review_image(get_db(), sample_id)
    response = make_response(data)
    response.headers["Content-Type"] = mime
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@bp.route("/review/samples/<int:sample_id>/rating", methods=["POST"])
@require_role("officer")
def rate(sample_id: int) -> Response:
    db = get_db()
    shown = review_store.sample(db, sample_id)
    size = shown["image"] or {"width": 0, "height": 0}
    try:
        rating = review_store.parse_rating(request.form, size["width"], size["height"])
        review_store.save_rating(db, sample_id, _username(), rating)
    except MgsError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Sample {sample_id} rated.", "info")
    return redirect(url_for("review.queue"))


@bp.route("/review/samples/<int:sample_id>/skip", methods=["POST"])
@require_role("officer")
def skip(sample_id: int) -> Response:
    skipped = [i for i in _skipped() if i != sample_id] + [sample_id]
    session[SKIPPED_KEY] = skipped[-SKIPPED_MAX:]
    flash(f"Sample {sample_id} skipped; it stays in the queue for later.", "info")
    return redirect(url_for("review.queue"))


@bp.route("/review/skipped/clear", methods=["POST"])
@require_role("officer")
def clear_skipped() -> Response:
    session.pop(SKIPPED_KEY, None)
    return redirect(url_for("review.queue"))


@bp.route("/review/agreement")
@require_role("officer")
def agreement_page() -> str:
    config = _config()
    db = get_db()
    versions = review_store.model_versions(db, config.raters_per_sample)
    # "v:<version>" picks one version ("v:" = the shipped models); anything else means all of them.
    asked = request.args.get("version", "")
    version = asked[2:] if asked.startswith("v:") and asked[2:] in versions else None
    data = review_store.agreement_data(db, config.raters_per_sample, version)
    chosen = [r for r in request.args.getlist("rater") if r in data.raters] or data.raters
    scales = []
    ot = agreement.select(data.ot, chosen)
    for key, label, ratings in (
        ("ot", "Orbital tightening 0–9", ot),
        ("mgs", "MGS 0/1/2", agreement.select(data.mgs, chosen)),
    ):
        table = agreement.all_raters_table(ratings, chosen)
        scales.append(
            {
                "key": key,
                "label": label,
                "all": agreement.icc_figure(table),
                "pairs": agreement.pairwise(ratings, chosen),
                "raters": agreement.per_rater(ratings, chosen, data.model if key == "ot" else {}),
            }
        )
    model = agreement.model_vs_consensus(ot, data.model)
    by_version = [
        (v, agreement.model_vs_consensus({i: r for i, r in ot.items() if data.version[i] == v}, data.model))
        for v in sorted(set(data.version.values()))
    ]
    return render_template(
        "review_agreement.html",
        title="Rater agreement",
        versions=versions,
        version=version,
        version_label=version_label,
        raters=data.raters,
        chosen=chosen,
        samples=len(data.ot),
        scales=scales,
        model=model,
        by_version=by_version,
        plot=bland_altman_plot(model),
        min_n=agreement.MIN_N,
        model_fig=agreement.Figure,
        target=config.raters_per_sample,
    )


def version_label(version: str) -> str:
    return version or review_store.SHIPPED_LABEL


def bland_altman_plot(ba: agreement.BlandAltman) -> dict[str, Any] | None:
    """SVG geometry (PLOT_W x PLOT_H) of a Bland–Altman plot: x = mean of model and consensus
    (0-9), y = model - consensus (symmetric range covering the points and the limits)."""
    if ba.bias is None or ba.lower is None or ba.upper is None:
        return None
    span = max([1.0, abs(ba.lower), abs(ba.upper), *(abs(d) for d in ba.diffs)]) * 1.1
    inner_w, inner_h = PLOT_W - 2 * PLOT_PAD, PLOT_H - 2 * PLOT_PAD

    def x(v: float) -> float:
        return round(PLOT_PAD + v / 9 * inner_w, 1)

    def y(v: float) -> float:
        return round(PLOT_PAD + (span - v) / (2 * span) * inner_h, 1)

    lines = [
        {"label": f"bias {ba.bias:+.2f}", "y": y(ba.bias), "kind": "bias"},
        {"label": f"+1.96 SD {ba.upper:+.2f}", "y": y(ba.upper), "kind": "loa"},
        {"label": f"−1.96 SD {ba.lower:+.2f}", "y": y(ba.lower), "kind": "loa"},
    ]
    return {
        "w": PLOT_W,
        "h": PLOT_H,
        "left": PLOT_PAD,
        "right": PLOT_W - PLOT_PAD,
        "top": PLOT_PAD,
        "bottom": PLOT_H - PLOT_PAD,
        "zero": y(0.0),
        "span": span,
        "points": [{"x": x(m), "y": y(d)} for m, d in zip(ba.means, ba.diffs)],
        "lines": lines,
        "xticks": [{"x": x(v), "label": str(v)} for v in range(0, 10)],
    }
