"""The runs test_parallel.py trains in one process and parallel_job.py on 2 ranks: tiny models,
dropout 0.2 (so the masks' independence of N is tested), 50 steps, an evaluation and a snapshot at
step 25 (where the resume checks start) and at 50."""

from charnn.config import ModelConfig, TrainConfig


def configs() -> dict[str, tuple[ModelConfig, TrainConfig]]:
    def run(model, dtype="float64"):
        return (ModelConfig(model=model, hidden_size=8, num_layers=2, dropout=0.2),
                TrainConfig(seq_length=8, batch_size=4, steps=50, eval_every=25, keep_every=25, dtype=dtype,
                            learning_rate=1e-2, val_chars=400))
    return {"rnn": run("rnn"), "lstm": run("lstm"), "gru": run("gru"), "lstm32": run("lstm", "float32")}
