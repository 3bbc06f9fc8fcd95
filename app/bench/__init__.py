"""Performance and quality benchmarks behind `pulsemind bench WHAT`, each printing ratios
measured in one run (never timed assertions in tests):

    pulsemind bench consult   # TTFT and tokens/s through the app vs straight to vLLM
    pulsemind bench intake    # intake time and bytes sent vs the naive full-resolution PNG
    pulsemind bench deid      # identifier recall/precision on a generated bilingual corpus
"""
