"""The comparative benchmark behind ``bertfast bench``: providers, workloads, parity rule, timing, report."""
