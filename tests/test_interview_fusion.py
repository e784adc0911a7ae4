"""The project's own demo: the sample interview's face is a smiling photo under synthetic motion.

Its face head says happy on every line whatever is said; the fused labels must follow the voice
and the words (issue 11).
"""

from pathlib import Path

import numpy as np
import pytest

from multimodal_ser import AnalysisOptions, Analyzer

pytestmark = pytest.mark.slow

INTERVIEW = Path(__file__).parent.parent / "sample_media" / "interview.mp4"


@pytest.fixture(scope="module")
def interview():
    return Analyzer(AnalysisOptions(language="en")).analyze(INTERVIEW).segments


@pytest.mark.models
def test_the_photo_is_flagged_static_and_counts_for_little(interview):
    spoken = interview[interview["speech"] & interview["face_present"]]
    assert len(spoken) >= 5
    assert spoken["face_static"].all()
    assert (spoken["face_quality"] <= 0.05 + 1e-9).all()


@pytest.mark.models
def test_a_still_face_never_overturns_voice_and_words_that_agree(interview):
    both = interview[interview["audio_present"] & interview["text_present"]]
    agreeing = both[both["audio_label"] == both["text_label"]]
    assert (agreeing["label"] == agreeing["audio_label"]).all()
    # and it never decides a segment on its own when voice or words are present
    spoken = interview[interview["audio_present"] | interview["text_present"]]
    overturned = spoken[(spoken["label"] == spoken["face_label"])
                        & (spoken["label"] != spoken["audio_label"]) & (spoken["label"] != spoken["text_label"])]
    assert overturned.empty, overturned[["text", "audio_label", "text_label", "face_label", "label"]]


@pytest.mark.models
def test_where_voice_and_words_disagree_the_segment_says_so(interview):
    spoken = interview[interview["speech"]]
    assert spoken["agreement"].between(0, 1).all() and spoken["runner_up"].notna().all()
    assert np.all(spoken["runner_up"] != spoken["label"])
    disagree = (spoken["audio_label"] != spoken["text_label"]).to_numpy()
    assert disagree.any() and (~disagree).any()  # the sample has both kinds of line
    assert spoken["conflict"].to_numpy()[disagree].all() and not spoken["conflict"].to_numpy()[~disagree].any()
    assert spoken["agreement"].to_numpy()[disagree].max() < spoken["agreement"].to_numpy()[~disagree].min()
