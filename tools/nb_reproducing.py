import sys; sys.path.insert(0, "tools")
from nb import notebook
PARAMS = '''
profile = "cpu"
train_missing = True
results_root = "../results"
data_root = None
workers = 2
'''
notebook([
("md", """
# Reproducing

## Two commands

```bash
make book   # creates .venv if missing, installs the pinned stack, runs every notebook, builds _build/html
make test   # creates or updates .venv, runs the tests (a smoke run of every notebook included), builds the book
```

`make book` runs the notebooks at the `cpu` profile (`make book PROFILE=paper` for the paper's protocol)
with papermill. A notebook loads a run whose configuration hash already has a finished record under
`results/`, and trains and evaluates only what is missing, so a second `make book` is fast. The data root is
`$IMALIB_DATA_ROOT`, else `data/` (see `data/README.md`). A single notebook runs with, for instance,

```bash
.venv/bin/python -m imalib.notebooks --only moons --profile cpu
.venv/bin/papermill notebooks/moons.ipynb out.ipynb -p profile smoke -p seeds "[0]"
```

and the command line does the same without notebooks:

```bash
.venv/bin/python -m imalib train --dataset moons --method ima --profile cpu --seed 0
.venv/bin/python -m imalib evaluate --dataset moons --method ima --profile cpu --seed 0
.venv/bin/python -m imalib report --output results
```

## Profiles

| profile | Moons | Fashion-MNIST, SVHN | COVID-19 CT |
|---|---|---|---|
| `paper` | the paper's protocol | 60 epochs, full data, full test set | 100 epochs, batch 32, full data |
| `cpu` | = `paper` | a labelled reduction (see each chapter's captions) | a labelled reduction |
| `smoke` | seconds | seconds | seconds |

The exact numbers of each profile are in `imalib/profiles.py` and are recorded in every run's `config.json`.

## What each run cost here
"""),
("params", PARAMS),
("hide", '''
import json
from pathlib import Path
import pandas as pd
from imalib.book import glue_table, glue_text
rows = []
for path in sorted(Path(results_root).glob("*/*/result.json")):
    r = json.loads(path.read_text())
    rows.append({"dataset": r["dataset"], "norm": r["norm"], "profile": r["profile"], "method": r["label"],
                 "seed": r["seed"], "train min": r["train_seconds"] / 60, "eval min": r["eval_seconds"] / 60,
                 "threads": r["environment"]["torch_threads"], "device": r["environment"]["cuda"] or "cpu"})
frame = pd.DataFrame(rows)
if len(frame):
    summary = frame.groupby(["dataset", "norm", "profile", "method"]).agg(
        runs=("seed", "count"), train_min=("train min", "mean"), eval_min=("eval min", "mean"),
        device=("device", "first"), threads=("threads", "first")).round(2)
    glue_table("r_costs", summary)
else:
    glue_text("r_costs", "no result records yet")
bench = []
for path in sorted(Path(results_root).parent.joinpath("benchmarks", "results").glob("*.json")):
    b = json.loads(path.read_text())
    bench.append({"benchmark": b["name"], "measured": b["summary"], "target": b.get("target", ""),
                  "command": f"`{b['command']}`"})
if bench:
    glue_table("r_bench", pd.DataFrame(bench).set_index("benchmark"))
else:
    glue_text("r_bench", "no benchmark records yet: run `make bench`")
'''),
("md", """
Mean wall time per run (minutes) on the machine recorded in each result; runs that shared the machine with
other work are slower than they need to be:

```{glue:md} r_costs
:format: myst
```
## Speed benchmarks

Each benchmark in `benchmarks/` measures ratios side by side in one process (same model, data, batch size and
machine; medians of repeats) and writes its record to `benchmarks/results/`. For the evaluator, the record also
gives the most that skipping work could save: every test point that survives a noise level must take all 100
steps of both attacks there, so where most points are robust (the Moons models) skipping saves little. Any
speed beyond that bound comes from running all noise levels as one stacked PGD batch, which amortises the
per-step cost of a small model over more rows.

```{glue:md} r_bench
:format: myst
```
"""),
], "notebooks/reproducing.ipynb")
