"""The bundles' research studies, run by ``python tools/study.py <name>``: ``amir_routing`` (what AMIR's routing
does per degradation family), ``diffusion_iqt_seams`` (the borders where a volume's pieces meet, three ways of
sampling), ``flat_cascades`` (every cascade of an unrolled network against the reference), ``flat_speed`` (seconds
per slice and per volume) and ``flat_results`` (flat's results table, one evaluation command per cell)."""
