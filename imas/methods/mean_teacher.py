"""Mean teacher (Tarvainen and Valpola, 2017) as segmentation runs it today: an EMA teacher's confident
pseudo-labels (confidence >= tau) supervise the student on a strong view and a CutMix view of each
unlabeled image.

It is iMAS's step with every instance-specific part off (its config section, `mean_teacher`, defaults to
weighting none, adaptive none, cutmix fixed with p = 0.5, pairing random), so the two differ in exactly
those parts, and any of them can be turned back on to measure it alone. The hardness is still measured,
and logged, but drives nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from imas.methods.imas import IMAS, Adaptation, CutMixTrigger, Pairing, TeacherStudentSettings, Weighting


@dataclass
class MeanTeacherSettings(TeacherStudentSettings):
    """Mean teacher (train.method mean_teacher): iMAS's step with every instance-specific part off (no loss
    weighting, the plain strong view, CutMix with p = 0.5 and random pairs); each can be turned back on."""

    weighting: Weighting = Weighting.none
    adaptive: Adaptation = Adaptation.none
    cutmix: CutMixTrigger = CutMixTrigger.fixed
    pairing: Pairing = Pairing.random


class MeanTeacher(IMAS):
    Settings = MeanTeacherSettings
