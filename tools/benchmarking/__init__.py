"""The benchmark tool in parts (``tools/benchmark.py`` is its command line): :mod:`.measure` (time, memory,
FLOPs), :mod:`.runner` (a bundle loaded through the engine and run on aligned pairs) and :mod:`.report` (CSV,
table, figure)."""
