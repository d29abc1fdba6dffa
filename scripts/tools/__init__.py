"""The repository's tools, not part of the installed package: the fault-injection suite (``faultsuite``,
``scripts/faultcheck.py``), the image-reader fuzzer (``fuzz``), the GPU check (``gpucheck``,
``scripts/gpu_check.sh``) and the zoo builder (``zoo_build``, ``scripts/build_zoo.py``). Each finds the
repository from its own path; the scripts and the tests import them with ``scripts/`` on ``sys.path``."""
