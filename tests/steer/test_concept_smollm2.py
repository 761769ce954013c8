"""On SmolLM2: an "ocean" direction from 20 contrast pairs raises the concept score of generations on unrelated
prompts at a moderate strength, while perplexity (under the unsteered model) stays within a stated bound."""
import pytest

from actlab.steer import extract
from actlab.steer.evaluate import KeywordScorer, completion_perplexity

TOPICS = ["my holiday", "the weather", "my new job", "a good book", "dinner tonight", "the city", "my friend",
          "the weekend", "music", "the garden", "a long day", "my family", "the news", "a film", "school",
          "the morning", "a journey", "the market", "my hobby", "the evening"]
OCEAN = ["ocean", "sea", "wave", "beach", "water", "fish", "ship", "sail", "boat", "coast", "tide", "island", "marine",
         "shore", "swim"]
PROMPTS = ["Tell me about your weekend.", "What should I cook tonight?", "Describe your favourite room.",
           "Write a sentence about cars."]
PPL_BOUND = 4.0  # steered perplexity <= 4x the unsteered generations' perplexity (measured: ~2.5x at 0.45)


@pytest.mark.real
def test_concept_direction_steers_smollm2(smollm2):
    m = smollm2
    pos = [f"Talking about {t}: the ocean waves, the sea, the beach and the salty water." for t in TOPICS]
    neg = [f"Talking about {t}: the rooms, the desk, the papers and the quiet office." for t in TOPICS]
    d = extract(m, pos, neg, "blocks.5.resid_post", position="mean")["blocks.5.resid_post"]
    score = KeywordScorer(OCEAN)
    plain = m.generate(PROMPTS, max_new_tokens=16, chat=True)
    with m.intervene(d.to_interventions(0.45, scale="resid")):  # 0.45 x the median residual norm at the site
        steered = m.generate(PROMPTS, max_new_tokens=16, chat=True)
    p_plain = completion_perplexity(m, PROMPTS, plain, chat=True).ppl
    p_steer = completion_perplexity(m, PROMPTS, steered, chat=True).ppl
    assert score(steered) >= score(plain) + 0.5, (plain, steered)
    assert p_steer <= PPL_BOUND * p_plain, (p_plain, p_steer, steered)


@pytest.mark.real
def test_minilm_concept_scorer():
    from actlab.steer.evaluate import EmbeddingScorer

    sc = EmbeddingScorer("the ocean, the sea and waves on the beach")
    on, off = sc.per_text(["Waves crash on the sandy beach as the tide comes in.",
                           "The quarterly tax form is due on Monday."])
    assert on > off + 0.2 and -1 <= off <= on <= 1
    assert abs(sc(["Waves crash on the sandy beach as the tide comes in."]) - on) < 1e-5
