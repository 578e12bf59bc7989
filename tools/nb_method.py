import sys; sys.path.insert(0, "tools")
from nb import notebook
PARAMS = '''
profile = "cpu"          # smoke | cpu | paper
train_missing = True     # False: only load finished runs (the book build in CI)
results_root = "../results"
data_root = None
workers = 2
seed = 0
'''
notebook([
("md", """
# The method: BPGD, Algorithm 1 and Algorithm 2

IMA needs, for every correctly classified training sample $x$ with label $y$, a noisy copy $x_n$ that sits
on the model's decision boundary, and an estimate $\\mathcal{E}(x)$ of the sample's margin. Three
algorithms of the paper provide them; `imalib` implements each as a small function or class.
"""),
("params", PARAMS),
("code", """
from imalib.params import check_notebook_params
check_notebook_params(dict(profile=profile, train_missing=train_missing, results_root=results_root,
                           data_root=data_root, workers=workers, seed=seed))
import torch
from imalib.book import glue_figure, glue_text
from imalib.data.moons import load_moons
from imalib.experiments import run_many
from imalib.figures import plot_bpgd
import matplotlib.pyplot as plt
from imalib.profiles import table_configs
"""),
("md", """
## BPGD (Algorithm 3)

BPGD runs ordinary PGD inside the ball $\\|x'-x\\|_p \\le \\varepsilon$ with $\\varepsilon=\\mathcal{E}(x)$, the sample's
current margin estimate, using $N_{PGD}=20$ steps of size $\\eta = \\alpha\\varepsilon/N_{PGD}$ with $\\alpha=4$, and
classifies every iterate. If no iterate leaves class $y$ (the paper's *case-0*), BPGD returns nothing and
the sample is left out of the noisy-sample loss. Otherwise (*case-1*) it takes the last correctly
classified iterate $x_{n1}$ and the first misclassified one $x_{n2}$, which are adjacent in the sequence, and
bisects the segment between them $N_{binary}=10$ times: the midpoint of the final bracket is $x_n$, within
$\\|x_{n2}-x_{n1}\\|/2^{11}$ of the boundary. `imalib.bpgd` does this for a whole batch at once, with a
per-sample $\\varepsilon$, and stops iterating a sample once it has crossed (later iterates cannot change
$x_{n1}$ or $x_{n2}$).

The figure below runs `imalib.bpgd`'s steps on a real model: the `ce` Moons model of this book's runs at the
{glue:md}`bpgd_profile` profile (seed 0), on a test point whose PGD path crosses the boundary. Left: the PGD iterates
inside the $\\varepsilon$-square; right: the bisection brackets, coloured from the first to the last.
"""),
("hide", """
config = table_configs("moons", "linf", profile, seed=seed, methods=["ce"], data_params={"noise": 0.1})[0]
(run,) = run_many([config], results_root=results_root, workers=1, train_missing=train_missing)
test = load_moons(config.n_train, 2000, config.n_test, noise=0.1, seed=config.seed).test
x, y = test.inputs(), test.y
eps = 0.25
from imalib.attacks import bpgd
result = bpgd(run.model, x, y, eps, norm="linf", clip=None, generator=torch.Generator().manual_seed(0))
correct = run.model(x).argmax(1) == y
candidates = (result.found & correct).nonzero().squeeze(1)
pick = int(candidates[len(candidates) // 2])
fig = plot_bpgd(run.model, x[pick:pick + 1], y[pick:pick + 1], eps)
glue_figure("bpgd_figure", fig)
glue_text("bpgd_found_share", float(result.found[correct].float().mean()), ".3f")
glue_text("bpgd_eps", eps, "g")
glue_text("bpgd_profile", profile)
"""),
("md", """
```{glue:figure} bpgd_figure
:name: fig-bpgd

BPGD on one Moons test point (model: `ce`, profile as in the run record). At
$\\varepsilon$ = {glue:md}`bpgd_eps`, BPGD found a boundary point for {glue:md}`bpgd_found_share` of the
correctly classified test points of this model.
```

## Algorithm 1: the loss

For a batch $X$ of size $B$, the model first classifies it; $X_0$ are the wrongly and $X_1$ the correctly
classified samples. BPGD turns $X_1$ into boundary points $X_n$ using the stored margins
$\\mathcal{E}(X_1)$. With summed cross-entropies $L_0$ on $X_0$, $L_1$ on $X_1$ and $L_2$ on the boundary
points that were found,

$$ L = \\big((1-\\beta)(L_0+L_1) + \\beta L_2\\big)/B, \\qquad \\beta = 0.5 .$$

Note that $B$ is the full batch size, so a batch in which few boundary points are found puts little weight
on the noisy samples. `imalib.methods.IMA.batch_loss` computes exactly this.

## Algorithm 2: the margin update

After every epoch, each training sample's margin estimate changes by one of three rules: a wrongly
classified sample restarts at $\\Delta_\\varepsilon$; a correct sample for which BPGD found a boundary point
takes that point's distance $\\|x-x_n\\|_p$; a correct sample without one grows by $\\Delta_\\varepsilon$. All
estimates are then clipped into $[\\Delta_\\varepsilon, \\varepsilon_{max}]$, and $\\Delta_\\varepsilon =
\\varepsilon_{max}/\\text{epochs}$. The margins are stored per sample, indexed by the sample's position in
the training set (`imalib.MarginStore`), and saved with every checkpoint.

`imalib` offers the update in two modes:

- `paper`: a separate pass over the training set after each epoch, with a fresh BPGD, exactly as
  Algorithm 2 is written;
- `fused`: the BPGD results that Algorithm 1 already computed during the epoch are reused, which saves
  the second pass. The results are slightly older (the model moves during the epoch), and wrongly
  classified samples are judged by the classification at the time of their batch.

The Moons chapter compares the two modes on the same seeds.

## The baselines

| label | what it trains on | loss |
|---|---|---|
| `ce` | clean data | cross-entropy |
| `rand`$\\varepsilon$ | clean data and uniform noise in $[-\\varepsilon, \\varepsilon]$ | $\\tfrac12$ clean CE + $\\tfrac12$ noisy CE (the paper gives no loss; this is our assumption) |
| `adv`$\\varepsilon$ | clean data and 20-step PGD at $\\varepsilon$ ($\\eta=4\\varepsilon/20$, random start) | eq. (2): $\\tfrac12$ clean CE + $\\tfrac12$ adversarial CE |
| `TRADES` | clean data and a KL attack (start $x+0.001\\,\\mathcal N(0,1)$, 20 steps of $4\\varepsilon/20$) | CE + $\\beta$ KL, $\\beta=6$ (the paper does not state $\\beta$; 6 is TRADES' own CIFAR-10 choice) |
| `MMA` | AN-PGD (20 steps, soft-margin loss) and a bisection along the attack direction, per-sample margins | $\\tfrac23$ hinged MMA loss + $\\tfrac13$ clean CE, hinge at $d_{max}=\\varepsilon_{max}$, as in its official code |
| `DDN` (L2 only) | DDN attack (20 steps, $\\gamma=0.05$), perturbation renormalised to $\\le\\varepsilon_{max}$ | CE on the adversarial samples |

Attacks during training run with the model in evaluation mode and leave it as they found it; none of them
writes gradients into the model's parameters.
"""),
], "notebooks/method.ipynb")
