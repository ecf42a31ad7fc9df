"""Load benchmarks for tokenstile, run by hand (see ``bench/README.md``).

Entry points: ``bench/load.py`` (one server per store mode) and ``bench/hot_path.py``
(tokenstile side by side with a stateless peer and the seed example). The modules:
``connection`` (a minimal HTTP/1.1 client), ``scenarios`` (what a virtual user does),
``driver`` (running a timed phase), ``wrk`` (the same phase driven by wrk), ``servers``
(the processes under test), ``profiling`` (py-spy) and ``machine`` (what ran it).
"""
