"""Generate text with an FP4 model.

    python examples/generate.py                                   # embedded tiny model, quantized on the fly
    python examples/generate.py --model <dir> --prompt "..." --max-tokens 100

Same options as `python -m mlx_marlin.generate`: streams tokens, then prints prompt and
generation tokens-per-second and peak memory.
"""

import sys

from mlx_marlin.generate import main

if __name__ == "__main__":
    sys.exit(main())
