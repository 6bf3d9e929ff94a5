"""What `charnn info` says about a checkpoint: the model, its data, how it was trained, and how
its validation loss went, as lines of text (the CLI prints them)."""

from __future__ import annotations

from charnn import data, evaluate, reports, schedule
from charnn.checkpoint import Checkpoint

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values) -> str:
    """One block character per value, low to high (a lower loss is a lower bar)."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return BARS[0] * len(values)
    return "".join(BARS[round((v - lo) / (hi - lo) * (len(BARS) - 1))] for v in values)


def printable(chars: str) -> str:
    """The vocabulary with control and space characters made visible (\\n, \\t, ...)."""
    return repr(chars)[1:-1]


def describe(path: str, ckpt: Checkpoint) -> list[str]:
    """The lines of `charnn info`, from a loaded (so validated, see header.py) checkpoint."""
    h, mc, tc = ckpt.header, ckpt.model_config, ckpt.train_config
    n_params = sum(p.size for p in ckpt.params.values())
    corpus = h["corpus"]
    per_epoch = data.windows_per_epoch(corpus["train_chars"], tc.batch_size, tc.seq_length)
    limits = [f"{tc.steps} steps" if tc.steps else "", f"{tc.epochs:g} epochs" if tc.epochs else "",
              f"budget {schedule.format_duration(tc.time_budget)}" if tc.time_budget else ""]
    warmup = f", warm-up {tc.warmup_steps}" if tc.warmup_steps else ""
    extras = "".join(f"; {name} {value}" for name, value in (("patience", tc.patience), ("sample every", tc.sample_every),
                                                            ("keep every", tc.keep_every)) if value)
    scaled = f", learning rate x{h['lr_scale']:g}" if h["lr_scale"] != 1 else ""
    scored = data.pieces(corpus["val_chars"], tc.val_chars).predicted if corpus["val_chars"] >= 2 else 0
    subset = f" on {scored:,} validation characters" if scored < corpus["val_chars"] - 1 else ""
    lines = [
        f"checkpoint  {path}",
        f"model       {mc.model}, {mc.num_layers} layer(s) of {mc.hidden_size}, {n_params:,} parameters, {tc.dtype}, "
        f"dropout {mc.dropout:g}",
        f"vocabulary  {mc.vocab_size} characters: {printable(ckpt.vocab.chars)}",
        f"corpus      {printable(corpus['path'])}: {corpus['chars']:,} characters ({corpus['train_chars']:,} train, "
        f"{corpus['val_chars']:,} validation), sha256 {corpus['sha256'][:12]}",
        f"training    {tc.optimizer} {tc.learning_rate:g} ({tc.lr_schedule}{warmup}), grad clip {tc.grad_clip:g}, "
        f"B {tc.batch_size} x T {tc.seq_length}, eval every {tc.eval_every}{subset}, seed {tc.random_seed}; "
        f"limit {', '.join(x for x in limits if x) or 'none'}{extras}",
        f"progress    step {h['step']:,} ({h['step'] / per_epoch:.2f} epochs), training time "
        f"{schedule.format_duration(h['elapsed_seconds'])}, rollbacks {h['rollbacks']}{scaled}; "
        f"workers {h['workers']}",
    ]
    parent = h["parent"]
    if parent:
        added = f"added {len(parent['added'])} character(s): {printable(parent['added'])}" if parent["added"] else "no characters added"
        lines.append(f"parent      {printable(parent['path'])} (step {parent['step']:,}, trained on "
                     f"{printable(parent['corpus'])}); {added}")
    if h["best_val_loss"] is not None:
        lines.append(f"validation  best {h['best_val_loss']:.3f} nats/char ({evaluate.bits(h['best_val_loss']):.3f} bits) "
                     f"at step {h['best_step']:,}; last {h['history']['val_loss'][-1]:.3f} at step "
                     f"{h['history']['step'][-1]:,}")
    else:
        lines.append("validation  not evaluated yet")
    b = h["baselines"]
    if b is not None:
        on, fit = reports.coverage(b, corpus["train_chars"], corpus["val_chars"])
        lines.append(f"baselines   unigram {b['unigram_bits']:.3f} bits/char, {b['ngram_order']}-gram "
                     f"{b['ngram_bits']:.3f} bits/char (on {on}, fitted on {fit})")
    history = h["history"]
    if history["val_loss"]:
        lines.append(f"curve       {sparkline(history['val_loss'])}  val loss at steps {history['step'][0]:,}.."
                     f"{history['step'][-1]:,}: {history['val_loss'][0]:.3f} -> {history['val_loss'][-1]:.3f} "
                     f"(lowest {min(history['val_loss']):.3f})")
    return lines
