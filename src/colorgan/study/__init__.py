"""Human study: a two-alternative forced choice between a real photo and a colourisation.

``colorgan study prepare`` picks ground-truth colour photos and renders every model's
colourisation of them into a study folder (PNG images with opaque names plus ``study.sqlite``);
``colorgan study serve`` runs a local web page where participants answer one trial per screen
("which photo is the real one?" or "which looks more natural?"); ``colorgan study results``
turns the stored answers into fooling rates / preferences with Wilson 95% confidence intervals
and exports every answer as CSV.

Modules (none imported here, so ``import colorgan.study`` stays light):

* :mod:`colorgan.study.db`: the SQLite schema, trial planning and answer recording;
* :mod:`colorgan.study.prepare`: building a study folder from photos and models;
* :mod:`colorgan.study.scoring`: Wilson intervals, per-model summaries, CSV export;
* :mod:`colorgan.web.study`: the FastAPI router, app and page (needs ``colorgan[web]``);
* :mod:`colorgan.study.cli`: the ``colorgan study`` subcommand.
"""

from __future__ import annotations

__all__: list[str] = []
