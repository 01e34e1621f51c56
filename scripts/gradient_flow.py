#!/usr/bin/env python
"""How strongly the input at each timestep reaches the loss: the README's gradient-flow figure alone.

    python scripts/gradient_flow.py     # the four runs at T = 392, then the figure (README: the time)

The part of scripts/why_lstm.py that draws docs/images/gradient_flow.png, at
one sequence length (--length, default 392): the same runs, in the same
folders (--log-dir/T<T>-<cell>, default logs/why_lstm), so a run that either
script finished is read back here, not trained again, and a run trained here
is one why_lstm.py will not train again. It writes gradient_flow.png and the
TensorBoard curves (--log-dir/gradient_flow), never why_lstm.png or the table.
What it measures, and how, is lstm_mnist/gradient_flow.py.
"""

from __future__ import annotations

import sys
import time

import why_lstm  # scripts/why_lstm.py, beside this file (which also puts the checkout on the path)


def main(argv=None) -> int:
    arguments = why_lstm.parse_arguments(argv, description=__doc__, one_length=True)
    started = time.time()
    from lstm_mnist.errors import OneLineError

    try:
        results = why_lstm.train_every_run(arguments)
    except OneLineError as error:
        return why_lstm.stopped(error)
    flow = why_lstm.gradient_flow(arguments, results)
    picture = arguments.output_dir / "gradient_flow.png"
    why_lstm.draw_gradient_flow(arguments, flow, picture)
    why_lstm.write_gradient_flow(arguments, flow)
    print(f"wrote {picture} in {(time.time() - started) / 60:.1f} minutes "
          f"(tensorboard --logdir {arguments.log_dir / 'gradient_flow'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
