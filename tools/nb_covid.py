import sys; sys.path.insert(0, "tools")
from nb import notebook
from nb_images import PARAMS, SETUP, section
notebook([
("md", """
# COVID-19 CT (Table 6, Figures 9 and 10, Appendix B)

The SARS-CoV-2 CT-scan dataset of Soares et al. (2020): 1252 COVID and 1230 non-COVID PNG slices (some public
copies hold 1229 non-COVID images; the loader accepts that with a warning). Each image is converted to
grayscale and resized to 224×224. The split is the paper's: per class 200 test and 30 validation images and
the rest for training, drawn once with a fixed seed from the sorted file names and saved to `split.json` in
the data folder, so every run uses the same images. The network is ResNet-18 with every batch normalisation
replaced by instance normalisation, one input channel and two outputs (non-COVID 0, COVID 1). The paper trains
100 epochs with batch 32 and Adam; its `ce` model uses AdamW with weight decay 0.01.

Two byte-identical image pairs exist in the public copies (Covid (128)/(129) and (134)/(135)); a random split
can put one copy in training and the other in the test set, as the paper's random split could. We keep the
paper's split rule and note it here.

**To reproduce:** put the folders `COVID/` and `non-COVID/` in `<data root>/sars_cov2_ct/` and run
`python -m imalib.notebooks --only covid --profile paper` (a GPU job: ResNet-18 at 224×224 runs about 17 images
per second on this project's 2-core machine).
"""),
("params", PARAMS),
("hide", SETUP + '''
absent = data_status("covid", data_root, data_params)
glue_text("covid_data", "present" if absent is None else f"absent: {absent}")
'''),
("md", """
Data in the data root: {glue:md}`covid_data`.
"""),
*section("covid", "linf", "Table 6: L-inf"),
("hide", '''
from imalib.noise import white_noise_error_rate
from imalib.data import load_splits
import matplotlib.pyplot as plt
from imalib.book import glue_figure
from imalib import report
runs = section_linf["runs"]
ce = [r for r in runs if r.config.label == "ce"]
if ce and absent is None and all(r.has_weights for r in runs):
    splits = load_splits("covid", root=data_root, n_train=ce[0].config.n_train, n_test=ce[0].config.n_test,
                         seed=ce[0].config.seed, params=dict(ce[0].config.data_params))
    rate = white_noise_error_rate(ce[0].model, splits.test.inputs(), splits.test.y, level=0.05, repeats=10)
    glue_text("covid_white", f"{rate:.4f} (ours, 10 noise draws per test image) against the paper's 0.0275")
    shown = [r for r in runs if r.config.label in ("ima", "mma", "adv0.1", "ce")]
    x, y = splits.test.inputs()[:1], splits.test.y[:1]
    fig = report.plot_noisy_examples(shown, x, y, [0.0, 0.05, 0.1, 0.2, 0.3])
else:
    glue_text("covid_white", "not measured: no `ce` record on real data yet (the paper reports 0.0275)")
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, "needs the real CT images", ha="center")
glue_figure("covid_examples", fig)
'''),
("md", """
## Figure 10 and the white-noise experiment (Appendix B)

```{glue:figure} covid_examples
:name: fig-covid-examples

A clean test image and its 100-PGD noisy versions at several noise levels, with each model's prediction.
```

**White noise.** The share of test images that uniform white noise in $[-0.05, 0.05]$ per pixel makes the
`ce` model misclassify: {glue:md}`covid_white`.
"""),
], "notebooks/covid.ipynb")
