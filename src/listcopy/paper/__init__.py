"""The paper "Order by Scale" as one command: its models, its analyses, its figures and numbers.

    settings.py  the paper's model settings (Table 3), its reported numbers and Table 4
    run.py       ``paper_report``: train or take the 2- and 3-layer models, analyse, write
    page.py      the offline HTML page: numbers beside the paper's, Figures 1-4, Table 4
    cli.py       ``listcopy paper [--out DIR] [--model PATH ...] [--grid SWEEP_DIR]``

    >>> from listcopy.paper import paper_report
    >>> paper_report("paper", overrides=["train.max_steps=20000"])
"""

from .run import PaperInfo, paper_analysis, paper_config, paper_report

__all__ = ["PaperInfo", "paper_analysis", "paper_config", "paper_report"]
