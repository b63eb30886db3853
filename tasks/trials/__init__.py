"""One trial of the study as a recipe, in plain typed Python (no Ray).

- `grid`: the cells of the study grid (`TrialCell`, `expand_grid`) and their volume controls.
- `inputs`: what trials read (`TrialInputs`, shipped once per stage), `TrialSettings`, `MixKey`.
- `families`: one module per classifier family behind one interface, and their registry.
- `recipe`: one cell end to end: mix, fit, thresholds on val, scores, checkpoint, results row.
- `agreement`: the `filtered` arm's agreement filter.

`orchestrator.trials_tune` runs `recipe.run_trial` once per cell on Ray Tune.
"""
