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
# The equilibrium argument (section 2.3)

The paper justifies putting noisy samples *on* the decision boundary with an equilibrium argument. This
page restates it in our words and checks each step numerically.

## The argument

Take three classes $c_1, c_2, c_3$ with softmax outputs $P_1, P_2, P_3$ and pairwise boundaries
$B_{ij}$, on which $P_i = P_j$. The expected cross-entropy of IMA's noisy samples (the $L_2$ term of
Algorithm 1) is

$$ E = \\sum_{k=1}^{3} \\mathbf E_{X_n\\in c_k}\\big[-\\log P_k(X_n)\\big]. \\tag{3}$$

Because IMA places every noisy sample of class $k$ on a boundary of class $k$, each term splits over the
two boundaries the class touches (eqs. 4-6). If the noisy samples of $c_i$ and of $c_j$ that land on
$B_{ij}$ have *the same spatial distribution*, the two expectations over $B_{ij}$ can be merged:

$$ E = \\sum_{i<j} \\mathbf E_{X_n\\in B_{ij}}\\big[-\\log P_i(X_n) - \\log P_j(X_n)\\big]
     = \\sum_{i<j} \\mathbf E_{X_n\\in B_{ij}}\\big[-\\log (P_i P_j)\\big]. \\tag{7}$$

By the inequality of arithmetic and geometric means, $P_iP_j \\le ((P_i+P_j)/2)^2$, so

$$ -\\log(P_iP_j) \\;\\ge\\; -\\log\\Big(\\frac{P_i+P_j}{2}\\Big)^2 , \\tag{8}$$

with equality exactly when $P_i = P_j$. Moving the boundary away from the noisy samples makes one of
the two probabilities smaller than the other and increases $E$; so, once the clean loss is minimised and
the noisy samples sit on the boundary, small moves of the boundary cannot lower the loss: an
equilibrium. The paper also notes the assumption can fail; then the boundary is set by where the samples
happen to be.

## Numerical checks
"""),
("params", PARAMS),
("code", """
import matplotlib.pyplot as plt
import numpy as np
from imalib.book import glue_figure, glue_text
from imalib import equilibrium as eq

rng = np.random.default_rng(0)
shifts = np.linspace(-0.5, 0.5, 2001)
same = rng.normal(0.0, 0.05, 4000)                 # both classes' noisy samples: one distribution around 0
losses_same = eq.scan(same[:2000], same[2000:], shifts)
best_same = shifts[losses_same.argmin()]
p_i, p_j = eq.probabilities_at(best_same, same)
point_mass = eq.scan(np.zeros(1), np.zeros(1), shifts)
shifted_i, shifted_j = rng.normal(-0.1, 0.05, 2000), rng.normal(0.15, 0.05, 2000)   # unequal distributions
losses_diff = eq.scan(shifted_i, shifted_j, shifts)
best_diff = shifts[losses_diff.argmin()]
p = rng.uniform(1e-6, 1.0, (2, 100000))
p = p / np.maximum(p.sum(0), 1.0)                   # any P_i, P_j with P_i + P_j <= 1
gaps = eq.am_gm_gap(p[0], p[1])

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(shifts, losses_same, label="same distribution for both classes")
ax.plot(shifts, losses_diff, label="class i around -0.10, class j around +0.15")
ax.axvline(best_same, color="C0", ls=":")
ax.axvline(best_diff, color="C1", ls=":")
ax.set_xlabel("position of the decision boundary")
ax.set_ylabel("expected noisy-sample loss E")
ax.legend(fontsize=8)
fig.tight_layout()
glue_figure("eq_figure", fig)
glue_text("eq_best_same", best_same, "+.4f")
glue_text("eq_pdiff_mean", float(np.abs(p_i - p_j).mean()), ".3f")
glue_text("eq_point_mass_min", point_mass.min(), ".6f")
glue_text("eq_two_log_two", 2 * np.log(2), ".6f")
glue_text("eq_point_mass_argmin", shifts[point_mass.argmin()], "+.4f")
glue_text("eq_best_diff", best_diff, "+.4f")
glue_text("eq_min_gap", gaps.min(), ".2e")
glue_text("eq_n_pairs", gaps.size, ",")
"""),
("md", """
```{glue:figure} eq_figure
:name: fig-equilibrium

The expected loss $E$ of noisy samples as a function of where a 1-D two-class logistic model puts its
boundary. Dotted lines: the minima.
```

1. **A single pair of noisy samples at the same point.** With one class-$i$ and one class-$j$ sample at
   $x=0$, $E$ is smallest with the boundary at {glue:md}`eq_point_mass_argmin`, where
   $E$ = {glue:md}`eq_point_mass_min`; the bound (8) is $2\\log 2$ = {glue:md}`eq_two_log_two`.
2. **The same distribution for both classes** (4,000 samples around 0): the minimising boundary is at
   {glue:md}`eq_best_same`, essentially through the middle of the samples. There the model's
   probabilities on the samples differ on average by only {glue:md}`eq_pdiff_mean`; the remaining
   difference comes from the samples' spread around the boundary, not from the boundary's position.
3. **Different distributions** (class $i$ around $-0.10$, class $j$ around $+0.15$): the minimiser moves to
   {glue:md}`eq_best_diff`, between the two groups, i.e. wherever the samples happen to be. This is the
   case the paper flags: without the equal-distribution assumption, the equilibrium is set by the data.
4. **Inequality (8)** holds on {glue:md}`eq_n_pairs` random pairs $(P_i, P_j)$ with $P_i+P_j\\le1$: the
   smallest value of the left side minus the right side is {glue:md}`eq_min_gap` (never negative).

These checks confirm the algebra. They do not show that training reaches the equilibrium: that is an
empirical question, which the Moons chapter looks at through the margins IMA estimates.
"""),
], "notebooks/equilibrium.ipynb")
