"""The `instant` request: a playlist from one typed sentence.

The sentence is read into a typed plan (`sentence.read_sentence`), shown in the
reply; the plan is answered as a `text` request (prompt, negative prompts,
filters, artist cap) over a pool large enough for the length asked, then cut
to that length or count. Conditions the request also gives as fields
(`filters`, `max_per_artist`) take precedence over the sentence's, field by field.
A plan with conditions but no described sound ranks the tracks that meet them
by how typical they are of that set (similarity to their centroid).
"""

from __future__ import annotations

from pipeline.recommender import text_search
from pipeline.recommender.common import Candidate, Outcome, QueryContext, weighted_centroid
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.index import TrackInfo
from pipeline.recommender.sentence import FIGURE_WORDS, figure_words, read_sentence
from pipeline.schemas.queries import InstantPlan, TextRequest, TrackFilters

CLOSE_ENOUGH_S = 30.0  # a playlist this close to the length asked is done
# Cosine of a prompt (or word) with its nearest tag under the sentence model, below which
# it is not taken as a description of music. Measured: descriptions 0.55-0.98 ("sad songs"
# 0.55, "calm piano" 0.77, "jazz" 0.97), gibberish 0.28-0.44 ("xyzzy" 0.43, "asdf qwerty"
# 0.28), German "ruhige Klaviermusik" 0.29, French "musique calme" 0.58 ("piano" is a word).
RECOGNISED = 0.45


def run(ctx: QueryContext) -> Outcome:
    request = ctx.request
    plan = soften_words(ctx, recognised(ctx, read_sentence(request.sentence)))
    for warning in plan.warnings:
        ctx.warn(warning)
    if not plan.understood:
        ctx.warn(f"understood nothing in {request.sentence!r} (English phrases such as "
                 "'20 minutes of calm piano, nothing before 1990')")  # fmt: skip
        return Outcome(tracks=[], plan=plan)
    sub = _text_context(ctx, plan)
    if plan.prompt:
        found = text_search.ranked_by_text(sub)
    else:
        ctx.warn("no sound described: the tracks that meet the conditions, most typical first")
        found = _most_typical(sub)
    if plan.minutes:
        info = ctx.info(ctx.models(), (c.track_id for c in found))
        found = fit_minutes(ctx, found, info, plan.minutes)
    else:
        found = found[: plan.count or ctx.limit]
    return Outcome(tracks=found, plan=plan)


def recognised(ctx: QueryContext, plan: InstantPlan) -> InstantPlan:
    """The plan without a prompt the sentence model does not take for music (other
    languages, gibberish), and with a warning naming the prompt's words it does not know."""
    if not plan.prompt:
        return plan
    encoder = ctx.text.encoders[max(ctx.text.encoders)]  # the widest vocabulary (MSD + MTT)
    if float(encoder.similarities(plan.prompt).max()) < RECOGNISED:
        warning = (f"{plan.prompt!r} was not recognised as a description of music "
                   "(English words such as 'calm piano' or 'fast drums'); left out")  # fmt: skip
        understood = [u for u in plan.understood if not u.startswith(f"{plan.prompt} -> ")]
        return plan.model_copy(
            update={"prompt": None, "understood": understood, "warnings": [*plan.warnings, warning]}
        )
    unknown = [
        word
        for word in plan.prompt.split()
        if word not in FIGURE_WORDS and float(encoder.similarities(word).max()) < RECOGNISED
    ]
    if not unknown:
        return plan
    warning = f"words not understood (kept in the description): {', '.join(unknown)}"
    return plan.model_copy(update={"warnings": [*plan.warnings, warning]})


def soften_words(ctx: QueryContext, plan: InstantPlan) -> InstantPlan:
    """Tempo and energy words ("calm", "fast") describe the sound; when no track passes
    them, they are dropped from the plan's filters, as in `text`, and only steer the text
    search: "calm" over a library of loud soundtracks gives the calmest of them, not
    nothing. Conditions the sentence states ("between 118 and 135 bpm", "nothing before
    1990") and the request's own filters stay as they are."""
    implied, words = figure_words(ctx.request.sentence)
    if implied is None or plan.filters is None:
        return plan
    read = plan.filters.model_dump(exclude_none=True)
    soft = {f: v for f, v in implied.model_dump(exclude_none=True).items() if read.get(f) == v}
    if not soft or text_search.words_match(ctx, TrackFilters(**soft), words):
        return plan
    rest = {f: v for f, v in read.items() if f not in soft}
    return plan.model_copy(update={"filters": TrackFilters(**rest) if rest else None})


def _text_context(ctx: QueryContext, plan: InstantPlan) -> QueryContext:
    """The plan as a `text` request, sharing the caller's warnings and deadline."""
    request = ctx.request
    given = request.filters.model_dump(exclude_none=True) if request.filters else {}
    read = plan.filters.model_dump(exclude_none=True) if plan.filters else {}
    filters = {**read, **given}
    wanted = plan.count or ctx.limit
    pool = ctx.settings.max_limit if plan.minutes else wanted
    text_request = TextRequest(
        request_id=request.request_id,
        prompt=plan.prompt or "music",  # unused without a prompt: _most_typical ranks
        negative_prompts=plan.negative_prompts,
        models=request.models,
        exclude_track_ids=request.exclude_track_ids,
        max_per_artist=request.max_per_artist or plan.max_per_artist,
        filters=TrackFilters.model_validate(filters) if filters else None,
        limit=pool,
        deadline_ms=request.deadline_ms,
    )
    return QueryContext(
        request=text_request, settings=ctx.settings, library=ctx.library, text=ctx.text,
        seeds=ctx.seeds, deadline=ctx.deadline, started=ctx.started, warnings=ctx.warnings,
        limit=pool,
    )  # fmt: skip


def _most_typical(ctx: QueryContext) -> list[Candidate]:
    indexes = ctx.models()
    index = indexes[0]
    excluded = ctx.excluded()
    members = [t.track_id for t in index.live_info() if t.track_id not in excluded]
    found, vectors = index.vectors(members)
    centre = weighted_centroid(vectors, [1.0] * len(found))
    if centre is None:
        return []
    hits = index.search(centre[None, :], ctx.pool_size(1), excluded)[0]
    ranked = [Candidate(t, s, {index.model: s}) for t, s in hits]
    return finish(ctx, indexes, ranked, request_rules(ctx))


def fit_minutes(
    ctx: QueryContext, ranked: list[Candidate], info: dict[str, TrackInfo], minutes: float
) -> list[Candidate]:
    """Tracks in ranking order until the playlist is `minutes` long: a track that would
    overshoot by more than it helps is passed over for the next ones."""
    target = minutes * 60
    chosen: list[Candidate] = []
    total, unknown = 0.0, 0
    for candidate in ranked:
        if target - total <= CLOSE_ENOUGH_S:
            break
        seconds = info[candidate.track_id].duration if candidate.track_id in info else 0.0
        if seconds <= 0:
            unknown += 1
            continue
        if total + seconds <= target or total + seconds - target < target - total:
            chosen.append(candidate)
            total += seconds
    if unknown:
        ctx.warn(f"{unknown} matching tracks left out: their length is unknown")
    if total < target - CLOSE_ENOUGH_S:
        ctx.warn(f"{total / 60:.1f} of {minutes:g} minutes: no more tracks match")
    return chosen
