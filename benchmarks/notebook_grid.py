"""The seed notebook's experiment grid, run as the notebook runs it: one model after another.

The reference for `listcopy sweep examples/seed_grid.toml`. Same loop as the notebook's
"experiment grid" cell (DataLoader + itertools.cycle, AdamW, accuracy every 100 steps, early stop
at 0.999, at most 20,000 steps), on listcopy's hooked model (TransformerLens 4.x has no
HookedTransformer), under one global generator seeded once, as in the notebook.

    .venv/bin/python benchmarks/notebook_grid.py                  # the four d_model=128 specs
    .venv/bin/python benchmarks/notebook_grid.py --max-steps 500  # a quick look
    .venv/bin/python benchmarks/notebook_grid.py --json out.json
"""

import argparse
import itertools
import json
import time

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from listcopy.config import Config
from listcopy.model import ListCopyTransformer, init_weights
from listcopy.sweep.results import markdown

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--max-steps", type=int, default=20_000)
parser.add_argument("--threads", type=int, default=1, help="torch threads (the reference: 1)")
parser.add_argument("--json", metavar="FILE", help="also write the rows and timings here")
args = parser.parse_args()
torch.set_num_threads(args.threads)

# ---------- constants (the notebook's) ----------
LIST_LEN = 2
SEQ_LEN = LIST_LEN * 2 + 1
N_DIGITS = 100
DIGITS = list(range(N_DIGITS))
SEP = DIGITS[-1] + 1
VOCAB = len(DIGITS) + 1
D_MODEL, N_HEAD, N_LAYER = 8, 1, 3
USE_LN, USE_BIAS, FREEZE_WV, FREEZE_WO = False, False, True, True
WEIGHT_DECAY = 0.01
TRAIN_SPLIT = 0.8
DEV = "cpu"
torch.manual_seed(0)

# ---------- data ----------
all_data = torch.tensor(list(itertools.product(DIGITS, repeat=LIST_LEN)), dtype=torch.int64)
n_data = len(all_data)
all_targets = torch.full((n_data, SEQ_LEN), SEP)
all_targets[:, :LIST_LEN] = all_data
all_targets[:, LIST_LEN + 1:] = all_data
all_inputs = all_targets.clone()
all_inputs[:, LIST_LEN + 1:] = SEP
perm = torch.randperm(n_data)
all_inputs, all_targets = all_inputs[perm], all_targets[perm]
n_train = int(TRAIN_SPLIT * n_data)
train_ds = TensorDataset(all_inputs[:n_train], all_targets[:n_train])
val_ds = TensorDataset(all_inputs[n_train:], all_targets[n_train:])
train_dl = DataLoader(train_ds, min(128, len(train_ds)), shuffle=True, drop_last=True)
val_dl = DataLoader(val_ds, min(256, len(val_ds)), drop_last=False)


# ---------- model: the notebook's make_model, on listcopy's hooked model ----------
def make_model(n_layers=N_LAYER, n_heads=N_HEAD, d_model=D_MODEL, ln=USE_LN, use_bias=USE_BIAS,
               freeze_wv=FREEZE_WV, freeze_wo=FREEZE_WO):
    config = Config().replace(model=dict(n_layers=n_layers, n_heads=n_heads, d_model=d_model,
                                         ln=ln, use_bias=use_bias, freeze_wv=freeze_wv,
                                         freeze_wo=freeze_wo))
    model = ListCopyTransformer(config)
    init_weights(model, torch.default_generator)  # HookedTransformer's init, global generator
    return model.to(DEV)


# ---------- utilities (the notebook's) ----------
def accuracy(m):
    m.eval()
    hits = tots = 0
    with torch.no_grad():
        for inputs, targets in val_dl:
            logits = m(inputs.to(DEV))[:, LIST_LEN + 1:]
            preds = logits.argmax(-1)
            hits += (preds == targets[:, LIST_LEN + 1:].to(DEV)).sum().item()
            tots += preds.numel()
    return hits / tots


def train(m, max_steps=10_000, early_stop_acc=0.999, weight_decay=WEIGHT_DECAY):
    opt = torch.optim.AdamW(m.parameters(), 1e-3, weight_decay=weight_decay)
    ce = torch.nn.CrossEntropyLoss()
    dl = itertools.cycle(train_dl)
    for step in tqdm(range(max_steps), desc="Training", mininterval=2):
        inputs, targets = next(dl)
        logits = m(inputs.to(DEV))[:, LIST_LEN + 1:].reshape(-1, VOCAB)
        loss = ce(logits, targets[:, LIST_LEN + 1:].reshape(-1).to(DEV))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if (step + 1) % 100 == 0:
            acc = accuracy(m)
            if acc >= early_stop_acc:
                print(f"Early stopping at step {step + 1} with accuracy {acc:.2%}")
                return step + 1
    return max_steps


# ---------- experiment grid (the notebook's specs) ----------
specs = [
    {'name': 'd128', 'd_model': 128},
    {'name': 'd128_2layer', 'd_model': 128, 'n_layers': 2},
    {'name': 'd128_2layer', 'd_model': 128, 'n_layers': 2, 'ln': True, 'use_bias': True,
     'freeze_wo': True, 'freeze_wv': True},
    {'name': 'd128_3layer', 'd_model': 128, 'n_layers': 3},
]

rows = []
t_grid = time.perf_counter()
for spec in specs:
    full_spec = {'n_layers': N_LAYER, 'n_heads': N_HEAD, 'd_model': D_MODEL, 'ln': USE_LN,
                 'use_bias': USE_BIAS, 'freeze_wv': FREEZE_WV, 'freeze_wo': FREEZE_WO,
                 'weight_decay': WEIGHT_DECAY}
    full_spec.update(spec)
    print(f"--- Training model: {full_spec['name']} ---")
    t0 = time.perf_counter()
    model = make_model(n_layers=full_spec['n_layers'], n_heads=full_spec['n_heads'],
                       d_model=full_spec['d_model'], ln=full_spec['ln'],
                       use_bias=full_spec['use_bias'], freeze_wv=full_spec['freeze_wv'],
                       freeze_wo=full_spec['freeze_wo'])
    steps = train(model, max_steps=args.max_steps, weight_decay=full_spec['weight_decay'])
    result = full_spec.copy()
    result['val_acc'] = round(accuracy(model), 4)
    result['steps'] = steps
    result['time_s'] = round(time.perf_counter() - t0, 1)
    rows.append(result)
total = time.perf_counter() - t_grid

cols = ['name'] + [c for c in rows[0] if c != 'name']
print(markdown(cols, rows))
print(f"grid: {total:.1f} s ({args.threads} thread{'s' if args.threads > 1 else ''},"
      f" torch {torch.__version__})")
if args.json:
    with open(args.json, "w") as fh:
        json.dump({"rows": rows, "total_s": total, "threads": args.threads,
                   "max_steps": args.max_steps}, fh, indent=1)
