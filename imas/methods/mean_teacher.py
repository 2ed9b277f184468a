"""Mean teacher (Tarvainen and Valpola, 2017) as segmentation runs it today: an EMA teacher's confident
pseudo-labels (confidence >= tau) supervise the student on a strong view and a CutMix view of each
unlabeled image.

It is iMAS's step with every instance-specific part off (its config section, `mean_teacher`, defaults to
weighting none, adaptive none, cutmix fixed with p = 0.5, pairing random), so the two differ in exactly
those parts, and any of them can be turned back on to measure it alone. The hardness is still measured,
and logged, but drives nothing.
"""

from __future__ import annotations

from imas.methods.imas import IMAS


class MeanTeacher(IMAS):
    section = "mean_teacher"
