"""One self-contained HTML page about a training run: what it learnt, how, and on which images it struggled.

    imas-report RUN_DIR [--out RUN_DIR/report.html] [--device cpu|cuda|auto] [--gallery 8]
        [--opt data.root=...]

The page (every plot and image embedded as a base64 PNG; no script, no other file) shows:

- the mIoU over epochs of every evaluated model: the reported one (the iMAS / mean-teacher teacher, else the
  student) and the ones evaluated beside it (the student next to a teacher, CPS's second network);
- the training losses, and the easiness, confident-pixel ratio and CutMix rate: each epoch's mean, drawn over
  the means over logging windows that the loop logs;
- the per-class IoU of the reported model at the last and at the best evaluation;
- for each per-image quantity the run records (iMAS and the mean teacher: the hardness), its distribution
  in each epoch, and galleries of the unlabeled images of highest and of lowest value in the last epoch of
  its history (for the hardness: the hardest and the easiest; an image drawn more than once in that epoch
  counts with its mean), each with the teacher's pseudo-label (pixels below the method's confidence
  threshold white, as training ignores them) and the student's prediction, both computed on the whole
  image by the models of latest.pth with the config's eval settings.

A section the run has nothing for (SupOnly has no unlabeled data and no per-image history, FixMatch no
teacher, a folder copied without checkpoints no predictions) is replaced by one line saying why.

Everything is read through imas.rundir.read_run, from the files docs/run-directory.md describes:
metrics.jsonl (the evaluations, the other models under "others"), train_scalars.jsonl (the training scalars
at full precision; for a run written before it, its train.log), and each <name>.csv per-image history.

The plots need matplotlib (pip install -e ".[report]"). Exit status 0, or 2 with one sentence on stderr for
bad input (no such folder, not a run directory, no evaluation yet, a bad --opt).
"""

from imas.report.command import main

__all__ = ["main"]
