"""Fault injection: checks that bad input, crashes and resource exhaustion end as one-line errors.

``fuzz``: mutated image files against the image reader (``fuzz.fuzz_reader``).
"""
